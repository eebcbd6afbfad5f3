/* fh_threads.h -- a thread's life: its state made on its first call, synced
 * to a new session (older frames set aside below the frame array), and
 * folded into a kept row when it ends.
 */
#ifndef FASTHOST_THREADS_H
#define FASTHOST_THREADS_H

#include <sys/syscall.h>
#include <unistd.h>

#include "fh_state.h"

/* ---- thread states ------------------------------------------------------- */

static void fh_thread_free(fh_thread *ts)
{
    fh_arena_free(ts);
    free(ts->table);
    free(ts->targets);
    free(ts->callback_counts);
    if (ts->stack != NULL)
        free(ts->stack - 1);
    free(ts);
}

static inline uint64_t fh_os_tid(void) { return (uint64_t)syscall(SYS_gettid); }

/* A frame array for `capacity` frames with a sentinel at index -1: a frame
 * that closes credits its duration to the frame below it, and the sentinel
 * is what lies below the first one, so the close needs no branch for "no
 * parent". Returns the address of frame 0, or NULL without memory. */
static fh_frame *fh_stack_new(uint32_t capacity)
{
    fh_frame *frames = (fh_frame *)calloc((size_t)capacity + 1u, sizeof(fh_frame));
    return frames != NULL ? frames + 1 : NULL;
}

/* ---- what lies below the frame array ------------------------------------- */

/* Adds `count` entries on top of the set-aside runs. Past FH_ASIDE_RUNS
 * runs the two oldest are merged into one run of abandoned frames (and that
 * run with the next if it is abandoned too, so runs keep alternating); the
 * newest run, where the entries go, is never part of a merge. */
static void fh_aside_push(fh_thread *ts, uint32_t abandoned, uint64_t count)
{
    uint32_t n = ts->naside;
    if (count == 0)
        return;
    if (n == 0 || ts->aside[n - 1u].abandoned != abandoned) {
        if (n == FH_ASIDE_RUNS) {
            uint32_t merged = ts->aside[2].abandoned ? 3u : 2u;
            for (uint32_t i = 1; i < merged; i++)
                ts->aside[0].count += ts->aside[i].count;
            ts->aside[0].abandoned = 1;
            memmove(&ts->aside[1], &ts->aside[merged], (n - merged) * sizeof(fh_aside_run));
            n -= merged - 1u;
        }
        assert(n < FH_ASIDE_RUNS);
        ts->aside[n] = (fh_aside_run){.count = 0, .abandoned = abandoned};
        ts->naside = ++n;
    }
    ts->aside[n - 1u].count += count;
    fh_store(&ts->hidden, ts->hidden + count);
}

/* Pops the newest set-aside entry: 1 if it was a frame of an older
 * session, 0 if an unrecorded open, -1 if nothing is set aside. */
static int fh_aside_pop(fh_thread *ts)
{
    uint32_t n = ts->naside;
    if (n == 0)
        return -1;
    fh_aside_run *run = &ts->aside[n - 1u];
    int abandoned = (int)run->abandoned;
    assert(run->count > 0 && ts->hidden > 0); /* hidden counts every set-aside entry */
    if (ts->refused_below > 0)
        ts->refused_below--; /* the newest entries */
    if (--run->count == 0)
        ts->naside = n - 1u;
    fh_store(&ts->hidden, ts->hidden - 1u);
    return abandoned;
}

/* A new session begins for this thread: every open protocol frame, and
 * every unrecorded open between them, is set aside, so the session starts
 * with its full max_depth whatever the thread carried over. A capture's
 * frames are dropped, abandoned: set-aside entries have no kind, and a
 * protocol close that popped one would take a capture's frame for its own
 * (the captures' closes find theirs gone, fh_captured_where). Returns how
 * many were dropped. */
