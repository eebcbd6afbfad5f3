/* fh_state.h -- what a thread records into: the structs (frames, targets, call
 * sites, the thread state, the runtime), the per-thread arena they live in,
 * the target table, histogram rows and call-site records. Everything here
 * runs on the owning thread (see fh_runtime.h for the threading model).
 */
#ifndef FASTHOST_STATE_H
#define FASTHOST_STATE_H

#include <assert.h> /* the invariants; off in release builds (NDEBUG) */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fh_platform.h"
#include "fh_clock.h"
#include "fh_histogram.h"
#include "fh_protocol.h"
#include "fh_schema.h"

/* ---- data ---------------------------------------------------------------- */

typedef struct fh_config {
    uint32_t max_depth;
    uint32_t precision;
    uint32_t max_targets;
    uint64_t timeout_ns; /* 0: never */
} fh_config;

/* One unmanaged target as seen by one thread. Allocated from the thread's
 * arena the first time the thread calls it; histogram rows likewise. */
typedef struct fh_target {
    uint64_t address;
    FH_TARGET_RECORD(FH_MEMBER, FH_NOT_STORED) /* calls, total_ns, ... (fh_schema.h) */
    uint32_t overflow; /* 1: the row that folds targets past max_targets */
    uint32_t rows_per_hist;
    /* NESTED_INCLUSIVE rows then NESTED_EXCLUSIVE rows (2 x rows_per_hist);
     * allocated when the target's first frame with a callback closes. */
    uint64_t **nested;
    uint64_t *rows[]; /* INCLUSIVE rows */
} fh_target;

typedef struct fh_frame {
    uint64_t start;       /* clock ticks */
    uint64_t child_ns; /* recorded durations of the frames of either kind
                        * opened directly inside: in ns as recorded, so that
                        * self times partition the recorded time exactly */
    fh_target *target;    /* U frames only */
    /* The kind in the low byte; above it, the number of unrecorded opens
     * (refused at max_depth, or made while stopped) nested directly on top
     * of this frame. One word, so the fast close's single comparison
     * `tag == FH_FRAME_UNMANAGED` also rules out "an unrecorded open is on
     * top". */
    uint32_t tag;
    uint32_t unused;
} fh_frame;

#define FH_TAG_KIND(tag) ((tag) & 0xffu)
#define FH_TAG_ABOVE(tag) ((tag) >> 8)
#define FH_TAG_ONE_ABOVE (1u << 8)
#define FH_TAG_ABOVE_MAX 0xffffffu
/* A frame a capture opened (FH_FRAME_CAPTURED). */
#define FH_TAG_CAPTURED(tag) (((tag) & FH_FRAME_CAPTURED) != 0)
/* One of the four kinds, whoever opened it (any other byte is corruption). */
#define FH_TAG_KIND_VALID(tag) \
    ((FH_TAG_KIND(tag) | FH_FRAME_CAPTURED) == FH_FRAME_CAPTURED_UNMANAGED || \
     (FH_TAG_KIND(tag) | FH_FRAME_CAPTURED) == FH_FRAME_CAPTURED_MANAGED)

/* What lies below a thread's frame array: frames of older sessions and
 * unrecorded opens, set aside by a new session so that they use none of its
 * capacity. Only their order and whether each was recorded matter (a close
 * of one returns HOST_E_ABANDONED or HOST_E_CLRNOTAVAILABLE, whatever its
 * kind), so they are kept as runs. */
typedef struct fh_aside_run {
    uint64_t count;
    uint32_t abandoned; /* 1: frames of an older session; 0: unrecorded opens */
    uint32_t unused;
} fh_aside_run;

/* Runs kept per thread. A thread collects a new run only when a session
 * begins while it has frames open with unrecorded opens between them, so
 * past this many the two oldest runs are merged (as abandoned frames). */
#define FH_ASIDE_RUNS 16u

/* A call site: the Python code location (code object and instruction
 * offset, from a capture) that made calls to one target, with their
 * counts, times and a coarse histogram. Allocated from the thread's arena
 * the first time the thread closes a frame there; its histogram's rows
 * (64-bit counts, as a target's: one place can be called more than 2**32
 * times) the first time a duration reaches them. */
