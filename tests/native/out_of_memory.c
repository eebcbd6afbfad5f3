/* out_of_memory.c -- the core when a target finds no memory: an open
 * refused that way stays open, unrecorded, and nothing is recorded inside
 * it, so that unrecorded opens are always the newest entries, which the
 * captures' closes rely on to find their frames (fh_captured_where).
 *
 * Built and run by tests/test_out_of_memory.py against the core's headers,
 * with calloc replaced so that the test decides when memory runs out.
 * Prints one line per failed check and exits 1 if any failed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

static int out_of_memory;
static void *test_calloc(size_t count, size_t size) { return out_of_memory ? NULL : calloc(count, size); }
#define calloc test_calloc
#include "fh_runtime.h"
#undef calloc

static int failures;
#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            printf("FAILED line %d: %s\n", __LINE__, #cond);          \
            failures++;                                               \
        }                                                             \
    } while (0)

/* The next new target finds no memory: its arena is full and calloc fails. */
static void exhaust(void)
{
    fh_thread *ts = fh_current;
    if (ts->arena != NULL)
        ts->arena->used = ts->arena->size;
    out_of_memory = 1;
}

int main(void)
{
    CHECK(fh_runtime_init() == 0);
    fh_config config = {.max_depth = 8, .precision = 5, .max_targets = 64, .timeout_ns = 0};
    fh_clock clock = {.kind = FH_CLOCK_MONOTONIC, .ns_per_tick = 1ull << 32};
    fh_start(&config, &clock);

    /* Two known targets, then their frames closed: both are in the thread's
     * recent cache and its deepest depth is 2, so later opens of them up to
     * that depth take the fast path. */
    CHECK(fh_leave_runtime(0x10) == FH_OK && fh_leave_runtime(0x20) == FH_OK);
    CHECK(fh_enter_runtime() == FH_OK && fh_enter_runtime() == FH_OK);

    CHECK(fh_leave_runtime(0x10) == FH_OK);
    exhaust();
    CHECK(fh_leave_runtime(0x30) == FH_OUT_OF_MEMORY); /* unrecorded, on 0x10's frame */
    out_of_memory = 0;
    /* Inside it, a known target on the fast path's depth, a protocol M
     * frame, and a capture's frames: none is recorded. */
    CHECK(fh_leave_runtime(0x20) == FH_OUT_OF_MEMORY);
    CHECK(fh_reverse_enter_runtime() == FH_OUT_OF_MEMORY);
    CHECK(fh_leave(0x20, FH_FRAME_CAPTURED_UNMANAGED) == FH_OUT_OF_MEMORY);
    CHECK(fh_reverse_enter(FH_FRAME_CAPTURED_MANAGED) == FH_OUT_OF_MEMORY);
    /* One array frame (0x10's), three unrecorded protocol opens above it;
     * the captures' refused opens left no entry. */
    CHECK(fh_current->depth == 1 && fh_current_depth() == 4);
    /* The closes pair: the three unrecorded, then 0x10's own. */
    CHECK(fh_reverse_leave_runtime() == FH_CLR_NOT_AVAILABLE);
    CHECK(fh_enter_runtime() == FH_CLR_NOT_AVAILABLE);
    CHECK(fh_enter_runtime() == FH_CLR_NOT_AVAILABLE);
    CHECK(fh_enter_runtime() == FH_OK);
    CHECK(fh_current_depth() == 0);

    /* Once the unrecorded opens are closed, opens are recorded again, on
     * the fast path too. */
    CHECK(fh_leave_runtime(0x10) == FH_OK && fh_leave(0x20, FH_FRAME_CAPTURED_UNMANAGED) == FH_OK);
    CHECK(fh_current->fast_depth == 2);
    CHECK(fh_enter_fast(0, 0, FH_FRAME_CAPTURED_UNMANAGED) == FH_OK && fh_enter_runtime() == FH_OK);
    CHECK(fh_current_depth() == 0);

    /* The same with the array empty: the refused open is remembered below
     * it (where a new session sets frames aside), and still nothing opens
     * inside it, on the fast path neither (0x10 and 0x20 are known, at
     * depths seen before). */
    exhaust();
    CHECK(fh_leave_runtime(0x40) == FH_OUT_OF_MEMORY);
    out_of_memory = 0;
    CHECK(fh_leave_runtime(0x10) == FH_OUT_OF_MEMORY);
    CHECK(fh_leave(0x20, FH_FRAME_CAPTURED_UNMANAGED) == FH_OUT_OF_MEMORY);
    CHECK(fh_reverse_enter(FH_FRAME_CAPTURED_MANAGED) == FH_OUT_OF_MEMORY);
    CHECK(fh_current->depth == 0 && fh_current_depth() == 2);
    CHECK(fh_enter_runtime() == FH_CLR_NOT_AVAILABLE && fh_enter_runtime() == FH_CLR_NOT_AVAILABLE);
    CHECK(fh_current_depth() == 0);
    CHECK(fh_leave_runtime(0x10) == FH_OK && fh_enter_runtime() == FH_OK);

    /* An older session's entries set aside below the array are not opens
     * refused in this one: a new session records on top of them. */
    CHECK(fh_leave_runtime(0x10) == FH_OK);
    exhaust();
    CHECK(fh_leave_runtime(0x50) == FH_OUT_OF_MEMORY);
    out_of_memory = 0;
    fh_reset();
    CHECK(fh_leave_runtime(0x10) == FH_OK && fh_current_depth() == 3);
    CHECK(fh_enter_runtime() == FH_OK);
    CHECK(fh_enter_runtime() == FH_CLR_NOT_AVAILABLE && fh_enter_runtime() == FH_ABANDONED);
    CHECK(fh_current_depth() == 0);

    fh_stop();
    fh_reset();
    printf("out_of_memory: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