static uint32_t fh_set_aside(fh_thread *ts)
{
    uint32_t dropped = 0;
    for (uint32_t i = 0; i < ts->depth; i++) {
        uint32_t above = FH_TAG_ABOVE(ts->stack[i].tag);
        fh_store(&ts->hidden, ts->hidden - above); /* counted again below */
        if (FH_TAG_CAPTURED(ts->stack[i].tag))
            dropped++;
        else
            fh_aside_push(ts, 1, 1);
        fh_aside_push(ts, 0, above);
    }
    fh_store(&ts->depth, 0);
    return dropped;
}

/* An open that is not recorded (refused, or made while not recording)
 * still nests: it is remembered on top of the stack, so that its close pops
 * it and not the frame beneath. Only the top frame carries such opens, or,
 * with the array empty, the set-aside entries (refused_below): no open is
 * recorded on top of one (fh_room_slow; fast_depth drops to 0 here so that
 * every open goes there), and a stop is followed by a new session that sets
 * them aside. The captures find their frames by that (fh_captured_where). */
static void fh_push_unrecorded(fh_thread *ts)
{
    ts->fast_depth = 0;
    if (ts->depth == 0) {
        fh_aside_push(ts, 0, 1);
        ts->refused_below++;
        return;
    }
    fh_frame *top = &ts->stack[ts->depth - 1u];
    if (FH_TAG_ABOVE(top->tag) == FH_TAG_ABOVE_MAX)
        return; /* 16M opens on one frame and none closed: no longer tracked */
    top->tag += FH_TAG_ONE_ABOVE;
    fh_store(&ts->hidden, ts->hidden + 1u);
}

/* Pops the newest open entry if it is not a frame of the array: an
 * unrecorded open (returns FH_CLR_NOT_AVAILABLE) or, with the array empty, a
 * set-aside entry (FH_ABANDONED for an older session's frame). Returns -1,
 * popping nothing, when the newest entry is an array frame or there is
 * none. Every close goes through here first. */
static int fh_pop_hidden(fh_thread *ts)
{
    uint32_t depth = ts->depth;
    if (depth == 0) {
        int abandoned = fh_aside_pop(ts);
        return abandoned < 0 ? -1 : abandoned ? FH_ABANDONED : FH_CLR_NOT_AVAILABLE;
    }
    fh_frame *top = &ts->stack[depth - 1u];
    if (FH_TAG_ABOVE(top->tag) == 0)
        return -1;
    assert(ts->hidden >= FH_TAG_ABOVE(top->tag)); /* hidden counts the opens on the top frame */
    top->tag -= FH_TAG_ONE_ABOVE;
    fh_store(&ts->hidden, ts->hidden - 1u);
    return FH_CLR_NOT_AVAILABLE;
}

/* A protocol close (EnterRuntime, ReverseLeaveRuntime: `kind` is U or M)
 * that finds a capture's frame on top, with no unrecorded open on it. The
 * protocol does not see the captures' frames: when the newest entry beneath
 * them is a recorded frame of `kind`, or a set-aside entry, it is what the
 * close pops, and the captured frames above it, calls that its close
 * straddles (`leave_runtime(t)` and then `enter_runtime` run by
 * `functools.partial`), are abandoned: removed unrecorded and counted as
 * abandoned, their own closes find them gone (fh_captured_where). Returns
 * 1 then, the entry to pop now on top; 0, with nothing changed, when the
 * newest protocol entry is of the other kind or there is none (the close
 * is refused as it would be without the capture). */
static FH_NOINLINE int fh_uncover(fh_thread *ts, uint32_t kind)
{
    uint32_t depth = ts->depth, below = depth;
    assert(depth - 1u < ts->capacity && FH_TAG_CAPTURED(ts->stack[depth - 1u].tag));
    while (below > 0 && FH_TAG_CAPTURED(ts->stack[below - 1u].tag))
        below--;
    if (below > 0 ? ts->stack[below - 1u].tag != kind : ts->naside == 0)
        return 0;
    /* What closed inside the abandoned frames was recorded: it is the
     * child time of the frame beneath (the sentinel when the entry is set
     * aside), so that its exclusive time does not count it again. */
    fh_frame *beneath = &ts->stack[below] - 1;
    for (uint32_t i = below; i < depth; i++)
        beneath->child_ns += ts->stack[i].child_ns;
    fh_store(&ts->depth, below);
    if (ts->epoch == fh_load(&fh_rt.epoch))
        fh_bump(&ts->exit_abandoned, depth - below);
    return 1;
}