#define FH_SITE_PRECISION 3u /* 8 sub-buckets: quantiles within 12.5 % */
#define FH_SITE_ROWS (65u - FH_SITE_PRECISION)
#define FH_SITE_WIDTH (1u << FH_SITE_PRECISION) /* counts in a row */
#define FH_SITE_BUCKETS (FH_SITE_ROWS << FH_SITE_PRECISION)

typedef struct fh_site {
    uint64_t code;   /* the caller's code object (an address) */
    uint64_t target; /* the address called */
    uint32_t where;  /* the instruction's offset in the code, in bytes */
    uint32_t unused;
    FH_SITE_RECORD(FH_MEMBER, FH_NOT_STORED) /* calls, total_ns, exclusive_ns */
    uint64_t *rows[FH_SITE_ROWS]; /* inclusive durations; NULL: no count yet */
} fh_site;

typedef struct fh_site_entry {
    fh_site *site; /* NULL: empty */
} fh_site_entry;

typedef struct fh_target_entry {
    uint64_t address;
    fh_target *target; /* NULL: empty */
} fh_target_entry;

#define FH_RECENT_TARGETS 16u
#define FH_THREAD_NAME 32u
#define FH_RECENT_SITES 256u

/* Addresses the recent cache never holds: fasthost's own executable code
 * (found by the captures, fh_capture.h). The captures' fast paths take a
 * target only from that cache, so they never open a frame for one of
 * fasthost's own functions, even after someone passed its address to
 * LeaveRuntime; their full paths, which refuse those, see every call. */
static uintptr_t fh_own_code_start, fh_own_code_end;

/* The slot of `address` in fh_thread.recent. Functions start on 16-byte
 * boundaries, so bits 4 and up tell neighbours apart; folding in bits 12
 * and up separates functions at the same offset of different pages. Two
 * shifts, a xor and a mask: cheaper on the hot path than a multiply. */
static inline uint32_t fh_recent_slot(uint64_t address)
{
    return (uint32_t)(((address >> 4) ^ (address >> 12)) & (FH_RECENT_TARGETS - 1u));
}

typedef struct fh_arena_chunk {
    struct fh_arena_chunk *next;
    size_t size;
    size_t used;
    /* memory follows, 16-byte aligned */
} fh_arena_chunk;

typedef struct fh_thread {
    /* Hot: read or written by every call. */
    uint64_t gate;       /* the global gate this state is synced to */
    uint32_t depth;      /* frames in `stack`: this session's, recorded */
    /* Frames the array holds: 2 * max_depth, since the protocol's frames
     * and the captures' each get max_depth of their own (fh_has_room). */
    uint32_t capacity;
    /* min(max_depth - 1, max_depth_seen): an open below it takes the fast
     * path, which need not raise max_depth_seen nor count frames by kind.
     * Every frame from max_depth - 1 up is pushed by the slow path, which
     * keeps the count below true (fh_count_to). */
    uint32_t fast_depth;
    uint32_t max_depth;  /* of this state's session */
    /* The captured frames among stack[0..counted_depth), counted by
     * fh_room_slow (fh_count_to); both 0 when nothing is counted (then
     * fh_push's slow branch has nothing to move: no test fails). */
    uint32_t counted_depth;
    uint32_t counted_captured;
    fh_frame *stack;     /* stack[-1] is a sentinel (see fh_stack_new) */
    fh_clock clock;
    uint32_t precision;
    uint32_t epoch;
    /* The clock reads inline and the precision is the default: what a
     * leaf caller of fh_close_ready needs, in one test. */
    uint32_t leaf_ok;
    uint64_t timeout_limit_ns; /* timeout_ns, or UINT64_MAX for "never" */
    /* A direct-mapped cache in front of the target table: code that
     * alternates between a few functions (a profiled loop of builtins)
     * finds them here without a call into the table. */
    fh_target_entry recent[FH_RECENT_TARGETS];
    uint64_t results[FH_CALLS][FH_RESULTS];
    uint32_t max_depth_seen;
    uint32_t alive;

    /* Callbacks (M frames): one flat histogram per thread. */
    uint64_t *callback_counts;
    /* The counters of the thread record: callback_calls, ..., heap_bytes,
     * folded (fh_schema.h). */
    FH_THREAD_RECORD(FH_MEMBER, FH_NOT_STORED)

    /* Targets: `targets[0..ntargets)` is what readers see; the hash table
     * is the owner's private index into it. */
    fh_target **targets;
    uint32_t ntargets;
    uint32_t max_targets;
    fh_target *overflow_target;
    fh_target_entry *table;
    uint32_t table_mask;
    uint32_t table_used;

    /* Call sites, like targets: `sites[0..nsites)` is what readers see, the
     * hash table the owner's index (both in the arena: one session). At
     * most max_targets; past that, closes are counted in sites_dropped. */
    fh_site **sites;
    uint32_t nsites;
    uint32_t sites_capacity;
    fh_site_entry *site_table;
    uint32_t site_mask;
    uint32_t unused_site;
    uint64_t sites_dropped;
    struct fh_site *recent_sites[FH_RECENT_SITES];

    /* Open frames that are not in `stack`: the runs set aside below it,
     * and the unrecorded opens counted in its frames' tags. */
    fh_aside_run aside[FH_ASIDE_RUNS];
    uint32_t naside;
    uint64_t hidden; /* aside frames + unrecorded opens above frames */
    /* The newest of the set-aside entries that are this session's
     * unrecorded opens, made with the array empty: nothing opens on top of
     * them (fh_room_slow), as nothing opens on a frame that carries some. */
    uint64_t refused_below;

    fh_arena_chunk *arena;

    uint64_t tid;
    char name[FH_THREAD_NAME]; /* Python's name for it, else the OS's */
    struct fh_thread *next;
} fh_thread;

