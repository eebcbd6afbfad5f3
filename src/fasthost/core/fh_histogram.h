/* fh_histogram.h -- log-linear bucket arithmetic (HdrHistogram's layout).
 *
 * With p sub-bucket bits, values below 2**(p+1) get exact 1-ns buckets; each
 * later power of two [2**k, 2**(k+1)) is cut into 2**p equal buckets of width
 * 2**(k-p). A bucket's width is at most 2**-p of its lower edge, which is the
 * relative-error promise of docs/protocol.md §4. The index is branch-free:
 *
 *     shift = max(0, floor(log2 v) - p)        -- via clz of (v | 2**p)
 *     index = (shift << p) + (v >> shift)
 *
 * The buckets cover all of uint64 in (65 - p) rows of 2**p buckets; row r
 * holds indexes [r << p, (r+1) << p). Counts are split by row so that a
 * per-target histogram only stores the rows its durations actually reach.
 */
#ifndef FASTHOST_HISTOGRAM_H
#define FASTHOST_HISTOGRAM_H

#include "fh_platform.h"

#define FH_PRECISION_MIN 1
#define FH_PRECISION_MAX 8

FH_INLINE uint32_t fh_bucket_index(uint64_t value, unsigned precision)
{
    unsigned top = 63u - (unsigned)__builtin_clzll(value | (1ull << precision));
    unsigned shift = top - precision;
    return (shift << precision) + (uint32_t)(value >> shift);
}

/* fh_bucket_index(value, precision) as its row (index >> precision), with
 * its place in that row in *slot, in fewer operations (the hot path's). */
FH_INLINE uint32_t fh_bucket_row(uint64_t value, unsigned precision, uint32_t *slot)
{
    unsigned shift = 63u - (unsigned)__builtin_clzll(value | (1ull << precision)) - precision;
    uint64_t mantissa = value >> shift; /* below 2 << precision */
    *slot = (uint32_t)mantissa & ((1u << precision) - 1u);
    return shift + (uint32_t)(mantissa >> precision);
}

static inline uint32_t fh_bucket_rows(unsigned precision) { return 65u - precision; }

static inline uint32_t fh_bucket_count(unsigned precision)
{
    return fh_bucket_rows(precision) << precision;
}

/* Smallest value that lands in bucket `index`. */
static inline uint64_t fh_bucket_lower(uint32_t index, unsigned precision)
{
    uint32_t row = index >> precision;
    if (row == 0)
        return index;
    uint64_t offset = index & ((1u << precision) - 1u);
    return ((1ull << precision) + offset) << (row - 1);
}

#endif /* FASTHOST_HISTOGRAM_H */