/* 1 when the close of a frame of `kind` finds one on top of `ts`'s array,
 * once a protocol close has had the captured frames on top abandoned that
 * it straddles (fh_uncover); 0 when it must go to fh_close_other. */
FH_INLINE int fh_close_finds(fh_thread *ts, uint32_t kind)
{
    uint32_t depth = ts->depth;
    if (FH_UNLIKELY(depth - 1u >= ts->capacity))
        return 0;
    uint32_t tag = ts->stack[depth - 1u].tag;
    if (FH_LIKELY(tag == kind))
        return 1;
    /* (With an unrecorded open on top, that is what the close pops.) */
    return FH_TAG_CAPTURED(tag) && FH_TAG_ABOVE(tag) == 0 && !FH_TAG_CAPTURED(kind) && fh_uncover(ts, kind) &&
           ts->depth > 0;
}

/* A close made while not recording (stopped or poisoned): pops what it
 * closes when that can be told, records nothing. A close of the wrong kind
 * leaves everything as it is; a capture's pops its own frame or nothing (an
 * entry without a kind is the protocol's, fh_captured_where). */
static void fh_close_unrecorded(fh_thread *ts, uint32_t kind)
{
    if (ts->depth > ts->capacity)
        return; /* corrupted: the next recorded call will say so */
    if (!FH_TAG_CAPTURED(kind) && fh_pop_hidden(ts) >= 0)
        return;
    if (fh_close_finds(ts, kind))
        fh_store(&ts->depth, ts->depth - 1u);
    else if (!FH_TAG_CAPTURED(kind) && ts->depth == 0)
        fh_pop_hidden(ts); /* uncovered a set-aside entry, or none */
}

/* (Re)shapes `ts` for the session `gate` names and zeroes its data. Open
 * frames are set aside (fh_set_aside). */
