/* fh_runtime.h -- the transition protocol: per-thread stacks of frames,
 * counters and histograms, kept without locks.
 *
 * One translation unit includes this file and owns the runtime (the Cython
 * module `fasthost._core`, or the plain-C sanitizer harness). Other native
 * code reaches that runtime through fasthost.h and a capsule, never by
 * including this header, which would give it a runtime of its own.
 *
 * Threading model.
 *   - Each thread that makes a call gets an fh_thread, allocated on its first
 *     call, put on the registry list (the only lock, taken once per thread)
 *     and reached afterwards through one initial-exec TLS pointer.
 *   - Only the owning thread writes its fh_thread. Readers (snapshot) load
 *     the counters relaxed; structure that appears later (targets, histogram
 *     rows) is published with a release store and read with an acquire load.
 *   - Sessions are numbered (epochs). start() and reset() hand out a new
 *     epoch; a thread notices on its next call and zeroes its own data there
 *     (so no other thread ever writes it). Readers ignore threads whose data
 *     belongs to an older epoch.
 *   - The stack mirrors the real nesting whatever happens: every open is
 *     remembered, recorded or not, so that its close pops it and nothing
 *     else. A thread's recorded frames of this session are in `stack`; when
 *     a new session reaches the thread, they are set aside below it (as
 *     runs: `aside`), so each session has its full max_depth; an open that
 *     is not recorded (refused, or made while stopped) is a count on the
 *     frame it nests in. Closes pop set-aside frames as HOST_E_ABANDONED and
 *     unrecorded opens as HOST_E_CLRNOTAVAILABLE.
 *   - Readers, start() and reset() are serialised by their caller (the GIL
 *     in the Python module, a mutex in the C harness), so a thread's data
 *     can only be zeroed or freed while no reader looks at it.
 *   - The hot path touches one global word (`gate`), read-only, and the
 *     thread's own memory. Anything unusual (first call, new epoch, error,
 *     poisoned state, new target) goes to an out-of-line slow path.
 */
#ifndef FASTHOST_RUNTIME_H
#define FASTHOST_RUNTIME_H

#include <assert.h> /* the invariants below; off in release builds (NDEBUG) */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fh_platform.h"
#include "fh_clock.h"
#include "fh_histogram.h"
#include "fh_schema.h"
#include "fh_test_api.h"

/* ---- protocol vocabulary ------------------------------------------------ */

/* Calls, in the order of the CLR's IHostTaskManager IDL. */
enum fh_call {
    FH_CALL_LEAVE = 0,
    FH_CALL_ENTER = 1,
    FH_CALL_REVERSE_LEAVE = 2,
    FH_CALL_REVERSE_ENTER = 3,
    FH_CALLS = 4
};

/* Results, as small indexes; fh_hresult_of maps them to HRESULTs. */
enum fh_result {
    FH_OK = 0,
    FH_CLR_NOT_AVAILABLE = 1,
    FH_TIMEOUT = 2,
    FH_NOT_OWNER = 3,
    FH_ABANDONED = 4,
    FH_FAIL = 5,
    FH_OUT_OF_MEMORY = 6,
    FH_RESULTS = 7
};

static const int32_t fh_hresult_of[FH_RESULTS] = {
    (int32_t)0x00000000u, /* S_OK */
    (int32_t)0x80131023u, /* HOST_E_CLRNOTAVAILABLE */
    (int32_t)0x80131024u, /* HOST_E_TIMEOUT */
    (int32_t)0x80131025u, /* HOST_E_NOT_OWNER */
    (int32_t)0x80131026u, /* HOST_E_ABANDONED */
    (int32_t)0x80004005u, /* E_FAIL */
    (int32_t)0x8007000Eu, /* E_OUTOFMEMORY */
};

/* Frame kinds are distinct non-zero bytes so that a zeroed or overwritten
 * frame is recognised as corruption rather than read as a valid kind. */
enum fh_frame_kind { FH_FRAME_UNMANAGED = 0x55, FH_FRAME_MANAGED = 0x4d };

