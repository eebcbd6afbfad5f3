/* stress.c -- the C core under concurrency, without Python: built and run
 * under ThreadSanitizer and AddressSanitizer by run.sh.
 *
 * Phase 1 (chaos): writers make every kind of call (pairs, nesting, protocol
 * errors, new targets past max_targets, threads ending with frames open),
 * and nesting writers make correctly nested calls and check that their depth
 * is 0 after each outermost close, while a reader copies what snapshot() and
 * memory_usage() copy (every thread state, in session or not) and a
 * controller calls stop(), start() and reset() with frames in flight. The
 * reader and the controller share one mutex, as snapshot() and reset()
 * share the GIL in the Python module.
 * Closes record call sites too, half of them the way a capture's callback
 * does (fh_close_ready with `leaf`: the site's bucket taken from the
 * target's), and the reader copies the sites' histograms as snapshot()
 * does: each holds the calls its record says, give or take the one close
 * in flight on its thread.
 * Phase 2 (exact): a fresh session, writers doing plain pairs; the totals
 * read afterwards must be exactly threads x pairs, and each call site's
 * histogram exactly its calls.
 */
#define _GNU_SOURCE
#define FH_ENDED_THREADS_KEPT 2u /* writers that end are folded, under the reader */
#include <stdio.h>
#include <time.h>

#include "fh_runtime.h"

#define WRITERS 4
#define CHAOS_ITERATIONS 100000
#define EXACT_PAIRS 100000

static pthread_mutex_t controller = PTHREAD_MUTEX_INITIALIZER;
static int stop_reader, stop_controller;
static fh_config chaos_config = {.max_depth = 64, .precision = 5, .max_targets = 128, .timeout_ns = 500};
static fh_clock chaos_clock;
static int failures;
static volatile uint64_t sink; /* keeps the reads from being optimised away */

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "stress: FAILED: %s\n", what);
        __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
    }
}

/* The kind of U frame site_open opens and site_close closes: a capture's
 * when `leaf`, else the protocol's. */
#define SITE_KIND(leaf) ((leaf) ? FH_FRAME_CAPTURED_UNMANAGED : FH_FRAME_UNMANAGED)

/* What the caller of site_open keeps for its close: the open's result and,
 * as a capture keeps it, its position. */
typedef struct {
    int result;
    uint64_t position;
} site_ticket;

static site_ticket site_open(uint64_t target, int leaf)
{
    site_ticket ticket = {.result = fh_leave(target, SITE_KIND(leaf))};
    ticket.position = fh_current_depth() - 1u; /* after the open: it may join a new session */
    return ticket;
}

/* A close at the call site (code, where): as a capture makes it when
 * `leaf` (none for an open that was refused, which left no entry; then by
 * its position, the fast close with `leaf` when it is the newest entry),
 * else through the C API's path. */
static int site_close(site_ticket ticket, uint64_t code, uint32_t where, int leaf)
{
    if (!leaf)
        return fh_enter_fast(code, where, SITE_KIND(leaf));
    if (ticket.result != FH_OK)
        return ticket.result;
    uint32_t joined = fh_current->epoch;
    int state = fh_captured_where(ticket.position, SITE_KIND(leaf));
    if (state != FH_CAPTURED_NEWEST)
        return state == FH_CAPTURED_COVERED ? fh_abandon_entry(ticket.position) : FH_CLR_NOT_AVAILABLE;
    fh_close_plan plan;
    int result = fh_close_ready(&plan, code, where, 1, SITE_KIND(leaf))
                     ? fh_close_commit(&plan)
                     : fh_enter_close(plan.now, code, where, SITE_KIND(leaf));
    /* The controller runs without the GIL that keeps a capture's look and
     * close together (and start() apart from both): a session started in
     * between dropped the frame (the close pops nothing): the close made
     * the thread join it. (Not told by the runtime's gate or epoch: the
     * controller may have stopped again since, and a start() stores its
     * epoch before its gate.) */
    return result == FH_NOT_OWNER && fh_current->epoch != joined ? FH_ABANDONED : result;
}

static void *chaos_writer(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < CHAOS_ITERATIONS; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        uint64_t target = 0x1000 + seed % 300; /* > max_targets: overflow row */
        switch (seed % 8) {
        case 0:
        case 1:
            fh_leave_runtime(target);
            fh_enter_runtime();
            break;
        case 7: /* past max_targets sites too: dropped */
            site_close(site_open(target, (seed >> 24) & 1), 0x7000 + (seed >> 8) % 4 * 16,
                       (uint32_t)(seed >> 16) % 50 * 2, (seed >> 24) & 1);
            break;
        case 2:
            fh_leave_runtime(target);
            fh_reverse_enter_runtime();
            fh_leave_runtime(target + 1);
            fh_enter_runtime();
            fh_reverse_leave_runtime();
            fh_enter_runtime();
            break;
        case 3:
            fh_enter_runtime(); /* NOT_OWNER (or closes a leftover frame) */
            break;
        case 4:
            fh_reverse_enter_runtime();
            break;
        case 5:
            fh_reverse_leave_runtime();
            break;
        default:
            fh_leave_runtime(seed); /* wide addresses, long durations */
            break;
        }
    }
    return NULL; /* usually with frames open: abandoned at exit */
}