static int fh_thread_adopt(fh_thread *ts, uint64_t gate)
{
    /* Field-wise relaxed loads: a call that loaded the gate just before
     * start() replaced the config may get here while it is being written.
     * Each field is read once, so what this state allocates always agrees
     * with what it records; its epoch is then already stale and the next
     * call adopts again. */
    fh_config config = {
        .max_depth = fh_load(&fh_rt.config.max_depth),
        .precision = fh_load(&fh_rt.config.precision),
        .max_targets = fh_load(&fh_rt.config.max_targets),
        .timeout_ns = fh_load(&fh_rt.config.timeout_ns),
    };
    fh_clock clock = {fh_load(&fh_rt.clock.kind), fh_load(&fh_rt.clock.ns_per_tick)};
    const fh_config *cfg = &config;
    uint32_t buckets = fh_bucket_count(cfg->precision);
    uint64_t dropped = 0;

    /* memory_usage() reads heap_bytes and ntargets of every state, in
     * session or not: those two are written atomically here. */
    if (ts->depth > ts->capacity) {
        /* A corrupted depth that no call has tripped over yet: the stack
         * cannot be trusted, drop it. */
        dropped += ts->depth;
        fh_store(&ts->depth, 0);
    }
    dropped += fh_set_aside(ts);
    ts->refused_below = 0; /* an older session's: the new one records on top */
    if (ts->stack == NULL || ts->max_depth != cfg->max_depth) {
        uint32_t capacity = 2u * cfg->max_depth; /* the protocol's and the captures' (fh_has_room) */
        fh_frame *stack = fh_stack_new(capacity);
        if (stack == NULL)
            return -1;
        if (ts->stack != NULL)
            free(ts->stack - 1);
        fh_bump(&ts->heap_bytes, ((uint64_t)capacity - ts->capacity) * sizeof(fh_frame) +
                                     (ts->stack == NULL ? sizeof(fh_frame) : 0));
        ts->stack = stack;
        ts->capacity = capacity;
        ts->max_depth = cfg->max_depth;
    }
    if (ts->callback_counts == NULL || ts->precision != cfg->precision) {
        uint64_t *counts = (uint64_t *)calloc(buckets, sizeof(uint64_t));
        if (counts == NULL)
            return -1;
        if (ts->callback_counts)
            fh_bump(&ts->heap_bytes, -(uint64_t)fh_bucket_count(ts->precision) * sizeof(uint64_t));
        free(ts->callback_counts);
        ts->callback_counts = counts;
        fh_bump(&ts->heap_bytes, (uint64_t)buckets * sizeof(uint64_t));
    } else {
        memset(ts->callback_counts, 0, buckets * sizeof(uint64_t));
    }
    if (ts->targets == NULL || ts->max_targets != cfg->max_targets) {
        fh_target **targets = (fh_target **)calloc(cfg->max_targets + 1u, sizeof(fh_target *));
        if (targets == NULL)
            return -1;
        if (ts->targets)
            fh_bump(&ts->heap_bytes, -((uint64_t)ts->max_targets + 1u) * sizeof(fh_target *));
        free(ts->targets);
        ts->targets = targets;
        ts->max_targets = cfg->max_targets;
        fh_bump(&ts->heap_bytes, ((uint64_t)cfg->max_targets + 1u) * sizeof(fh_target *));
    }
    fh_store_release(&ts->ntargets, 0);
    fh_arena_free(ts);
    if (ts->table)
        memset(ts->table, 0, (ts->table_mask + 1u) * sizeof(fh_target_entry));
    ts->table_used = 0;
    ts->overflow_target = NULL;
    /* The arena went: so did the call sites. */
    fh_store_release(&ts->nsites, 0);
    fh_store_release(&ts->sites, NULL);
    ts->sites_capacity = 0;
    ts->site_table = NULL;
    ts->site_mask = 0;
    ts->sites_dropped = 0;
    memset(ts->recent_sites, 0, sizeof(ts->recent_sites));
    memset(ts->recent, 0, sizeof(ts->recent));

    ts->precision = cfg->precision;
    ts->timeout_limit_ns = cfg->timeout_ns != 0 ? cfg->timeout_ns : UINT64_MAX;
    ts->clock = clock;
    ts->leaf_ok = fh_clock_is_inline(&clock) && cfg->precision == FH_DEFAULT_PRECISION;
    memset(ts->results, 0, sizeof(ts->results));
    ts->max_depth_seen = 0;
    ts->fast_depth = 0;
    fh_count_nothing(ts);
    ts->callback_calls = ts->callback_total_ns = ts->callback_exclusive_ns = ts->callback_max_ns = 0;
    ts->callback_min_ns = UINT64_MAX;
    ts->exit_abandoned = dropped;
    ts->dropped_samples = 0;
    ts->gate = gate & ~(uint64_t)1;
    fh_store_release(&ts->epoch, (uint32_t)(gate >> 1));
    return 0;
}

static void fh_thread_exit(void *arg);

/* Set by the Python module: names a new thread state after the Python
 * thread making its first call (threading's name, which CPython 3.9-3.13
 * does not give the OS thread), so that a thread that ended keeps it. */
static void (*fh_thread_namer)(char *name, size_t size);