/* The histograms a snapshot reads. Exclusive durations are not kept as
 * such: a frame without callbacks inside has exclusive == inclusive, so only
 * frames with callbacks keep both (NESTED_*), and
 *     exclusive = INCLUSIVE - NESTED_INCLUSIVE + NESTED_EXCLUSIVE
 * bucket by bucket, exactly. The common close records one histogram. */
enum fh_hist_kind {
    FH_HIST_INCLUSIVE = 0,        /* all U frames of a target */
    FH_HIST_NESTED_INCLUSIVE = 1, /* U frames with M frames inside */
    FH_HIST_NESTED_EXCLUSIVE = 2, /* the same frames, exclusive durations */
    FH_HIST_CALLBACK = 3,         /* M frames, per thread */
};

#define FH_DEFAULT_MAX_DEPTH 256u
#define FH_DEFAULT_PRECISION 5u
#define FH_DEFAULT_MAX_TARGETS 1024u
#define FH_MAX_DEPTH_LIMIT (1u << 20)
#define FH_MAX_TARGETS_LIMIT (1u << 20)

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
 * the first time the thread closes a frame there. */
#define FH_SITE_PRECISION 3u /* 8 sub-buckets: quantiles within 12.5 % */
#define FH_SITE_BUCKETS ((65u - FH_SITE_PRECISION) << FH_SITE_PRECISION)

typedef struct fh_site {
    uint64_t code;   /* the caller's code object (an address) */
    uint64_t target; /* the address called */
    uint32_t where;  /* the instruction's offset in the code, in bytes */
    uint32_t unused;
    FH_SITE_RECORD(FH_MEMBER, FH_NOT_STORED) /* calls, total_ns, exclusive_ns */
    uint32_t counts[FH_SITE_BUCKETS]; /* inclusive durations */
} fh_site;

typedef struct fh_site_entry {
    fh_site *site; /* NULL: empty */
} fh_site_entry;

typedef struct fh_target_entry {
    uint64_t address;
    fh_target *target; /* NULL: empty */
} fh_target_entry;

#define FH_RECENT_TARGETS 16u
#define FH_RECENT_SITES 256u

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
    uint32_t capacity;   /* max_depth of this state's session */
    fh_frame *stack;     /* stack[-1] is a sentinel (see fh_stack_new) */
    fh_clock clock;
    uint32_t precision;
    uint32_t epoch;
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

    fh_arena_chunk *arena;

    uint64_t tid;
    char name[16];
    struct fh_thread *next;
} fh_thread;

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
    ts->recent[fh_recent_slot(address)].address = address;
    ts->recent[fh_recent_slot(address)].target = t;
    return t;
}

/* ---- histograms ---------------------------------------------------------- */

static FH_NOINLINE uint64_t *fh_row_new(fh_thread *ts, uint64_t **slot)
{
    uint64_t *row = (uint64_t *)fh_arena_alloc(ts, sizeof(uint64_t) << ts->precision);
    if (row != NULL)
        fh_store_release(slot, row);
    return row;
}