/* Correct nesting only (U M U, and a refused level past max_depth): the
 * stack must mirror it whatever the controller does meanwhile. */
static void *nesting_writer(void *arg)
{
    (void)arg;
    site_ticket tickets[70];
    for (int i = 0; i < CHAOS_ITERATIONS / 4; i++) {
        int levels = 1 + i % 70; /* past max_depth (64) now and then */
        uint64_t entries = 0;    /* a capture's refused open leaves none */
        for (int l = 0; l < levels; l++) {
            if (l % 2)
                fh_reverse_enter_runtime();
            else
                tickets[l] = site_open(0x2000 + (uint64_t)l, i & 1);
            entries += l % 2 || !(i & 1) || tickets[l].result == FH_OK;
        }
        /* (A new session drops a capture's frames: a capture's round can
         * only have fewer.) */
        check(i & 1 ? fh_current_depth() <= entries : fh_current_depth() == entries, "depth is the nesting");
        for (int l = levels - 1; l >= 0; l--) {
            int result = l % 2 ? fh_reverse_leave_runtime() : site_close(tickets[l], 0x8000, (uint32_t)l, i & 1);
            check(result != FH_NOT_OWNER && result != FH_FAIL, "a correctly nested close is never refused");
        }
        check(fh_current_depth() == 0, "depth 0 after the outermost close");
    }
    return NULL;
}

/* stop(), start() and reset() at random moments, under the reader's mutex. */
static void *controller_main(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg | 1u, rounds = 0;
    while (!__atomic_load_n(&stop_controller, __ATOMIC_ACQUIRE)) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        pthread_mutex_lock(&controller);
        switch (seed % 3) {
        case 0:
            fh_stop();
            break;
        case 1:
            fh_start(&chaos_config, &chaos_clock);
            break;
        default:
            fh_reset();
            break;
        }
        pthread_mutex_unlock(&controller);
        rounds++;
        struct timespec pause = {0, 300000};
        nanosleep(&pause, NULL);
    }
    printf("stress: controller made %llu stop/start/reset calls\n", (unsigned long long)rounds);
    return NULL;
}

/* What memory_usage() reads: every state, in session or not. */
static uint64_t read_memory(void)
{
    uint64_t seen = 0;
    fh_registry_lock();
    for (fh_thread *ts = fh_rt.threads; ts; ts = ts->next)
        seen += ts->tid + fh_read_u32(&ts->alive) + fh_read_u64(&ts->heap_bytes) + fh_thread_ntargets(ts) +
                fh_read_u32(&ts->depth) + fh_read_u64(&ts->hidden) + (uint64_t)fh_thread_in_session(ts);
    fh_registry_unlock();
    return seen;
}

/* A call site's calls read before and after its histogram, and the
 * histogram's total. */
static void read_site(fh_site *site, uint64_t *before, uint64_t *total, uint64_t *after)
{
    *before = fh_read_u64(&site->calls);
    *total = 0;
    for (uint32_t r = 0; r < FH_SITE_ROWS; r++) {
        const uint64_t *row = fh_site_row(site, r); /* as snapshot() reads it */
        uint64_t counts[FH_SITE_WIDTH] = {0};
        if (row != NULL)
            fh_add_counts(counts, row, FH_SITE_WIDTH);
        for (uint32_t b = 0; b < FH_SITE_WIDTH; b++)
            *total += counts[b];
    }
    *after = fh_read_u64(&site->calls);
}

/* Every call site of `ts`: its histogram holds what its calls say, but for
 * a close in flight on the owning thread (its calls counted, its bucket
 * not yet, or the other way round). Returns the sites' calls. */
static uint64_t read_sites(fh_thread *ts, int exact)
{
    uint64_t calls = 0;
    uint32_t n = fh_thread_nsites(ts);
    fh_site **sites = fh_thread_sites(ts);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t before, total, after;
        read_site(sites[i], &before, &total, &after);
        check(before <= after, "a site's calls never go down");
        check(total + 1u >= before && total <= after + 1u, "a site's histogram holds its calls");
        if (exact)
            check(total == before && before == after, "a site's histogram holds exactly its calls");
        calls += after;
    }
    return calls;
}

