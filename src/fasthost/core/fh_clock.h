/* fh_clock.h -- the time sources of the core.
 *
 * Frames store raw ticks; a closing call converts one difference to ns with a
 * 32.32 fixed-point multiply, so the hot path never divides.
 *   tsc       rdtsc, calibrated against CLOCK_MONOTONIC; only where the CPU
 *             says its TSC is invariant (constant rate, runs in deep C-states)
 *   monotonic clock_gettime(CLOCK_MONOTONIC), already ns
 *   manual    a counter only tests move (fh_clock_set_manual): exact,
 *             repeatable durations for the reference-model tests
 */
#ifndef FASTHOST_CLOCK_H
#define FASTHOST_CLOCK_H

#include <time.h>
#include "fh_platform.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <x86intrin.h>
#define FH_HAVE_RDTSC 1
#else
#define FH_HAVE_RDTSC 0
#endif

typedef enum fh_clock_kind {
    FH_CLOCK_TSC = 0,
    FH_CLOCK_MONOTONIC = 1,
    FH_CLOCK_MANUAL = 2,
} fh_clock_kind;

typedef struct fh_clock {
    int kind;              /* fh_clock_kind */
    uint64_t ns_per_tick;  /* 32.32 fixed point */
} fh_clock;

static uint64_t fh_manual_now;

static inline uint64_t fh_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

FH_INLINE uint64_t fh_clock_ticks(const fh_clock *clock)
{
#if FH_HAVE_RDTSC
    if (FH_LIKELY(clock->kind == FH_CLOCK_TSC))
        return __rdtsc();
#endif
    if (clock->kind == FH_CLOCK_MONOTONIC)
        return fh_monotonic_ns();
    return fh_load(&fh_manual_now);
}

/* Whether fh_clock_ticks reads `clock` without a call (rdtsc, or the
 * manual clock): callers whose fast path must stay free of calls (so that
 * it saves no registers) leave a monotonic clock to their slow path. */
FH_INLINE int fh_clock_is_inline(const fh_clock *clock) { return clock->kind != FH_CLOCK_MONOTONIC; }

/* fh_clock_ticks for a clock that fh_clock_is_inline accepted. */
FH_INLINE uint64_t fh_clock_ticks_inline(const fh_clock *clock)
{
#if FH_HAVE_RDTSC
    if (FH_LIKELY(clock->kind == FH_CLOCK_TSC))
        return __rdtsc();
#else
    (void)clock;
#endif
    return fh_load(&fh_manual_now);
}

FH_INLINE uint64_t fh_clock_to_ns(const fh_clock *clock, uint64_t ticks)
{
    return (uint64_t)(((unsigned __int128)ticks * clock->ns_per_tick) >> 32);
}

static inline void fh_clock_set_manual(uint64_t ns) { fh_store(&fh_manual_now, ns); }

/* Invariant TSC: CPUID 0x80000007, EDX bit 8. */
static inline int fh_tsc_is_invariant(void)
{
#if FH_HAVE_RDTSC
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid_max(0x80000000u, NULL) < 0x80000007u)
        return 0;
    __cpuid(0x80000007u, eax, ebx, ecx, edx);
    (void)eax; (void)ebx; (void)ecx;
    return (edx >> 8) & 1u;
#else
    return 0;
#endif
}

/* Measures the TSC rate against CLOCK_MONOTONIC over `window_ns` and returns
 * ns per tick in 32.32 fixed point (0 when the TSC is unusable). Called once
 * per process, with the GIL, from start(). */
static inline uint64_t fh_tsc_calibrate(uint64_t window_ns)
{
#if FH_HAVE_RDTSC
    uint64_t t0 = fh_monotonic_ns(), c0 = __rdtsc(), t1, c1;
    do {
        t1 = fh_monotonic_ns();
        c1 = __rdtsc();
    } while (t1 - t0 < window_ns);
    if (c1 <= c0)
        return 0;
    return (uint64_t)((((unsigned __int128)(t1 - t0)) << 32) / (c1 - c0));
#else
    (void)window_ns;
    return 0;
#endif
}

#endif /* FASTHOST_CLOCK_H */