FH_INLINE void fh_paged_record(fh_thread *ts, uint64_t **rows, uint64_t ns)
{
    uint32_t index = fh_bucket_index(ns, ts->precision);
    uint64_t **slot = &rows[index >> ts->precision];
    uint64_t *row = *slot;
    if (FH_UNLIKELY(row == NULL)) {
        int saved = errno;
        row = fh_row_new(ts, slot);
        errno = saved;
        if (row == NULL) {
            fh_bump(&ts->dropped_samples, 1);
            return;
        }
    }
    fh_bump(&row[index & ((1u << ts->precision) - 1u)], 1);
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
 * other within 1 KiB of its bytecode; a hash of the offset would. */
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

FH_INLINE void fh_site_add(fh_site *site, uint64_t inclusive, uint64_t exclusive)
{
    fh_bump(&site->calls, 1);
    fh_bump(&site->total_ns, inclusive);
    fh_bump(&site->exclusive_ns, exclusive);
    uint32_t *bucket = &site->counts[fh_bucket_index(inclusive, FH_SITE_PRECISION)];
    fh_store(bucket, *bucket + 1u);
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
    if (--run->count == 0)
        ts->naside = n - 1u;
    fh_store(&ts->hidden, ts->hidden - 1u);
    return abandoned;
}

/* A new session begins for this thread: every open frame, and every
 * unrecorded open between them, is set aside, so the session starts with
 * its full max_depth whatever the thread carried over. */
static void fh_set_aside(fh_thread *ts)
{
    for (uint32_t i = 0; i < ts->depth; i++) {
        uint32_t above = FH_TAG_ABOVE(ts->stack[i].tag);
        fh_store(&ts->hidden, ts->hidden - above); /* counted again below */
        fh_aside_push(ts, 1, 1);
        fh_aside_push(ts, 0, above);
    }
    fh_store(&ts->depth, 0);
}

/* An open that is not recorded (refused, or made while not recording)
 * still nests: it is remembered on top of the stack, so that its close pops
 * it and not the frame beneath. Only the top frame can carry such opens (a
 * refusal leaves the array full; a stop is followed by a new session). */
static void fh_push_unrecorded(fh_thread *ts)
{
    if (ts->depth == 0) {
        fh_aside_push(ts, 0, 1);
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

/* A close made while not recording (stopped or poisoned): pops what it
 * closes when that can be told, records nothing. A close of the wrong kind
 * leaves everything as it is. */
static void fh_close_unrecorded(fh_thread *ts, uint32_t kind)
{
    uint32_t depth = ts->depth;
    if (depth > ts->capacity)
        return; /* corrupted: the next recorded call will say so */
    if (fh_pop_hidden(ts) < 0 && depth > 0 && ts->stack[depth - 1u].tag == kind)
        fh_store(&ts->depth, depth - 1u);
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
    fh_set_aside(ts);
    if (ts->stack == NULL || ts->capacity != cfg->max_depth) {
        fh_frame *stack = fh_stack_new(cfg->max_depth);
        if (stack == NULL)
            return -1;
        if (ts->stack != NULL)
            free(ts->stack - 1);
        fh_bump(&ts->heap_bytes, ((uint64_t)cfg->max_depth - ts->capacity) * sizeof(fh_frame) +
                                     (ts->stack == NULL ? sizeof(fh_frame) : 0));
        ts->stack = stack;
        ts->capacity = cfg->max_depth;
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
    memset(ts->results, 0, sizeof(ts->results));
    ts->max_depth_seen = 0;
    ts->callback_calls = ts->callback_total_ns = ts->callback_exclusive_ns = ts->callback_max_ns = 0;
    ts->callback_min_ns = UINT64_MAX;
    ts->exit_abandoned = dropped;
    ts->dropped_samples = 0;
    ts->gate = gate & ~(uint64_t)1;
    fh_store_release(&ts->epoch, (uint32_t)(gate >> 1));
    return 0;
}

static void fh_thread_exit(void *arg);

static fh_thread *fh_thread_create(void)
{
    fh_thread *ts = (fh_thread *)calloc(1, sizeof(fh_thread));
    if (ts == NULL)
        return NULL;
    ts->gate = UINT64_MAX; /* no session until adopted: the fast paths stay out */
    ts->heap_bytes = sizeof(fh_thread);
    ts->tid = fh_os_tid();
    pthread_getname_np(pthread_self(), ts->name, sizeof(ts->name));
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
        if (dst[r] == NULL && fh_row_new(into, &dst[r]) == NULL)
            return -1;
        if (add)
            fh_add_counts(dst[r], src[r], 1u << into->precision);
    }
    return 0;
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
        for (uint32_t b = 0; b < FH_SITE_BUCKETS; b++)
            d->counts[b] += f->counts[b];
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
    fh_store(&ts->hidden, 0);
    pthread_mutex_lock(&fh_rt.lock);
    /* Under the lock, the session cannot change: reset() reaps under it. */
    int folded = ts->epoch == fh_load(&fh_rt.epoch) && fh_thread_fold_ended(ts);
    if (!folded)
        fh_store_release(&ts->alive, 0); /* from here reset() may free it */
    pthread_mutex_unlock(&fh_rt.lock);
}

/* ---- slow paths ---------------------------------------------------------- */

/* Poisons recording: called when a thread's state breaks an invariant. The
 * stack cannot be trusted, so it is dropped with everything set aside;
 * counters survive. */
static FH_COLD int fh_fail(fh_thread *ts, int call)
{
    uint64_t gate = fh_load(&fh_rt.gate);
    fh_store(&ts->depth, 0);
    ts->naside = 0;
    fh_store(&ts->hidden, 0);
    fh_bump(&ts->results[call][FH_FAIL], 1);
    while (gate != 0 && !(gate & 1u)) {
        if (__atomic_compare_exchange_n(&fh_rt.gate, &gate, gate | 1u, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            break;
    }
    return FH_FAIL;
}

/* Opening calls are LEAVE and REVERSE_ENTER; the kind each call opens or
 * closes, by call. */
static const uint32_t fh_kind_of_call[FH_CALLS] = {FH_FRAME_UNMANAGED, FH_FRAME_UNMANAGED, FH_FRAME_MANAGED,
                                                   FH_FRAME_MANAGED};
#define FH_CALL_OPENS(call) ((call) == FH_CALL_LEAVE || (call) == FH_CALL_REVERSE_ENTER)

/* Everything the fast path's one comparison `ts->gate == gate` rules out:
 * no state yet, a new session, not recording, a poisoned session. Returns
 * the state to use, or NULL with *result set when the call ends here. A
 * call made while not recording still keeps the nesting (an open is
 * remembered, a close pops), so that the frames around it stay true. */
static FH_NOINLINE fh_thread *fh_sync(uint64_t gate, int call, int *result)
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
        if (FH_CALL_OPENS(call))
            fh_push_unrecorded(ts);
        else
            fh_close_unrecorded(ts, fh_kind_of_call[call]);
        if (gate != 0)
            fh_bump(&ts->results[call][FH_CLR_NOT_AVAILABLE], 1); /* poisoned: counted */
        *result = FH_CLR_NOT_AVAILABLE;
        return NULL;
    }
    return ts;
}

/* Fetches the caller's state for `call`, or returns from the caller. */
#define FH_ENTER_CALL(ts, call)                                          \
    uint64_t gate_ = fh_load_acquire(&fh_rt.gate);                       \
    fh_thread *ts = fh_current;                                          \
    if (FH_UNLIKELY(ts->gate != gate_)) {                                \
        int result_;                                                     \
        ts = fh_sync(gate_, (call), &result_);                           \
        if (ts == NULL)                                                  \
            return result_;                                              \
    }

/* An open refused with `result` (E_OUTOFMEMORY): nothing is recorded, but
 * the open is remembered so that its close pairs with it. */
static FH_NOINLINE int fh_open_refused(fh_thread *ts, int call, int result)
{
    if (ts->depth > ts->capacity)
        return fh_fail(ts, call);
    fh_push_unrecorded(ts);
    fh_bump(&ts->results[call][result], 1);
    return result;
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
        uint32_t kind = depth > 0 ? FH_TAG_KIND(ts->stack[depth - 1u].tag) : FH_FRAME_UNMANAGED;
        if (kind != FH_FRAME_UNMANAGED && kind != FH_FRAME_MANAGED)
            return fh_fail(ts, call);
        result = FH_NOT_OWNER; /* an empty stack, or the other kind on top */
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

FH_INLINE fh_frame *fh_push(fh_thread *ts, uint32_t kind)
{
    uint32_t depth = ts->depth;
    assert(depth < ts->capacity); /* every caller refuses a full array first */
    fh_frame *frame = &ts->stack[depth];
    frame->tag = kind;
    frame->child_ns = 0;
    fh_store(&ts->depth, depth + 1u);
    if (FH_UNLIKELY(depth + 1u > ts->max_depth_seen))
        fh_store(&ts->max_depth_seen, depth + 1u);
    return frame;
}

FH_INLINE int fh_leave_push(fh_thread *ts, fh_target *t)
{
    fh_frame *frame = fh_push(ts, FH_FRAME_UNMANAGED);
    frame->target = t;
    fh_bump(&ts->results[FH_CALL_LEAVE][FH_OK], 1);
    /* Timestamp last, so the frame excludes our own bookkeeping. */
    frame->start = fh_clock_ticks(&ts->clock);
    return FH_OK;
}

static FH_NOINLINE int fh_leave_runtime_full(uint64_t target)
{
    FH_ENTER_CALL(ts, FH_CALL_LEAVE)
    if (FH_UNLIKELY(ts->depth >= ts->capacity))
        return fh_open_refused(ts, FH_CALL_LEAVE, FH_OUT_OF_MEMORY);
    fh_target_entry *recent = &ts->recent[fh_recent_slot(target)];
    fh_target *t = recent->target;
    if (t == NULL || recent->address != target) {
        int saved = errno;
        t = fh_target_lookup(ts, target);
        errno = saved;
        if (FH_UNLIKELY(t == NULL))
            return fh_open_refused(ts, FH_CALL_LEAVE, FH_OUT_OF_MEMORY);
    }
    return fh_leave_push(ts, t);
}

/* LeaveRuntime: managed code is about to call `target` (unmanaged). */
FH_INLINE int fh_leave_runtime(uint64_t target)
{
    fh_thread *ts = fh_current;
    fh_target_entry *recent = &ts->recent[fh_recent_slot(target)];
    fh_target *t = recent->target;
    if (FH_UNLIKELY(ts->gate != fh_load_acquire(&fh_rt.gate) || ts->depth >= ts->capacity || t == NULL ||
                    recent->address != target))
        return fh_leave_runtime_full(target);
    return fh_leave_push(ts, t);
}

/* What every close of a U frame records besides its histogram: the
 * target's counters, the timeout, the result. Returns the result. */
FH_INLINE int fh_enter_account(fh_thread *ts, fh_target *t, uint64_t inclusive, uint64_t exclusive)
{
    fh_bump(&t->calls, 1);
    fh_bump(&t->total_ns, inclusive);
    fh_bump(&t->exclusive_ns, exclusive);
    fh_minmax(&t->min_ns, &t->max_ns, inclusive);
    int result = FH_OK;
    if (FH_UNLIKELY(inclusive > ts->timeout_limit_ns)) {
        fh_bump(&t->timeouts, 1);
        result = FH_TIMEOUT;
    }
    fh_bump(&ts->results[FH_CALL_ENTER][result], 1);
    return result;
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

/* The full close; `now` is the fast path's timestamp, or 0 when it took
 * none (the state was not synced yet). A nonzero `code` also records the
 * call site (code, where). */
static FH_NOINLINE int fh_enter_close(uint64_t now, uint64_t code, uint32_t where)
{
    FH_ENTER_CALL(ts, FH_CALL_ENTER)
    if (now == 0)
        now = fh_clock_ticks(&ts->clock);
    uint32_t depth = ts->depth;
    if (FH_UNLIKELY(depth - 1u >= ts->capacity || ts->stack[depth - 1u].tag != FH_FRAME_UNMANAGED))
        return fh_close_other(ts, FH_CALL_ENTER);
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

/* The fast close, with the call site (code, where) when code is not 0:
 * for the plain EnterRuntime the compiler drops every site line. */
FH_INLINE int fh_enter_fast(uint64_t code, uint32_t where)
{
    fh_thread *ts = fh_current;
    if (FH_UNLIKELY(ts->gate != fh_load_acquire(&fh_rt.gate)))
        return fh_enter_close(0, code, where);
    /* Timestamp first (after the gate check), for the same reason. */
    uint64_t now = fh_clock_ticks(&ts->clock);
    uint32_t depth = ts->depth;
    if (FH_UNLIKELY(depth - 1u >= ts->capacity))
        return fh_enter_close(now, code, where);
    fh_frame *frame = &ts->stack[depth - 1u];
    /* One comparison of the tag: a U frame with no unrecorded open on it. */
    if (FH_UNLIKELY(frame->tag != FH_FRAME_UNMANAGED || frame->child_ns != 0))
        return fh_enter_close(now, code, where);
    fh_target *t = frame->target;
    fh_site *site = NULL;
    if (code != 0) {
        site = ts->recent_sites[fh_site_slot(code, where)];
        if (FH_UNLIKELY(site == NULL || site->code != code || site->where != where || site->target != t->address) &&
            (site = fh_site_find(ts, code, where, t->address)) == NULL)
            return fh_enter_close(now, code, where);
    }
    uint64_t inclusive = fh_frame_ns(ts, frame, now);
    uint32_t index = fh_bucket_index(inclusive, ts->precision);
    uint64_t *row = t->rows[index >> ts->precision];
    if (FH_UNLIKELY(row == NULL))
        return fh_enter_close(now, code, where);
    fh_pop(ts, frame, depth, inclusive);
    fh_bump(&row[index & ((1u << ts->precision) - 1u)], 1);
    if (code != 0)
        fh_site_add(site, inclusive, inclusive);
    return fh_enter_account(ts, t, inclusive, inclusive);
}

/* EnterRuntime: the unmanaged call opened by LeaveRuntime has returned. */
FH_INLINE int fh_enter_runtime(void) { return fh_enter_fast(0, 0); }

/* EnterRuntime for a capture that knows where the call was made: the
 * caller's code object and the call's offset in it, recorded as a call
 * site of the frame's target. */
FH_INLINE int fh_enter_runtime_at(uint64_t code, uint32_t where) { return fh_enter_fast(code, where); }

/* ReverseEnterRuntime: unmanaged code calls back into managed code. */
FH_INLINE int fh_reverse_enter_runtime(void)
{
    FH_ENTER_CALL(ts, FH_CALL_REVERSE_ENTER)
    if (FH_UNLIKELY(ts->depth >= ts->capacity))
        return fh_open_refused(ts, FH_CALL_REVERSE_ENTER, FH_OUT_OF_MEMORY);
    fh_frame *frame = fh_push(ts, FH_FRAME_MANAGED);
    frame->target = NULL;
    fh_bump(&ts->results[FH_CALL_REVERSE_ENTER][FH_OK], 1);
    frame->start = fh_clock_ticks(&ts->clock);
    return FH_OK;
}

/* ReverseLeaveRuntime: the callback returns to unmanaged code. */
FH_INLINE int fh_reverse_leave_runtime(void)
{
    FH_ENTER_CALL(ts, FH_CALL_REVERSE_LEAVE)
    uint64_t now = fh_clock_ticks(&ts->clock);
    uint32_t depth = ts->depth;
    if (FH_UNLIKELY(depth - 1u >= ts->capacity || ts->stack[depth - 1u].tag != FH_FRAME_MANAGED))
        return fh_close_other(ts, FH_CALL_REVERSE_LEAVE);
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

/* The C API: the same four calls returning HRESULTs. Real functions, so
 * their addresses can go into the capsule table and to ctypes. */
static FH_UNUSED int32_t FH_API_LeaveRuntime(size_t target) { return fh_hresult_of[fh_leave_runtime(target)]; }
static FH_UNUSED int32_t FH_API_EnterRuntime(void) { return fh_hresult_of[fh_enter_runtime()]; }
static FH_UNUSED int32_t FH_API_ReverseLeaveRuntime(void) { return fh_hresult_of[fh_reverse_leave_runtime()]; }
static FH_UNUSED int32_t FH_API_ReverseEnterRuntime(void) { return fh_hresult_of[fh_reverse_enter_runtime()]; }

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
        memmove(&ts->stack[i], &ts->stack[i + 1u], (size_t)(depth - 1u - i) * sizeof(fh_frame));
        fh_store(&ts->depth, depth - 1u);
        if (i == depth - 1u && above > 0) {
            /* The unrecorded opens it carried go to what is now on top. */
            if (i > 0) {
                ts->stack[i - 1u].tag += above << 8;
            } else {
                fh_store(&ts->hidden, ts->hidden - above);
                fh_aside_push(ts, 0, above);
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

/* 1 when the newest open entry of the calling thread is a recorded U frame
 * (what makes a Python function that starts now a callback). */
static inline int fh_top_is_unmanaged(void)
{
    const fh_thread *ts = fh_current;
    uint32_t depth = ts->depth;
    return depth - 1u < ts->capacity && ts->stack[depth - 1u].tag == FH_FRAME_UNMANAGED;
}

/* Open frames on the calling thread: recorded, set aside, unrecorded. */
static inline uint64_t fh_current_depth(void) { return fh_current->depth + fh_current->hidden; }

/* ---- reading (snapshot side; caller holds fh_rt.lock and is serialised
 * against start/reset) ----------------------------------------------------- */

static inline void fh_registry_lock(void) { pthread_mutex_lock(&fh_rt.lock); }
static inline void fh_registry_unlock(void) { pthread_mutex_unlock(&fh_rt.lock); }
static inline uint64_t fh_read_u64(const uint64_t *p) { return fh_load(p); }
static inline uint32_t fh_read_u32(const uint32_t *p) { return fh_load(p); }

static inline int fh_thread_in_session(const fh_thread *ts)
{
    return fh_load_acquire(&ts->epoch) == fh_load(&fh_rt.epoch);
}

static inline uint32_t fh_thread_ntargets(const fh_thread *ts) { return fh_load_acquire(&ts->ntargets); }

/* The thread's published call sites: the count first, then the array (a
 * grown array is published before the count that needs it). */
static inline uint32_t fh_thread_nsites(const fh_thread *ts) { return fh_load_acquire(&ts->nsites); }
static inline fh_site **fh_thread_sites(fh_thread *ts) { return fh_load_acquire(&ts->sites); }

static inline uint64_t *fh_read_row(uint64_t *const *slot) { return fh_load_acquire((uint64_t **)slot); }

/* The target's NESTED_INCLUSIVE then NESTED_EXCLUSIVE rows, or NULL. */
static inline uint64_t **fh_read_nested(fh_target *t) { return fh_load_acquire(&t->nested); }

/* The records of fh_schema.h, one row each: the columns in table order. */
#define FH_THREAD_COLUMNS (0 FH_THREAD_RECORD(FH_COLUMN, FH_COLUMN_V))
#define FH_TARGET_COLUMNS (0 FH_TARGET_RECORD(FH_COLUMN, FH_COLUMN_V))
#define FH_SITE_COLUMNS (0 FH_SITE_RECORD(FH_COLUMN, FH_COLUMN_V))
#define FH_ROW_COLUMNS (0 FH_ROW_RECORD(FH_COLUMN, FH_COLUMN_V))

#define FH_COPY_SOURCE ts
static inline void fh_copy_thread_record(const fh_thread *ts, uint64_t *out)
{
    FH_THREAD_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}
#undef FH_COPY_SOURCE
#define FH_COPY_SOURCE t
static inline void fh_copy_target_record(uint64_t thread, const fh_target *t, uint64_t *out)
{
    FH_TARGET_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}
#undef FH_COPY_SOURCE
#define FH_COPY_SOURCE site
static inline void fh_copy_site_record(uint64_t thread, const fh_site *site, uint64_t *out)
{
    FH_SITE_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}
#undef FH_COPY_SOURCE
static inline void fh_copy_row_record(int64_t thread, int64_t target, int64_t kind, int64_t row, long long *out)
{
    FH_ROW_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}

/* The schema _core exports: every record's columns, in order. */
static const fh_field fh_thread_schema[] = {FH_THREAD_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_target_schema[] = {FH_TARGET_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_site_schema[] = {FH_SITE_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_row_schema[] = {FH_ROW_RECORD(FH_FIELD, FH_FIELD_V)};


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

#endif /* FASTHOST_RUNTIME_H */