static uint64_t read_everything(void)
{
    uint64_t calls = 0, seen = read_memory();
    uint64_t counts[1u << FH_PRECISION_MAX];
    fh_registry_lock();
    for (fh_thread *ts = fh_rt.threads; ts; ts = ts->next) {
        if (!fh_thread_in_session(ts))
            continue;
        for (int c = 0; c < FH_CALLS; c++)
            for (int r = 0; r < FH_RESULTS; r++)
                calls += fh_read_u64(&ts->results[c][r]);
        seen += fh_read_u32(&ts->depth) + fh_read_u64(&ts->heap_bytes) + fh_read_u32(&ts->alive);
        uint32_t width = 1u << ts->precision, rows = fh_bucket_rows(ts->precision);
        memset(counts, 0, sizeof(counts));
        for (uint32_t r = 0; r < rows; r++)
            fh_add_counts(counts, &ts->callback_counts[r * width], width);
        uint32_t n = fh_thread_ntargets(ts);
        for (uint32_t i = 0; i < n; i++) {
            fh_target *t = ts->targets[i];
            seen += t->address + fh_read_u64(&t->calls) + fh_read_u64(&t->total_ns) + fh_read_u64(&t->min_ns);
            uint64_t **nested = fh_read_nested(t);
            for (uint32_t r = 0; r < t->rows_per_hist; r++) {
                uint64_t *rows[3] = {fh_read_row(&t->rows[r]), NULL, NULL};
                if (nested) {
                    rows[1] = fh_read_row(&nested[r]);
                    rows[2] = fh_read_row(&nested[r + t->rows_per_hist]);
                }
                for (int k = 0; k < 3; k++)
                    if (rows[k])
                        fh_add_counts(counts, rows[k], width);
            }
        }
        seen += counts[0] + read_sites(ts, 0);
    }
    fh_registry_unlock();
    sink = seen;
    return calls;
}

static void *reader(void *arg)
{
    (void)arg;
    uint64_t reads = 0;
    while (!__atomic_load_n(&stop_reader, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&controller);
        read_everything();
        pthread_mutex_unlock(&controller);
        reads++;
        /* Let the controller get the mutex: an immediate re-lock starves it. */
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    check(reads > 0, "the reader ran");
    printf("stress: reader copied every thread %llu times\n", (unsigned long long)reads);
    return NULL;
}

static void run_threads(void *(*fn)(void *), int n)
{
    pthread_t threads[WRITERS];
    for (int i = 0; i < n; i++)
        check(pthread_create(&threads[i], NULL, fn, (void *)(uintptr_t)(i + 1)) == 0, "pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
}

static void *chaos_or_nesting_writer(void *arg)
{
    return (uintptr_t)arg % 2 ? chaos_writer(arg) : nesting_writer(arg);
}

static void *exact_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < EXACT_PAIRS; i++) {
        site_ticket ticket = site_open(0xE0, i % 3 != 0);
        check(ticket.result == FH_OK, "leave S_OK");
        check(site_close(ticket, 0xC0DE, (uint32_t)i % 4u * 2u, i % 3 != 0) == FH_OK, "enter S_OK");
    }
    return NULL;
}

/* After the exact writers ended (two kept, two folded into the ended row):
 * each site's histogram is exactly its calls, and they add up to them. */
static uint64_t read_exact_sites(void)
{
    uint64_t calls = 0;
    fh_registry_lock();
    for (fh_thread *ts = fh_rt.threads; ts; ts = ts->next)
        if (fh_thread_in_session(ts))
            calls += read_sites(ts, 1);
    fh_registry_unlock();
    return calls;
}

int main(void)
{
    check(fh_runtime_init() == 0, "runtime init");
    fh_config config = chaos_config;
    fh_clock clock = {.kind = FH_CLOCK_MONOTONIC, .ns_per_tick = 1ull << 32};
    if (fh_tsc_is_invariant()) {
        clock.kind = FH_CLOCK_TSC;
        clock.ns_per_tick = fh_tsc_calibrate(2000000);
    }
    chaos_clock = clock;
    fh_start(&config, &clock);

    /* Phase 1: chaos, with a concurrent reader and stop/start/reset. */
    pthread_t reader_thread, controller_thread;
    check(pthread_create(&reader_thread, NULL, reader, NULL) == 0, "reader thread");
    check(pthread_create(&controller_thread, NULL, controller_main, (void *)(uintptr_t)0x5eed) == 0,
          "controller thread");
    for (int round = 0; round < 3; round++)
        run_threads(chaos_or_nesting_writer, WRITERS);
    __atomic_store_n(&stop_controller, 1, __ATOMIC_RELEASE);
    pthread_join(controller_thread, NULL);
    __atomic_store_n(&stop_reader, 1, __ATOMIC_RELEASE);
    pthread_join(reader_thread, NULL);

    /* Phase 2: exact totals (no timeout: sanitizers make calls slow). */
    config.timeout_ns = 0;
    pthread_mutex_lock(&controller);
    fh_stop();
    fh_start(&config, &clock);
    pthread_mutex_unlock(&controller);
    run_threads(exact_writer, WRITERS);
    uint64_t calls = read_everything();
    check(calls == (uint64_t)WRITERS * EXACT_PAIRS * 2u, "exact totals after the writers ended");
    check(read_exact_sites() == (uint64_t)WRITERS * EXACT_PAIRS, "every close at its call site, once");

    fh_stop();
    fh_reset(); /* frees the ended threads' states: LeakSanitizer checks */
    printf("stress: %d writers x %d chaos iterations x 3 rounds, %llu exact calls: %s\n", WRITERS,
           CHAOS_ITERATIONS, (unsigned long long)calls, failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