static fh_thread *fh_thread_create(void)
{
    fh_thread *ts = (fh_thread *)calloc(1, sizeof(fh_thread));
    if (ts == NULL)
        return NULL;
    ts->gate = UINT64_MAX; /* no session until adopted: the fast paths stay out */
    ts->heap_bytes = sizeof(fh_thread);
    ts->tid = fh_os_tid();
    pthread_getname_np(pthread_self(), ts->name, 16); /* the OS's limit, with its NUL */
    if (fh_thread_namer != NULL)
        fh_thread_namer(ts->name, sizeof(ts->name));
    ts->alive = 1;
    pthread_mutex_lock(&fh_rt.lock);
    ts->next = fh_rt.threads;
    fh_rt.threads = ts;
    pthread_mutex_unlock(&fh_rt.lock);
    /* The key's destructor tells us when the thread ends (Python threads and
     * bare pthreads alike). */
    pthread_setspecific(fh_rt.exit_key, ts);
    fh_current = ts;
    return ts;
}

/* Makes `dst` have a row wherever `src` has one, and adds the counts when
 * `add`. -1 without memory. */
static int fh_fold_rows(fh_thread *into, uint64_t **dst, uint64_t *const *src, uint32_t rows, int add)
{
    for (uint32_t r = 0; r < rows; r++) {
        if (src[r] == NULL)
            continue;
        if (dst[r] == NULL && fh_row_new(into, &dst[r], into->precision) == NULL)
            return -1;
        if (add)
            fh_add_counts(dst[r], src[r], 1u << into->precision);
    }
    return 0;
}

/* Adds a call site's histogram to another's; counts that find no memory
 * for their row are dropped (counted), as when they were recorded. */
static void fh_fold_site_rows(fh_thread *into, fh_site *dst, const fh_site *src)
{
    const uint32_t width = 1u << FH_SITE_PRECISION;
    for (uint32_t r = 0; r < FH_SITE_ROWS; r++) {
        if (src->rows[r] == NULL)
            continue;
        if (dst->rows[r] != NULL || fh_row_new(into, &dst->rows[r], FH_SITE_PRECISION) != NULL) {
            fh_add_counts(dst->rows[r], src->rows[r], width);
            continue;
        }
        for (uint32_t b = 0; b < width; b++)
            into->dropped_samples += src->rows[r][b];
    }
}

/* Adds everything `from` recorded into `into` (the same session's shape):
 * counters add, extremes take min/max, histograms add bucket by bucket, so
 * totals stay exact. Every record `into` needs is made in a first pass,
 * before anything is added: -1 (nothing added) without memory. Caller
 * holds fh_rt.lock. */
static int fh_thread_fold(fh_thread *into, const fh_thread *from)
{
    if (into->precision != from->precision)
        return -1;
    for (int add = 0; add < 2; add++) {
        for (uint32_t i = 0; i < from->ntargets; i++) {
            const fh_target *t = from->targets[i];
            fh_target *d = t->overflow ? into->overflow_target : fh_target_lookup(into, t->address);
            if (t->overflow && d == NULL)
                d = into->overflow_target = fh_target_new(into, 0, 1);
            if (d == NULL) /* a target past max_targets folds into the overflow row */
                return -1; /* first pass only: the second finds what it made */
            if (t->nested != NULL && d->nested == NULL) {
                uint64_t **nested = (uint64_t **)fh_arena_alloc(into, 2u * d->rows_per_hist * sizeof(uint64_t *));
                if (nested == NULL)
                    return -1;
                fh_store_release(&d->nested, nested);
            }
            if (fh_fold_rows(into, d->rows, t->rows, t->rows_per_hist, add) != 0 ||
                (t->nested != NULL && fh_fold_rows(into, d->nested, t->nested, 2u * t->rows_per_hist, add) != 0))
                return -1;
            if (add && t->calls != 0) {
                d->calls += t->calls;
                d->total_ns += t->total_ns;
                d->exclusive_ns += t->exclusive_ns;
                d->timeouts += t->timeouts;
                fh_minmax(&d->min_ns, &d->max_ns, t->min_ns);
                fh_minmax(&d->min_ns, &d->max_ns, t->max_ns);
            }
        }
    }
    /* Call sites last: one that finds no room is counted as dropped, the
     * fold itself goes on (they are a breakdown, not the totals). */
    for (uint32_t i = 0; i < from->nsites; i++) {
        const fh_site *f = from->sites[i];
        fh_site *d = fh_site_lookup(into, f->code, f->where, f->target);
        if (d == NULL) {
            into->sites_dropped += f->calls;
            continue;
        }
        d->calls += f->calls;
        d->total_ns += f->total_ns;
        d->exclusive_ns += f->exclusive_ns;
        fh_fold_site_rows(into, d, f);
    }
    into->sites_dropped += from->sites_dropped;
    for (int c = 0; c < FH_CALLS; c++)
        for (int r = 0; r < FH_RESULTS; r++)
            into->results[c][r] += from->results[c][r];
    fh_add_counts(into->callback_counts, from->callback_counts, fh_bucket_count(from->precision));
    if (from->callback_calls != 0) {
        into->callback_calls += from->callback_calls;
        into->callback_total_ns += from->callback_total_ns;
        into->callback_exclusive_ns += from->callback_exclusive_ns;
        fh_minmax(&into->callback_min_ns, &into->callback_max_ns, from->callback_min_ns);
        fh_minmax(&into->callback_min_ns, &into->callback_max_ns, from->callback_max_ns);
    }
    into->exit_abandoned += from->exit_abandoned;
    into->dropped_samples += from->dropped_samples;
    if (from->max_depth_seen > into->max_depth_seen)
        into->max_depth_seen = from->max_depth_seen;
    into->folded += from->folded ? from->folded : 1u;
    return 0;
}

