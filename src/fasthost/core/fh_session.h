/* fh_session.h -- sessions: init, start, stop, reset, fork, and what the
 * captures ask of the calling thread's stack (abandon an entry, the kind on
 * top, the depth). The caller serialises these and the readers.
 */
#ifndef FASTHOST_SESSION_H
#define FASTHOST_SESSION_H

#include "fh_transitions.h"
#include "fh_test_api.h"

/* ---- control (caller serialises these and the readers) ------------------ */

static void fh_atfork_prepare(void) { pthread_mutex_lock(&fh_rt.lock); }
static void fh_atfork_parent(void) { pthread_mutex_unlock(&fh_rt.lock); }

/* The child has one thread: forget the others' states and start a fresh
 * session, so the child's counters begin at zero. */
static void fh_atfork_child(void)
{
    pthread_mutex_init(&fh_rt.lock, NULL);
    fh_thread *keep = fh_current != &fh_detached ? fh_current : NULL, *ts = fh_rt.threads;
    while (ts) {
        fh_thread *next = ts->next;
        if (ts != keep)
            fh_thread_free(ts);
        ts = next;
    }
    fh_rt.threads = keep;
    fh_rt.ended = NULL;
    fh_rt.ended_kept = 0;
    if (keep) {
        keep->next = NULL;
        keep->tid = fh_os_tid();
    }
    fh_store_release(&fh_rt.epoch, fh_rt.epoch + 1u);
    if (fh_load(&fh_rt.gate) != 0)
        fh_store_release(&fh_rt.gate, (uint64_t)fh_rt.epoch << 1);
}

static int fh_runtime_init(void)
{
    if (fh_rt.initialized)
        return 0;
    if (pthread_key_create(&fh_rt.exit_key, fh_thread_exit) != 0)
        return -1;
    if (pthread_atfork(fh_atfork_prepare, fh_atfork_parent, fh_atfork_child) != 0)
        return -1;
    fh_rt.config.max_depth = FH_DEFAULT_MAX_DEPTH;
    fh_rt.config.precision = FH_DEFAULT_PRECISION;
    fh_rt.config.max_targets = FH_DEFAULT_MAX_TARGETS;
    for (uint32_t ns = 0; ns < (1u << FH_DEFAULT_PRECISION); ns++)
        fh_site_bucket_of_small[ns] = (uint8_t)fh_bucket_index(ns, FH_SITE_PRECISION);
    fh_rt.initialized = 1;
    return 0;
}

/* Frees the states of threads that have ended; their data is history once
 * a new session begins. */
static void fh_reap_dead_threads(void)
{
    pthread_mutex_lock(&fh_rt.lock);
    fh_thread **link = &fh_rt.threads;
    fh_rt.ended = NULL;
    fh_rt.ended_kept = 0;
    while (*link) {
        fh_thread *ts = *link;
        if (!fh_load_acquire(&ts->alive)) {
            *link = ts->next;
            fh_thread_free(ts); /* the folded state, `ended`, too */
        } else {
            link = &ts->next;
        }
    }
    pthread_mutex_unlock(&fh_rt.lock);
}

static void fh_new_epoch(int recording)
{
    fh_store_release(&fh_rt.epoch, fh_rt.epoch + 1u);
    fh_reap_dead_threads();
    fh_store_release(&fh_rt.gate, recording ? (uint64_t)fh_rt.epoch << 1 : 0);
}

/* Starts a new session with `config` and `clock` (already validated). */
static void fh_start(const fh_config *config, const fh_clock *clock)
{
    fh_store_release(&fh_rt.gate, 0);
    fh_store(&fh_rt.config.max_depth, config->max_depth);
    fh_store(&fh_rt.config.precision, config->precision);
    fh_store(&fh_rt.config.max_targets, config->max_targets);
    fh_store(&fh_rt.config.timeout_ns, config->timeout_ns);
    fh_store(&fh_rt.clock.kind, clock->kind);
    fh_store(&fh_rt.clock.ns_per_tick, clock->ns_per_tick);
    fh_new_epoch(1);
}

static void fh_stop(void) { fh_store_release(&fh_rt.gate, 0); }

static void fh_reset(void) { fh_new_epoch(fh_load(&fh_rt.gate) != 0); }

static inline int fh_running(void) { return fh_load(&fh_rt.gate) != 0; }

