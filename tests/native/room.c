/* room.c -- where the core refuses opens, against a model: the protocol's
 * frames and the captures' each have max_depth of their own, nothing opens
 * on top of an unrecorded open, and a capture's refused open leaves no
 * entry. Random sequences of the four kinds of open, closes of the newest
 * entry, protocol closes that abandon the captured frames they straddle,
 * captured frames abandoned in place and new sessions, at small max_depth
 * values, so that the count of each side's frames (fh_room_slow, which
 * keeps it across calls) is taken from every kind of stack.
 *
 * Built and run by tests/test_room.py against the core's headers. Prints
 * the first difference and exits 1 if there is one.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "fh_runtime.h"

/* The model's entries, oldest first: what fh_current_depth() counts. */
enum { PU, PM, CU, CM, REFUSED, ASIDE, ASIDE_REFUSED };
static const uint32_t kinds[4] = {FH_FRAME_UNMANAGED, FH_FRAME_MANAGED, FH_FRAME_CAPTURED_UNMANAGED,
                                  FH_FRAME_CAPTURED_MANAGED};
static int model[1 << 12];
/* A set-aside unrecorded open that may have merged into a run of frames. */
#define ASIDE_EITHER (-2)
#define SAME(got, expected) \
    ((got) == (expected) || ((expected) == ASIDE_EITHER && ((got) == FH_CLR_NOT_AVAILABLE || (got) == FH_ABANDONED)))
static int entries;

static unsigned rng_state;
static unsigned next_random(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 16) & 0x7fffu;
}

static int side_count(int captured)
{
    int n = 0;
    for (int i = 0; i < entries; i++)
        n += model[i] <= CM && (model[i] >= CU) == captured;
    return n;
}

/* What an open of `kind` returns in the model, which it updates. */
static int model_open(int kind, uint32_t max_depth)
{
    int captured = kind >= CU;
    int top_refused = entries > 0 && model[entries - 1] == REFUSED;
    if (top_refused || side_count(captured) >= (int)max_depth) {
        if (!captured)
            model[entries++] = REFUSED;
        return FH_OUT_OF_MEMORY;
    }
    model[entries++] = kind;
    return FH_OK;
}

/* A protocol close of `kind` (PU or PM) in the model. */
static int model_protocol_close(int kind)
{
    if (entries == 0)
        return FH_NOT_OWNER;
    int top = model[entries - 1];
    if (top == REFUSED) {
        entries--;
        return FH_CLR_NOT_AVAILABLE;
    }
    if (top == ASIDE || top == ASIDE_REFUSED) {
        /* Past FH_ASIDE_RUNS sessions the oldest runs merge into frames. */
        entries--;
        return top == ASIDE ? FH_ABANDONED : ASIDE_EITHER;
    }
    int below = entries;
    while (below > 0 && (model[below - 1] == CU || model[below - 1] == CM))
        below--;
    if (below == entries && top != kind)
        return FH_NOT_OWNER;
    if (below < entries) {
        /* Captured frames on top: the close abandons them when the entry
         * beneath is its own kind or set aside. */
        if (below == 0 || (model[below - 1] != kind && model[below - 1] != ASIDE && model[below - 1] != ASIDE_REFUSED))
            return FH_NOT_OWNER;
        entries = below;
        return model_protocol_close(kind);
    }
    entries--;
    return FH_OK;
}

static int real_open(int kind)
{
    if (kind == PU || kind == CU)
        return fh_leave(0x1000u + 16u * (next_random() % 4u), kinds[kind]);
    return fh_reverse_enter(kinds[kind]);
}