/* Forgets the count of captured frames (fh_count_to in fh_transitions.h):
 * the next open past max_depth counts from the bottom. */
static inline void fh_count_nothing(fh_thread *ts)
{
    ts->counted_depth = 0;
    ts->counted_captured = 0;
}

typedef struct fh_runtime {
    /* `gate` is the one global word the hot path reads: (epoch << 1) while
     * recording, | 1 once poisoned by E_FAIL, 0 when stopped. */
    uint64_t gate;
    uint32_t epoch; /* current session; readers compare thread epochs to it */
    int initialized;
    fh_config config;
    fh_clock clock;
    uint64_t unregistered_out_of_memory; /* calls refused before a state existed */
    pthread_mutex_t lock;                /* the registry; never on the fast path */
    fh_thread *threads;
    pthread_key_t exit_key;
    /* Threads that ended in this session keep rows of their own up to
     * FH_ENDED_THREADS_KEPT; the ones after are folded into `ended`. */
    uint32_t ended_kept;
    fh_thread *ended;
} fh_runtime;

#ifndef FH_ENDED_THREADS_KEPT /* the sanitizer harness folds after 2 */
#define FH_ENDED_THREADS_KEPT 64u
#endif

static fh_runtime fh_rt = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* What fh_current points at before a thread's first call and after it
 * ended: a state whose gate no session ever has (real gates are below
 * 2**34), so the fast path needs one comparison, `ts->gate == gate`, to
 * rule out "no state", "stopped" and "another session" alike. Never
 * written. */
static fh_thread fh_detached = {.gate = UINT64_MAX};
static FH_TLS fh_thread *fh_current = &fh_detached;

/* ---- arena --------------------------------------------------------------- */

#define FH_ARENA_FIRST_CHUNK 4096u
#define FH_ARENA_MAX_CHUNK 65536u
#define FH_ARENA_HEADER ((sizeof(fh_arena_chunk) + 15u) & ~(size_t)15u)

/* Zeroed memory that lives as long as the thread's session data. Chunks
 * grow geometrically so a thread with one target holds one small chunk. */