static inline int fh_poisoned(void) { return (int)(fh_load(&fh_rt.gate) & 1u); }

/* Removes one open entry of the calling thread without recording it, the
 * one `position` entries above the oldest (0: the oldest open entry): what a
 * capture does with a frame it opened and can no longer close (another
 * profiler took its hook mid-call). Entries above it move down one place,
 * so the closes still to come pair with their own opens; a recorded frame
 * removed this way is counted as abandoned. Returns 0, or -1 if there is no
 * such entry. Only the owning thread may call this. */
static FH_UNUSED int fh_abandon_entry(uint64_t position)
{
    fh_thread *ts = fh_current;
    uint32_t depth = ts->depth;
    if (ts == &fh_detached || depth > ts->capacity)
        return -1;
    /* The set-aside entries; the newest refused_below are this session's
     * unrecorded opens. */
    uint64_t aside = ts->hidden - (depth > 0 ? FH_TAG_ABOVE(ts->stack[depth - 1u].tag) : 0u);
    if (position < aside && position >= aside - ts->refused_below)
        ts->refused_below--;
    for (uint32_t r = 0; r < ts->naside; r++) {
        fh_aside_run *run = &ts->aside[r];
        if (position >= run->count) {
            position -= run->count;
            continue;
        }
        fh_store(&ts->hidden, ts->hidden - 1u);
        if (--run->count == 0) {
            /* Runs alternate in kind: the two neighbours become one. */
            uint32_t gone = 1;
            if (r > 0 && r + 1u < ts->naside) {
                ts->aside[r - 1u].count += ts->aside[r + 1u].count;
                gone = 2;
            }
            uint32_t first = gone == 2 ? r + 1u : r;
            memmove(&ts->aside[r], &ts->aside[first + 1u], (ts->naside - first - 1u) * sizeof(fh_aside_run));
            ts->naside -= gone;
        }
        return 0;
    }
    if (position < depth) {
        uint32_t i = (uint32_t)position;
        uint32_t above = FH_TAG_ABOVE(ts->stack[depth - 1u].tag);
        /* What closed inside it was recorded: the frame beneath (or the
         * sentinel) takes it as child time, so that it is not counted
         * again in that frame's exclusive time. */
        fh_frame *gone = &ts->stack[i];
        gone[-1].child_ns += gone->child_ns;
        fh_count_nothing(ts); /* the frames above move down */
        memmove(&ts->stack[i], &ts->stack[i + 1u], (size_t)(depth - 1u - i) * sizeof(fh_frame));
        fh_store(&ts->depth, depth - 1u);
        if (i == depth - 1u && above > 0) {
            /* The unrecorded opens it carried go to what is now on top. */
            if (i > 0) {
                ts->stack[i - 1u].tag += above << 8;
            } else {
                fh_store(&ts->hidden, ts->hidden - above);
                fh_aside_push(ts, 0, above);
                ts->refused_below += above;
            }
        }
        if (ts->epoch == fh_load(&fh_rt.epoch))
            fh_bump(&ts->exit_abandoned, 1);
        return 0;
    }
    if (depth > 0 && position - depth < FH_TAG_ABOVE(ts->stack[depth - 1u].tag)) {
        ts->stack[depth - 1u].tag -= FH_TAG_ONE_ABOVE;
        fh_store(&ts->hidden, ts->hidden - 1u);
        return 0;
    }
    return -1;
}

/* 1 when the newest open entry of the calling thread is a recorded U
 * frame, the protocol's or a capture's (what makes a Python function that
 * starts now a callback). */
static inline int fh_top_is_unmanaged(void)
{
    const fh_thread *ts = fh_current;
    uint32_t depth = ts->depth;
    return depth - 1u < ts->capacity && (ts->stack[depth - 1u].tag | FH_FRAME_CAPTURED) == FH_FRAME_CAPTURED_UNMANAGED;
}

/* Open frames on the thread of `ts`: recorded, set aside, unrecorded. */
static inline uint64_t fh_open_depth(const fh_thread *ts) { return ts->depth + ts->hidden; }

/* The same for the calling thread. */
static inline uint64_t fh_current_depth(void) { return fh_open_depth(fh_current); }