static int real_close(int kind)
{
    if (kind == PU || kind == CU)
        return fh_enter_fast(0, 0, kinds[kind]);
    return fh_reverse_leave(kinds[kind]);
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 200000;
    if (fh_runtime_init() != 0)
        return 2;
    fh_clock clock = {.kind = FH_CLOCK_MONOTONIC, .ns_per_tick = 1ull << 32};
    static const uint32_t depths[] = {1, 2, 3, 4, 7};
    for (unsigned seed = 1; seed <= 40; seed++) {
        rng_state = seed;
        uint32_t max_depth = depths[seed % 5u];
        fh_config config = {.max_depth = max_depth, .precision = 5, .max_targets = 64, .timeout_ns = 0};
        fh_start(&config, &clock);
        entries = 0;
        for (int step = 0; step < steps; step++) {
            unsigned roll = next_random() % 100u;
            int expected, got;
            const char *what;
            if (roll < 45 && entries < (1 << 12) - 1) {
                int kind = (int)(next_random() % 4u);
                what = "open";
                expected = model_open(kind, max_depth);
                got = real_open(kind);
            } else if (roll < 85 && entries > 0 && (model[entries - 1] == CU || model[entries - 1] == CM)) {
                what = "captured close";
                int kind = model[--entries];
                expected = FH_OK;
                got = real_close(kind);
            } else if (roll < 90 && entries > 0) {
                /* A captured frame abandoned in place, as a capture does
                 * with one that protocol frames cover. */
                int position = (int)(next_random() % (unsigned)entries);
                if (model[position] != CU && model[position] != CM)
                    continue;
                what = "abandon";
                for (int i = position; i + 1 < entries; i++)
                    model[i] = model[i + 1];
                entries--;
                expected = 0;
                got = fh_abandon_entry((uint64_t)position);
            } else if (roll < 99) {
                /* Mostly the kind of the newest protocol frame. */
                int newest = entries;
                while (newest > 0 && model[newest - 1] != PU && model[newest - 1] != PM)
                    newest--;
                int kind = newest > 0 && next_random() % 4u != 0 ? model[newest - 1] : (int)(next_random() % 2u);
                what = "protocol close";
                expected = model_protocol_close(kind);
                got = real_close(kind);
            } else {
                /* A new session, sometimes with another max_depth: the
                 * protocol's entries are set aside, the captures' dropped. */
                what = "reset";
                int kept = 0;
                for (int i = 0; i < entries; i++) {
                    if (model[i] == PU || model[i] == PM || model[i] == ASIDE)
                        model[kept++] = ASIDE;
                    else if (model[i] == REFUSED || model[i] == ASIDE_REFUSED)
                        model[kept++] = ASIDE_REFUSED;
                }
                entries = kept;
                if (next_random() % 2u) {
                    fh_reset();
                } else {
                    /* Another max_depth: the frame array is made anew. */
                    fh_stop();
                    max_depth = config.max_depth = depths[next_random() % 5u];
                    fh_start(&config, &clock);
                }
                expected = got = 0;
                fh_leave(0x1000u, kinds[CU]); /* joins the session */
                fh_enter_fast(0, 0, kinds[CU]);
            }
            if (!SAME(got, expected) || fh_current_depth() != (uint64_t)entries) {
                printf("seed %u max_depth %u step %d: %s returned %d, the model %d; depth %llu, the model %d\n", seed,
                       max_depth, step, what, got, expected, (unsigned long long)fh_current_depth(), entries);
                return 1;
            }
        }
        /* The closes that empty the stack, so the next seed starts empty. */
        while (entries > 0) {
            int top = model[entries - 1];
            int kind = top == CU || top == CM ? top : top == PM ? PM : PU;
            int expected = top == CU || top == CM ? (entries--, FH_OK) : model_protocol_close(kind);
            int got = real_close(kind);
            if (!SAME(got, expected) || fh_current_depth() != (uint64_t)entries) {
                printf("seed %u: a close that drains returned %d, the model %d; depth %llu, the model %d\n", seed, got,
                       expected, (unsigned long long)fh_current_depth(), entries);
                return 1;
            }
        }
        fh_stop();
        fh_reset();
    }
    printf("room: ok\n");
    return 0;
}