/* A thread that ended in this session: its state stays (a row of its own)
 * while fewer than FH_ENDED_THREADS_KEPT have; after that it is folded into
 * the session's `ended` state and freed, so that a server with a thread per
 * request holds bounded memory. Caller holds fh_rt.lock. Returns 1 when `ts`
 * was folded (and freed). */
static int fh_thread_fold_ended(fh_thread *ts)
{
    if (fh_rt.ended_kept < FH_ENDED_THREADS_KEPT) {
        fh_rt.ended_kept++;
        return 0;
    }
    fh_thread *ended = fh_rt.ended;
    if (ended == NULL) {
        ended = (fh_thread *)calloc(1, sizeof(fh_thread));
        if (ended == NULL)
            return 0;
        ended->heap_bytes = sizeof(fh_thread);
        if (fh_thread_adopt(ended, (uint64_t)ts->epoch << 1) != 0) {
            fh_thread_free(ended);
            return 0;
        }
        ended->next = fh_rt.threads;
        fh_rt.threads = ended;
        fh_rt.ended = ended;
    }
    if (fh_thread_fold(ended, ts) != 0)
        return 0;
    for (fh_thread **link = &fh_rt.threads; *link; link = &(*link)->next) {
        if (*link == ts) {
            *link = ts->next;
            break;
        }
    }
    fh_thread_free(ts);
    return 1;
}

static void fh_thread_exit(void *arg)
{
    fh_thread *ts = (fh_thread *)arg;
    if (fh_current == ts)
        fh_current = &fh_detached;
    if (ts->epoch == fh_load_acquire(&fh_rt.epoch)) {
        uint64_t abandoned = ts->depth <= ts->capacity ? ts->depth : 0;
        for (uint32_t i = 0; i < ts->naside; i++)
            abandoned += ts->aside[i].abandoned ? ts->aside[i].count : 0;
        fh_bump(&ts->exit_abandoned, abandoned);
    }
    fh_store(&ts->depth, 0);
    ts->naside = 0;
    ts->refused_below = 0;
    fh_store(&ts->hidden, 0);
    pthread_mutex_lock(&fh_rt.lock);
    /* Under the lock, the session cannot change: reset() reaps under it. */
    int folded = ts->epoch == fh_load(&fh_rt.epoch) && fh_thread_fold_ended(ts);
    if (!folded)
        fh_store_release(&ts->alive, 0); /* from here reset() may free it */
    pthread_mutex_unlock(&fh_rt.lock);
}

#endif /* FASTHOST_THREADS_H */