static void *fh_arena_alloc(fh_thread *ts, size_t size)
{
    size = (size + 15u) & ~(size_t)15u;
    fh_arena_chunk *chunk = ts->arena;
    if (chunk == NULL || chunk->size - chunk->used < size) {
        size_t want = chunk ? chunk->size * 2 : FH_ARENA_FIRST_CHUNK;
        if (want > FH_ARENA_MAX_CHUNK)
            want = FH_ARENA_MAX_CHUNK;
        if (want < size)
            want = size;
        chunk = (fh_arena_chunk *)calloc(1, FH_ARENA_HEADER + want);
        if (chunk == NULL)
            return NULL;
        chunk->size = want;
        chunk->used = 0;
        chunk->next = ts->arena;
        ts->arena = chunk;
        fh_bump(&ts->heap_bytes, FH_ARENA_HEADER + want);
    }
    void *p = (char *)chunk + FH_ARENA_HEADER + chunk->used;
    chunk->used += size;
    return p;
}

static void fh_arena_free(fh_thread *ts)
{
    fh_arena_chunk *chunk = ts->arena;
    while (chunk) {
        fh_arena_chunk *next = chunk->next;
        fh_store(&ts->heap_bytes, fh_load(&ts->heap_bytes) - FH_ARENA_HEADER - chunk->size);
        free(chunk);
        chunk = next;
    }
    ts->arena = NULL;
}

/* ---- targets ------------------------------------------------------------- */