/* Where the frame of `kind` that a capture opened at `position` (open
 * entries beneath it) stands on the calling thread:
 *   FH_CAPTURED_NEWEST   the newest open entry: the capture closes it;
 *   FH_CAPTURED_COVERED  newer entries lie on it, protocol frames that its
 *                        call opened and returned with: the capture
 *                        abandons it in place (fh_abandon_entry), so that
 *                        they pair with their own closes;
 *   FH_CAPTURED_GONE     no longer open: a protocol close that it straddled
 *                        abandoned it (fh_uncover), a new session dropped
 *                        it (fh_set_aside), or its open was refused and
 *                        left no entry (fh_open_refused). Nothing to do.
 * Only a recorded frame of `kind` at `position` is this one: frames only
 * ever move down, and every frame a capture opened after this one has been
 * closed or abandoned by the time this one closes, so one there is this
 * one. Set-aside entries and unrecorded opens have no kind: they are all
 * the protocol's, since a capture's open leaves none. The thread joins the
 * running session first, so that positions are read where its close will
 * look (a new session drops the captures' frames, and those above move
 * down). */
enum { FH_CAPTURED_GONE, FH_CAPTURED_NEWEST, FH_CAPTURED_COVERED };

static FH_UNUSED int fh_captured_where(uint64_t position, uint32_t kind)
{
    uint64_t gate = fh_load_acquire(&fh_rt.gate);
    fh_thread *ts = fh_current;
    if (ts->gate != gate && gate != 0 && !(gate & 1u) && ts != &fh_detached && ts->epoch != (uint32_t)(gate >> 1)) {
        int saved = errno;
        int adopted = fh_thread_adopt(ts, gate);
        errno = saved;
        if (adopted != 0)
            return FH_CAPTURED_GONE; /* without memory: its own close would find nothing either */
    }
    uint64_t open = fh_open_depth(ts);
    uint32_t depth = ts->depth;
    if (position >= open)
        return FH_CAPTURED_GONE;
    if (depth > ts->capacity)
        return FH_CAPTURED_NEWEST; /* corrupted: the close says so */
    /* Only the top frame carries unrecorded opens: the rest are set aside. */
    uint64_t aside = ts->hidden - (depth > 0 ? FH_TAG_ABOVE(ts->stack[depth - 1u].tag) : 0u);
    if (position < aside || position - aside >= depth || FH_TAG_KIND(ts->stack[position - aside].tag) != kind)
        return FH_CAPTURED_GONE;
    return position + 1u == open ? FH_CAPTURED_NEWEST : FH_CAPTURED_COVERED;
}

/* ---- hooks for the test-only extension (see fh_test_api.h) --------------- */

/* Breaks the calling thread's state so the next call detects it (E_FAIL). */
static FH_UNUSED int fh_test_corrupt_current(int how)
{
    fh_thread *ts = fh_current;
    if (ts->stack == NULL) /* also the detached state */
        return -1;
    if (how == FH_CORRUPT_DEPTH) {
        fh_store(&ts->depth, ts->capacity + 7u);
    } else {
        if (ts->depth == 0)
            return -1;
        ts->stack[ts->depth - 1u].tag = (ts->stack[ts->depth - 1u].tag & ~0xffu) | 0xDEu;
    }
    return 0;
}

/* Records `count` closes of `ns` at the call site (code, where) -> target of
 * the calling thread, as that many fast closes would, in one step: a test
 * can reach counts past 2**32 without making 2**32 calls. -1 if the thread
 * is not recording in this session or the site finds no room. */
static FH_UNUSED int fh_test_add_site_samples(uint64_t code, uint32_t where, uint64_t target, uint64_t ns,
                                             uint64_t count)
{
    fh_thread *ts = fh_current;
    uint64_t gate = fh_load(&fh_rt.gate);
    if (ts->stack == NULL || gate == 0 || ts->gate != gate)
        return -1;
    fh_site *site = fh_site_lookup(ts, code, where, target);
    uint32_t slot, r = fh_bucket_row(ns, FH_SITE_PRECISION, &slot);
    if (site == NULL || (site->rows[r] == NULL && fh_row_new(ts, &site->rows[r], FH_SITE_PRECISION) == NULL))
        return -1;
    fh_bump(&site->calls, count);
    fh_bump(&site->total_ns, ns * count);
    fh_bump(&site->exclusive_ns, ns * count);
    fh_bump(&site->rows[r][slot], count);
    return 0;
}

#endif /* FASTHOST_SESSION_H */
