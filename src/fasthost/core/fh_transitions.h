/* fh_transitions.h -- the hot path: LeaveRuntime, EnterRuntime,
 * ReverseEnterRuntime and ReverseLeaveRuntime, each an inline fast path and
 * an out-of-line full path, and the slow paths they share.
 */
#ifndef FASTHOST_TRANSITIONS_H
#define FASTHOST_TRANSITIONS_H

#include "fh_threads.h"

/* ---- slow paths ---------------------------------------------------------- */

/* Poisons recording: called when a thread's state breaks an invariant. The
 * stack cannot be trusted, so it is dropped with everything set aside;
 * counters survive. */
static FH_COLD int fh_fail(fh_thread *ts, int call)
{
    uint64_t gate = fh_load(&fh_rt.gate);
    fh_store(&ts->depth, 0);
    ts->naside = 0;
    ts->refused_below = 0;
    fh_store(&ts->hidden, 0);
    fh_bump(&ts->results[call][FH_FAIL], 1);
    while (gate != 0 && !(gate & 1u)) {
        if (__atomic_compare_exchange_n(&fh_rt.gate, &gate, gate | 1u, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            break;
    }
    return FH_FAIL;
}

/* Opening calls are LEAVE and REVERSE_ENTER. */
#define FH_CALL_OPENS(call) ((call) == FH_CALL_LEAVE || (call) == FH_CALL_REVERSE_ENTER)

/* Everything the fast path's one comparison `ts->gate == gate` rules out:
 * no state yet, a new session, not recording, a poisoned session. Returns
 * the state to use, or NULL with *result set when the call ends here. A
 * call made while not recording still keeps the nesting (an open is
 * remembered, a close of a frame of `kind` pops), so that the frames
 * around it stay true. */
static FH_NOINLINE fh_thread *fh_sync(uint64_t gate, int call, uint32_t kind, int *result)
{
    int saved = errno;
    fh_thread *ts = fh_current;
    if (ts == &fh_detached) {
        if (gate == 0 && !FH_CALL_OPENS(call)) {
            *result = FH_CLR_NOT_AVAILABLE; /* nothing open here to close */
            return NULL;
        }
        ts = fh_thread_create();
    }
    int ready = ts != NULL && (gate == 0 || ts->epoch == (uint32_t)(gate >> 1) || fh_thread_adopt(ts, gate) == 0);
    errno = saved;
    if (!ready) {
        /* Without a state (for this session) there is nowhere to count. */
        if (gate != 0)
            __atomic_fetch_add(&fh_rt.unregistered_out_of_memory, 1, __ATOMIC_RELAXED);
        *result = gate != 0 ? FH_OUT_OF_MEMORY : FH_CLR_NOT_AVAILABLE;
        return NULL;
    }
    if (gate == 0 || (gate & 1u)) {
        /* A capture's open leaves no entry: its caller takes the result to
         * mean nothing was opened, so that every entry without a kind is
         * the protocol's (fh_captured_where). */
        if (!FH_CALL_OPENS(call))
            fh_close_unrecorded(ts, kind);
        else if (!FH_TAG_CAPTURED(kind))
            fh_push_unrecorded(ts);
        if (gate != 0)
            fh_bump(&ts->results[call][FH_CLR_NOT_AVAILABLE], 1); /* poisoned: counted */
        *result = FH_CLR_NOT_AVAILABLE;
        return NULL;
    }
    return ts;
}

/* Fetches the caller's state for `call` (which opens or closes a frame of
 * `kind`), or returns from the caller. */
#define FH_ENTER_CALL(ts, call, kind)                                    \
    uint64_t gate_ = fh_load_acquire(&fh_rt.gate);                       \
    fh_thread *ts = fh_current;                                          \
    if (FH_UNLIKELY(ts->gate != gate_)) {                                \
        int result_;                                                     \
        ts = fh_sync(gate_, (call), (kind), &result_);                   \
        if (ts == NULL)                                                  \
            return result_;                                              \
    }

/* An open of a frame of `kind` refused with `result` (E_OUTOFMEMORY):
 * nothing is recorded, but a protocol open is remembered so that its close
 * pairs with it (a capture's is not: see fh_sync). */
static FH_NOINLINE int fh_open_refused(fh_thread *ts, int call, int result, uint32_t kind)
{
    if (ts->depth > ts->capacity)
        return fh_fail(ts, call);
    if (!FH_TAG_CAPTURED(kind))
        fh_push_unrecorded(ts);
    fh_bump(&ts->results[call][result], 1);
    return result;
}

/* Room for an open of `kind` that is not below fast_depth (fh_has_room).
 * The protocol's frames and the captures' each have max_depth of their
 * own, in an array of twice that: a capture's calls never take the room of
 * a protocol open, which is refused where it would be without the capture,
 * nor the protocol's frames the captures'. Below max_depth both sides have
 * room; past it the frames of the open's side are counted. The count is
 * kept (counted_depth) and moved to the depth of each open past max_depth
 * by the frames opened or closed since, so that code looping there pays
 * for those, not for the whole stack (fh_count_to). Nothing opens on top of an
 * unrecorded open of this session, on the top frame or, with the array
 * empty, set aside below it (see fh_push_unrecorded): a protocol open is
 * then refused as well, a capture's leaves no entry. Entries without a kind
 * are the protocol's but take no room in the array. */
static uint32_t fh_captured_between(const fh_thread *ts, uint32_t from, uint32_t to)
{
    uint32_t captured = 0;
    for (uint32_t i = from; i < to; i++)
        captured += FH_TAG_CAPTURED(ts->stack[i].tag);
    return captured;
}

/* Moves the count of captured frames (counted_depth, counted_captured) to
 * stack[0..depth), for `depth` at or past max_depth. It holds there by
 * what can change the array: a frame at or past max_depth - 1 is pushed
 * only by fh_push's slow branch (fast_depth stops below), which moves the
 * count down to itself before writing, or drops it if it is below
 * max_depth (the frames beneath may have been replaced on the fast path);
 * so while the count stands above the depth, the frames in between were
 * only closed, and their tags are still in place to be taken off. A frame
 * removed from the middle (fh_abandon_entry) or a new session drops it. */
static void fh_count_to(fh_thread *ts, uint32_t depth)
{
    uint32_t counted = ts->counted_depth;
    if (counted <= depth)
        ts->counted_captured += fh_captured_between(ts, counted, depth);
    else
        ts->counted_captured -= fh_captured_between(ts, depth, counted);
    ts->counted_depth = depth;
}

/* fh_push's slow branch, about to write a frame at `depth` below the count. */
static FH_NOINLINE void fh_count_below(fh_thread *ts, uint32_t depth)
{
    if (depth < ts->max_depth)
        fh_count_nothing(ts);
    else
        fh_count_to(ts, depth);
}

static FH_NOINLINE int fh_room_slow(fh_thread *ts, uint32_t kind)
{
    uint32_t depth = ts->depth;
    if (depth >= ts->capacity || (depth > 0 ? FH_TAG_ABOVE(ts->stack[depth - 1u].tag) != 0 : ts->refused_below != 0))
        return 0;
    if (depth < ts->max_depth)
        return 1;
    fh_count_to(ts, depth);
    uint32_t captured = ts->counted_captured;
    return (FH_TAG_CAPTURED(kind) ? captured : depth - captured) < ts->max_depth;
}

FH_INLINE int fh_has_room(fh_thread *ts, uint32_t kind)
{
    return FH_LIKELY(ts->depth < ts->fast_depth) || fh_room_slow(ts, kind);
}

/* A close that finds no recorded frame of its own kind on top of the array:
 * it pops an unrecorded open (HOST_E_CLRNOTAVAILABLE) or a set-aside frame
 * (HOST_E_ABANDONED) when one is on top; otherwise it is refused
 * (HOST_E_NOT_OWNER, nothing popped), or finds the state broken (E_FAIL). */
static FH_NOINLINE int fh_close_other(fh_thread *ts, int call)
{
    uint32_t depth = ts->depth;
    if (depth > ts->capacity)
        return fh_fail(ts, call);
    int result = fh_pop_hidden(ts);
    if (result < 0) {
        if (depth > 0 && !FH_TAG_KIND_VALID(ts->stack[depth - 1u].tag))
            return fh_fail(ts, call);
        result = FH_NOT_OWNER; /* an empty stack, or another kind on top */
    }
    fh_bump(&ts->results[call][result], 1);
    return result;
}

/* ---- the four transitions (hot path) ------------------------------------- */

/* Each transition is an inline fast path for the common case that calls
 * nothing, so it saves no registers and needs no stack frame, and a full
 * path, out of line, entered by a tail call for everything else: a thread's
 * first call or a new session, errors, a target missing from the recent
 * cache, a histogram row not yet allocated, a frame with frames inside.
 * Both paths share the helpers below, so they cannot drift apart. */

/* A `fast` caller has checked depth < fast_depth (fh_leave_ready), so the
 * frame is no deeper than the deepest seen and max_depth_seen stays. */
FH_INLINE fh_frame *fh_push(fh_thread *ts, uint32_t kind, int fast)
{
    uint32_t depth = ts->depth;
    assert(depth < ts->capacity); /* every caller refuses a full array first */
    assert(!fast || depth < ts->max_depth_seen);
    fh_frame *frame = &ts->stack[depth];
    if (!fast && FH_UNLIKELY(depth < ts->counted_depth))
        fh_count_below(ts, depth); /* before the frame it counted is replaced */
    frame->tag = kind;
    frame->child_ns = 0;
    fh_store(&ts->depth, depth + 1u);
    if (!fast) {
        /* The new top carries no unrecorded open, so fast_depth is back to
         * what the depths seen allow (fh_push_unrecorded drops it). */
        uint32_t seen = ts->max_depth_seen, cap = ts->max_depth - 1u;
        if (FH_UNLIKELY(depth + 1u > seen))
            fh_store(&ts->max_depth_seen, seen = depth + 1u);
        ts->fast_depth = seen < cap ? seen : cap;
    }
    return frame;
}

/* Opens a U frame (`kind`: the protocol's or a capture's) for `t`; a
 * `leaf` caller (see fh_close_ready) has made sure that the clock is read
 * without a call, a `fast` one that the frame is below fast_depth
 * (fh_leave_ready). */
FH_INLINE int fh_leave_push(fh_thread *ts, fh_target *t, int leaf, int fast, uint32_t kind)
{
    fh_frame *frame = fh_push(ts, kind, fast);
    frame->target = t;
    fh_bump(&ts->results[FH_CALL_LEAVE][FH_OK], 1);
    /* Timestamp last, so the frame excludes our own bookkeeping. */
    frame->start = leaf ? fh_clock_ticks_inline(&ts->clock) : fh_clock_ticks(&ts->clock);
    return FH_OK;
}

static FH_NOINLINE int fh_leave_full(uint64_t target, uint32_t kind)
{
    FH_ENTER_CALL(ts, FH_CALL_LEAVE, kind)
    if (FH_UNLIKELY(!fh_has_room(ts, kind)))
        return fh_open_refused(ts, FH_CALL_LEAVE, FH_OUT_OF_MEMORY, kind);
    fh_target_entry *recent = &ts->recent[fh_recent_slot(target)];
    fh_target *t = recent->target;
    if (t == NULL || recent->address != target) {
        int saved = errno;
        t = fh_target_lookup(ts, target);
        errno = saved;
        if (FH_UNLIKELY(t == NULL))
            return fh_open_refused(ts, FH_CALL_LEAVE, FH_OUT_OF_MEMORY, kind);
    }
    return fh_leave_push(ts, t, 0, 0, kind);
}

/* The target record for an open of `target` on the fast path: the thread is
 * synced to the running session, opens no deeper than it has before (so
 * within max_depth) and finds the target in its recent cache. NULL otherwise (the full path decides). Reads only.
 * A caller that knows `target` is not 0 says so in `nonzero`: an entry
 * with a nonzero address always has its record (empty entries are all
 * zeros), so one test less. */
FH_INLINE fh_target *fh_leave_ready(const fh_thread *ts, uint64_t target, int nonzero)
{
    const fh_target_entry *recent = &ts->recent[fh_recent_slot(target)];
    fh_target *t = recent->target;
    if (FH_UNLIKELY(ts->gate != fh_load_acquire(&fh_rt.gate) || ts->depth >= ts->fast_depth ||
                    (!nonzero && t == NULL) || recent->address != target))
        return NULL;
    return t;
}

/* Opens a U frame of `kind` for `target`. */
FH_INLINE int fh_leave(uint64_t target, uint32_t kind)
{
    fh_thread *ts = fh_current;
    fh_target *t = fh_leave_ready(ts, target, 0);
    if (t == NULL)
        return fh_leave_full(target, kind);
    return fh_leave_push(ts, t, 0, 1, kind);
}

/* LeaveRuntime: managed code is about to call `target` (unmanaged). */
FH_INLINE int fh_leave_runtime(uint64_t target) { return fh_leave(target, FH_FRAME_UNMANAGED); }

/* What every close of a U frame records besides its histogram: the
 * target's counters, the timeout, the result. Returns the result. */
FH_INLINE int fh_enter_account(fh_thread *ts, fh_target *t, uint64_t inclusive, uint64_t exclusive)
{
    fh_bump(&t->calls, 1);
    fh_bump(&t->total_ns, inclusive);
    fh_bump(&t->exclusive_ns, exclusive);
    fh_minmax(&t->min_ns, &t->max_ns, inclusive);
    /* Each result's own count, not results[call][result]: a constant
     * address is an instruction less than a computed one. */
    if (FH_UNLIKELY(inclusive > ts->timeout_limit_ns)) {
        fh_bump(&t->timeouts, 1);
        fh_bump(&ts->results[FH_CALL_ENTER][FH_TIMEOUT], 1);
        return FH_TIMEOUT;
    }
    fh_bump(&ts->results[FH_CALL_ENTER][FH_OK], 1);
    return FH_OK;
}

/* The duration of `frame` (the top of the array) in ns at `now`. */
FH_INLINE uint64_t fh_frame_ns(const fh_thread *ts, const fh_frame *frame, uint64_t now)
{
    return fh_clock_to_ns(&ts->clock, now > frame->start ? now - frame->start : 0);
}

/* Pops `frame` (the top of the array), crediting its duration `ns` to the
 * frame below it (or the sentinel): exclusive time is self time, whatever
 * the kind of the frames nested inside. Returns its self time. */
FH_INLINE uint64_t fh_pop(fh_thread *ts, fh_frame *frame, uint32_t depth, uint64_t ns)
{
    assert(depth == ts->depth && depth - 1u < ts->capacity && frame == &ts->stack[depth - 1u]); /* the top one */
    fh_store(&ts->depth, depth - 1u);
    frame[-1].child_ns += ns;
    return frame->child_ns < ns ? ns - frame->child_ns : 0;
}

/* A close of a frame of `kind` that fh_close_finds did not find: a
 * protocol close goes to fh_close_other; a capture's, whose frame a new
 * session dropped since it looked (fh_captured_where), pops nothing, since
 * every entry without a kind is the protocol's. */
static FH_NOINLINE int fh_close_missed(fh_thread *ts, int call, uint32_t kind)
{
    if (!FH_TAG_CAPTURED(kind))
        return fh_close_other(ts, call);
    if (ts->depth > ts->capacity || (ts->depth > 0 && !FH_TAG_KIND_VALID(ts->stack[ts->depth - 1u].tag)))
        return fh_fail(ts, call);
    fh_bump(&ts->results[call][FH_NOT_OWNER], 1);
    return FH_NOT_OWNER;
}

/* The full close of a U frame of `kind` (the protocol's or a capture's);
 * `now` is the fast path's timestamp, or 0 when it took none (the state
 * was not synced yet). A nonzero `code` also records the call site (code,
 * where). */
static FH_NOINLINE int fh_enter_close(uint64_t now, uint64_t code, uint32_t where, uint32_t kind)
{
    FH_ENTER_CALL(ts, FH_CALL_ENTER, kind)
    if (now == 0)
        now = fh_clock_ticks(&ts->clock);
    if (!fh_close_finds(ts, kind))
        return fh_close_missed(ts, FH_CALL_ENTER, kind);
    uint32_t depth = ts->depth;
    fh_frame *frame = &ts->stack[depth - 1u];
    uint64_t inclusive = fh_frame_ns(ts, frame, now);
    uint64_t exclusive = fh_pop(ts, frame, depth, inclusive);
    fh_target *t = frame->target;
    fh_paged_record(ts, t->rows, inclusive);
    if (frame->child_ns != 0)
        fh_record_nested(ts, t, inclusive, exclusive);
    if (code != 0)
        fh_site_record(ts, code, where, t->address, inclusive, exclusive);
    return fh_enter_account(ts, t, inclusive, exclusive);
}

/* The timestamp that fh_enter_close takes first, for a caller with work to
 * do before it that the frame must not include: 0 when the thread is not
 * synced to the running session (fh_enter_close syncs it and takes one). */
FH_INLINE uint64_t fh_close_now(void)
{
    const fh_thread *ts = fh_current;
    return ts->gate == fh_load_acquire(&fh_rt.gate) ? fh_clock_ticks(&ts->clock) : 0;
}

/* fh_close_ready takes a call site's bucket from the frame's own. */
_Static_assert(FH_DEFAULT_PRECISION >= FH_SITE_PRECISION, "a call site's histogram is the coarser");

/* The call site's bucket index of each duration of the exact row 0 at the
 * default precision (below 2**FH_DEFAULT_PRECISION ns), for the fast close;
 * filled by fh_runtime_init. */
static uint8_t fh_site_bucket_of_small[1u << FH_DEFAULT_PRECISION];

/* What the fast close of the top frame found, before writing anything. */
typedef struct fh_close_plan {
    fh_thread *ts;
    fh_frame *frame;
    fh_site *site;    /* the call site's record, or NULL (no call site) */
    uint64_t *bucket; /* the inclusive duration's histogram bucket */
    uint64_t *site_bucket; /* the same in the call site's histogram */
    uint64_t now;     /* the close's timestamp; 0 when none was taken */
    uint64_t inclusive;
    uint32_t depth;
} fh_close_plan;

/* 1 when the close of the top frame can take the fast path: the thread is
 * synced, a U frame of `kind` with nothing nested in it is on top, its call site (if
 * `code` is not 0) is known and its histogram row exists. Writes nothing,
 * so a caller that gets 0 hands the whole close to fh_enter_close (with
 * plan->now). A `leaf` caller (one that makes no calls on its fast path, so
 * that it saves no registers) takes a clock that needs a call, a call site
 * missing from the recent cache, or a precision other than the default, as
 * a miss too. */
FH_INLINE int fh_close_ready(fh_close_plan *plan, uint64_t code, uint32_t where, int leaf, uint32_t kind)
{
    fh_thread *ts = fh_current;
    plan->ts = ts;
    plan->now = 0;
    if (FH_UNLIKELY(ts->gate != fh_load_acquire(&fh_rt.gate)))
        return 0;
    if (leaf && FH_UNLIKELY(!ts->leaf_ok))
        return 0;
    /* Timestamp first (after the gate check), for the same reason. */
    uint64_t now = plan->now = leaf ? fh_clock_ticks_inline(&ts->clock) : fh_clock_ticks(&ts->clock);
    uint32_t depth = plan->depth = ts->depth;
    if (FH_UNLIKELY(depth - 1u >= ts->capacity))
        return 0;
    fh_frame *frame = plan->frame = &ts->stack[depth - 1u];
    /* One comparison of the tag: a U frame of `kind` with no unrecorded
     * open on it. */
    if (FH_UNLIKELY(frame->tag != kind || frame->child_ns != 0))
        return 0;
    fh_target *t = frame->target;
    plan->site = NULL;
    if (code != 0) {
        fh_site *site = ts->recent_sites[fh_site_slot(code, where)];
        if (FH_UNLIKELY(site == NULL || site->code != code || site->where != where || site->target != t->address) &&
            (leaf || (site = fh_site_find(ts, code, where, t->address)) == NULL))
            return 0;
        plan->site = site;
    }
    uint64_t inclusive = plan->inclusive = fh_frame_ns(ts, frame, now);
    /* A leaf caller's bucket is at the default precision, whose shifts are
     * by constants: a variable shift ties up registers it does not have. */
    uint32_t slot;
    uint32_t r = leaf ? fh_bucket_row(inclusive, FH_DEFAULT_PRECISION, &slot)
                      : fh_bucket_row(inclusive, ts->precision, &slot);
    uint64_t *row = t->rows[r];
    if (FH_UNLIKELY(row == NULL))
        return 0;
    plan->bucket = &row[slot];
    if (plan->site != NULL) {
        /* The call site's bucket (a coarser precision). A leaf caller takes
         * it from the one above, which lies inside it: past the exact
         * buckets of row 0, a row at precision p is row + (p - q) at
         * precision q, and its bucket slot >> (p - q). */
        uint32_t site_slot, site_r;
        if (leaf && FH_LIKELY(r != 0)) {
            site_r = r + (FH_DEFAULT_PRECISION - FH_SITE_PRECISION);
            site_slot = slot >> (FH_DEFAULT_PRECISION - FH_SITE_PRECISION);
        } else if (leaf) {
            uint32_t index = fh_site_bucket_of_small[slot]; /* row 0: slot is the duration */
            site_r = index >> FH_SITE_PRECISION;
            site_slot = index & ((1u << FH_SITE_PRECISION) - 1u);
        } else {
            site_r = fh_bucket_row(inclusive, FH_SITE_PRECISION, &site_slot);
        }
        uint64_t *site_row = plan->site->rows[site_r];
        if (FH_UNLIKELY(site_row == NULL))
            return 0;
        plan->site_bucket = &site_row[site_slot];
    }
    return 1;
}

/* The fast close's writes, for a plan fh_close_ready accepted. */
FH_INLINE int fh_close_commit(const fh_close_plan *plan)
{
    fh_thread *ts = plan->ts;
    uint64_t inclusive = plan->inclusive;
    fh_pop(ts, plan->frame, plan->depth, inclusive);
    fh_bump(plan->bucket, 1);
    if (plan->site != NULL) {
        fh_site_add(plan->site, inclusive, inclusive);
        fh_bump(plan->site_bucket, 1);
    }
    return fh_enter_account(ts, plan->frame->target, inclusive, inclusive);
}

/* The fast close of a U frame of `kind`, with the call site (code, where)
 * when code is not 0: for the plain EnterRuntime the compiler drops every
 * site line. */
FH_INLINE int fh_enter_fast(uint64_t code, uint32_t where, uint32_t kind)
{
    fh_close_plan plan;
    if (!fh_close_ready(&plan, code, where, 0, kind))
        return fh_enter_close(plan.now, code, where, kind);
    return fh_close_commit(&plan);
}

/* EnterRuntime: the unmanaged call opened by LeaveRuntime has returned. */
FH_INLINE int fh_enter_runtime(void) { return fh_enter_fast(0, 0, FH_FRAME_UNMANAGED); }

/* Opens an M frame of `kind` (the protocol's or a capture's). */
FH_INLINE int fh_reverse_enter(uint32_t kind)
{
    FH_ENTER_CALL(ts, FH_CALL_REVERSE_ENTER, kind)
    int fast = ts->depth < ts->fast_depth;
    if (FH_UNLIKELY(!fast && !fh_room_slow(ts, kind)))
        return fh_open_refused(ts, FH_CALL_REVERSE_ENTER, FH_OUT_OF_MEMORY, kind);
    fh_frame *frame = fh_push(ts, kind, fast);
    frame->target = NULL;
    fh_bump(&ts->results[FH_CALL_REVERSE_ENTER][FH_OK], 1);
    frame->start = fh_clock_ticks(&ts->clock);
    return FH_OK;
}

/* Closes an M frame of `kind`. */
FH_INLINE int fh_reverse_leave(uint32_t kind)
{
    FH_ENTER_CALL(ts, FH_CALL_REVERSE_LEAVE, kind)
    uint64_t now = fh_clock_ticks(&ts->clock);
    if (FH_UNLIKELY(!fh_close_finds(ts, kind)))
        return fh_close_missed(ts, FH_CALL_REVERSE_LEAVE, kind);
    uint32_t depth = ts->depth;
    fh_frame *frame = &ts->stack[depth - 1u];
    uint64_t ns = fh_frame_ns(ts, frame, now);
    uint64_t exclusive = fh_pop(ts, frame, depth, ns);
    fh_bump(&ts->callback_calls, 1);
    fh_bump(&ts->callback_total_ns, ns);
    fh_bump(&ts->callback_exclusive_ns, exclusive);
    fh_minmax(&ts->callback_min_ns, &ts->callback_max_ns, ns);
    fh_bump(&ts->callback_counts[fh_bucket_index(ns, ts->precision)], 1);

    int result = FH_OK;
    if (FH_UNLIKELY(ns > ts->timeout_limit_ns))
        result = FH_TIMEOUT;
    fh_bump(&ts->results[FH_CALL_REVERSE_LEAVE][result], 1);
    return result;
}

/* ReverseEnterRuntime: unmanaged code calls back into managed code. */
FH_INLINE int fh_reverse_enter_runtime(void) { return fh_reverse_enter(FH_FRAME_MANAGED); }

/* ReverseLeaveRuntime: the callback returns to unmanaged code. */
FH_INLINE int fh_reverse_leave_runtime(void) { return fh_reverse_leave(FH_FRAME_MANAGED); }

/* The C API: the same four calls returning HRESULTs. Real functions, so
 * their addresses can go into the capsule table and to ctypes. */
static FH_UNUSED int32_t FH_API_LeaveRuntime(size_t target) { return fh_hresult_of[fh_leave_runtime(target)]; }
static FH_UNUSED int32_t FH_API_EnterRuntime(void) { return fh_hresult_of[fh_enter_runtime()]; }
static FH_UNUSED int32_t FH_API_ReverseLeaveRuntime(void) { return fh_hresult_of[fh_reverse_leave_runtime()]; }
static FH_UNUSED int32_t FH_API_ReverseEnterRuntime(void) { return fh_hresult_of[fh_reverse_enter_runtime()]; }

#endif /* FASTHOST_TRANSITIONS_H */