static inline uint32_t fh_hash_address(uint64_t address, uint32_t mask)
{
    return (uint32_t)((address * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static fh_target *fh_target_new(fh_thread *ts, uint64_t address, uint32_t overflow)
{
    uint32_t rows = fh_bucket_rows(ts->precision);
    fh_target *t = (fh_target *)fh_arena_alloc(ts, sizeof(fh_target) + rows * sizeof(uint64_t *));
    if (t == NULL)
        return NULL;
    t->address = address;
    t->min_ns = UINT64_MAX;
    t->overflow = overflow;
    t->rows_per_hist = rows;
    assert(ts->ntargets <= ts->max_targets); /* targets[] has max_targets + 1 slots */
    /* Publish after the fields are written: a reader that sees the new
     * count sees an initialised target. */
    ts->targets[ts->ntargets] = t;
    fh_store_release(&ts->ntargets, ts->ntargets + 1);
    return t;
}

static int fh_table_grow(fh_thread *ts)
{
    uint32_t size = ts->table ? (ts->table_mask + 1u) * 2u : 64u;
    fh_target_entry *table = (fh_target_entry *)calloc(size, sizeof(fh_target_entry));
    if (table == NULL)
        return -1;
    if (ts->table) {
        for (uint32_t i = 0; i <= ts->table_mask; i++) {
            fh_target_entry e = ts->table[i];
            if (e.target == NULL)
                continue;
            uint32_t j = fh_hash_address(e.address, size - 1u);
            while (table[j].target != NULL)
                j = (j + 1u) & (size - 1u);
            table[j] = e;
        }
        free(ts->table);
        fh_store(&ts->heap_bytes, fh_load(&ts->heap_bytes) - (uint64_t)(ts->table_mask + 1u) * sizeof(fh_target_entry));
    }
    fh_bump(&ts->heap_bytes, (uint64_t)size * sizeof(fh_target_entry));
    ts->table = table;
    ts->table_mask = size - 1u;
    return 0;
}

/* The target's record for this thread; creates it on first sight, or folds
 * it into the overflow record past max_targets. NULL only without memory. */
static FH_NOINLINE fh_target *fh_target_lookup(fh_thread *ts, uint64_t address)
{
    fh_target *t;
    if (ts->table != NULL) {
        uint32_t i = fh_hash_address(address, ts->table_mask);
        while ((t = ts->table[i].target) != NULL) {
            if (ts->table[i].address == address)
                goto found;
            i = (i + 1u) & ts->table_mask;
        }
    }
    if (ts->ntargets - (ts->overflow_target != NULL) >= ts->max_targets) {
        if (ts->overflow_target == NULL)
            ts->overflow_target = fh_target_new(ts, 0, 1);
        t = ts->overflow_target;
        if (t == NULL)
            return NULL;
        goto found; /* not cached in the table: it stays bounded */
    }
    if ((ts->table_used + 1u) * 2u > ts->table_mask + 1u || ts->table == NULL) {
        if (fh_table_grow(ts) != 0)
            return NULL;
    }
    t = fh_target_new(ts, address, 0);
    if (t == NULL)
        return NULL;
    {
        uint32_t i = fh_hash_address(address, ts->table_mask);
        while (ts->table[i].target != NULL)
            i = (i + 1u) & ts->table_mask;
        ts->table[i].address = address;
        ts->table[i].target = t;
        ts->table_used++;
    }
found:
    if (address - fh_own_code_start >= fh_own_code_end - fh_own_code_start) {
        ts->recent[fh_recent_slot(address)].address = address;
        ts->recent[fh_recent_slot(address)].target = t;
    }
    return t;
}

/* ---- histograms ---------------------------------------------------------- */

static FH_NOINLINE uint64_t *fh_row_new(fh_thread *ts, uint64_t **slot, unsigned precision)
{
    uint64_t *row = (uint64_t *)fh_arena_alloc(ts, sizeof(uint64_t) << precision);
    if (row != NULL)
        fh_store_release(slot, row);
    return row;
}

/* Counts `ns` in a histogram of `precision` stored as rows made on first
 * use (a target's, a call site's); a row there is no memory for drops the
 * sample (counted). */
FH_INLINE void fh_paged_record_at(fh_thread *ts, uint64_t **rows, uint64_t ns, unsigned precision)
{
    uint32_t index = fh_bucket_index(ns, precision);
    uint64_t **slot = &rows[index >> precision];
    uint64_t *row = *slot;
    if (FH_UNLIKELY(row == NULL)) {
        int saved = errno;
        row = fh_row_new(ts, slot, precision);
        errno = saved;
        if (row == NULL) {
            fh_bump(&ts->dropped_samples, 1);
            return;
        }
    }
    fh_bump(&row[index & ((1u << precision) - 1u)], 1);
}

FH_INLINE void fh_paged_record(fh_thread *ts, uint64_t **rows, uint64_t ns)
{
    fh_paged_record_at(ts, rows, ns, ts->precision);
}

/* A frame that had callbacks inside: its exclusive duration differs. */
static FH_NOINLINE void fh_record_nested(fh_thread *ts, fh_target *t, uint64_t inclusive, uint64_t exclusive)
{
    uint64_t **nested = fh_load_acquire(&t->nested);
    if (nested == NULL) {
        int saved = errno;
        nested = (uint64_t **)fh_arena_alloc(ts, 2u * t->rows_per_hist * sizeof(uint64_t *));
        errno = saved;
        if (nested == NULL) {
            fh_bump(&ts->dropped_samples, 2);
            return;
        }
        fh_store_release(&t->nested, nested);
    }
    fh_paged_record(ts, nested, inclusive);
    fh_paged_record(ts, nested + t->rows_per_hist, exclusive);
}

/* ---- call sites ------------------------------------------------------------ */

/* The slot of a call site in fh_thread.recent_sites: a loop calling
 * builtins from a few dozen places finds them there, on the fast close.
 * The code object picks a base slot and the offset counts on from it, so
 * the calls of one function (at least 4 bytes apart) never evict each
 * other within 1 KiB of its bytecode; a hash of the offset would. The base
 * is a multiplicative hash of the address, not its low bits: code objects
 * of one size sit at the same offset of their allocator's pools, a
 * multiple of 4 KiB apart, and would all share one base. */
static inline uint32_t fh_site_slot(uint64_t code, uint32_t where)
{
    uint32_t base = (uint32_t)((code >> 4) * 0x9E3779B97F4A7C15ull >> 56);
    return (base + (where >> 2)) & (FH_RECENT_SITES - 1u);
}

static inline uint32_t fh_site_hash(uint64_t code, uint32_t where, uint64_t target, uint32_t mask)
{
    uint64_t key = code ^ ((uint64_t)where << 40) ^ (target * 0x9E3779B97F4A7C15ull);
    return (uint32_t)((key * 0xC2B2AE3D27D4EB4Full) >> 32) & mask;
}

/* Makes room for one more site: the published array and the hash table
 * double together (old arrays stay in the arena until the session ends;
 * readers see either). 0 without memory. */
static int fh_sites_grow(fh_thread *ts)
{
    uint32_t capacity = ts->sites_capacity ? ts->sites_capacity * 2u : 16u;
    fh_site **sites = (fh_site **)fh_arena_alloc(ts, capacity * sizeof(fh_site *));
    fh_site_entry *table = (fh_site_entry *)fh_arena_alloc(ts, 2u * capacity * sizeof(fh_site_entry));
    if (sites == NULL || table == NULL)
        return 0;
    uint32_t mask = 2u * capacity - 1u;
    for (uint32_t i = 0; i < ts->nsites; i++) {
        fh_site *site = ts->sites[i];
        sites[i] = site;
        uint32_t slot = fh_site_hash(site->code, site->where, site->target, mask);
        while (table[slot].site != NULL)
            slot = (slot + 1u) & mask;
        table[slot].site = site;
    }
    fh_store_release(&ts->sites, sites);
    ts->site_table = table;
    ts->site_mask = mask;
    ts->sites_capacity = capacity;
    return 1;
}

/* The site (code, where) -> target of this thread if it has one, also
 * put in the recent cache; NULL otherwise. */
static FH_NOINLINE fh_site *fh_site_find(fh_thread *ts, uint64_t code, uint32_t where, uint64_t target)
{
    if (ts->site_table == NULL)
        return NULL;
    uint32_t slot = fh_site_hash(code, where, target, ts->site_mask);
    for (fh_site *site; (site = ts->site_table[slot].site) != NULL; slot = (slot + 1u) & ts->site_mask) {
        if (site->code == code && site->where == where && site->target == target) {
            ts->recent_sites[fh_site_slot(code, where)] = site;
            return site;
        }
    }
    return NULL;
}

/* The site (code, where) -> target of this thread, made on first use;
 * NULL past max_targets sites or without memory. */
static fh_site *fh_site_lookup(fh_thread *ts, uint64_t code, uint32_t where, uint64_t target)
{
    fh_site *found = fh_site_find(ts, code, where, target);
    if (found != NULL)
        return found;
    if (ts->nsites >= ts->max_targets)
        return NULL;
    if (ts->nsites == ts->sites_capacity && !fh_sites_grow(ts))
        return NULL;
    fh_site *site = (fh_site *)fh_arena_alloc(ts, sizeof(fh_site));
    if (site == NULL)
        return NULL;
    site->code = code;
    site->where = where;
    site->target = target;
    assert(ts->nsites < ts->sites_capacity && ts->nsites < ts->max_targets);
    uint32_t slot = fh_site_hash(code, where, target, ts->site_mask);
    while (ts->site_table[slot].site != NULL)
        slot = (slot + 1u) & ts->site_mask;
    ts->site_table[slot].site = site;
    ts->sites[ts->nsites] = site;
    fh_store_release(&ts->nsites, ts->nsites + 1u);
    ts->recent_sites[fh_site_slot(code, where)] = site; /* for the fast close */
    return site;
}

/* A call site's counters (its histogram is counted apart). */
FH_INLINE void fh_site_add(fh_site *site, uint64_t inclusive, uint64_t exclusive)
{
    fh_bump(&site->calls, 1);
    fh_bump(&site->total_ns, inclusive);
    fh_bump(&site->exclusive_ns, exclusive);
}

static FH_NOINLINE void fh_site_record(fh_thread *ts, uint64_t code, uint32_t where, uint64_t target,
                                       uint64_t inclusive, uint64_t exclusive)
{
    int saved = errno;
    fh_site *site = fh_site_lookup(ts, code, where, target);
    errno = saved;
    if (site == NULL) {
        fh_bump(&ts->sites_dropped, 1);
        return;
    }
    fh_site_add(site, inclusive, exclusive);
    fh_paged_record_at(ts, site->rows, inclusive, FH_SITE_PRECISION);
}

/* Adds `n` relaxed-loaded counts from `src` into `dst`. */
static inline void fh_add_counts(uint64_t *dst, const uint64_t *src, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        dst[i] += fh_load(&src[i]);
}

FH_INLINE void fh_minmax(uint64_t *min_ns, uint64_t *max_ns, uint64_t ns)
{
    if (ns < *min_ns)
        fh_store(min_ns, ns);
    if (ns > *max_ns)
        fh_store(max_ns, ns);
}

#endif /* FASTHOST_STATE_H */
