/* fh_schema.h -- the records the core hands to Python, each in one table.
 *
 * A record is one row of a numpy array that fasthost._core fills from the
 * core's state: a thread, a (thread, target) pair, a histogram row, a call
 * site, a row of a call site's histogram. Each record is an X-macro table
 * of its columns, in order, and that table is the one place a column is
 * written down. From it come:
 *
 *   - the members of the C struct that stores the column (`S` entries);
 *   - the copy of one record into a row (fh_copy_*_record);
 *   - the schema _core exports (name, C type, role), from which the export
 *     layer builds its numpy dtypes, the file checks, and what diff does
 *     with each column.
 *
 * Entries:
 *   S(name, ctype, role)          stored: a member `name` of the struct,
 *                                 read with a relaxed atomic load;
 *   V(name, ctype, role, value)   computed: `value`, an expression over the
 *                                 copy function's arguments.
 *
 * Roles: KEY (identifies the row), COUNTER (grows: a diff subtracts it),
 * GAUGE (a level: a diff keeps the later one), MIN and MAX (extremes: a
 * diff bounds them by the interval's histogram).
 *
 * Adding a per-thread counter is one S line in FH_THREAD_RECORD.
 */
#ifndef FASTHOST_SCHEMA_H
#define FASTHOST_SCHEMA_H

#include <stdint.h>

#define FH_ROLE_KEY 0
#define FH_ROLE_COUNTER 1
#define FH_ROLE_GAUGE 2
#define FH_ROLE_MIN 3
#define FH_ROLE_MAX 4

/* A thread (fh_thread `ts`). */
#define FH_THREAD_RECORD(S, V)                                                  \
    V(tid, uint64_t, KEY, ts->tid)                                              \
    V(alive, uint32_t, GAUGE, fh_load(&ts->alive))                              \
    S(exit_abandoned, uint64_t, COUNTER)  /* frames open when it ended */      \
    V(depth, uint32_t, GAUGE, fh_load(&ts->depth) + fh_load(&ts->hidden))       \
    V(max_depth, uint32_t, MAX, fh_load(&ts->max_depth_seen))                   \
    S(callback_calls, uint64_t, COUNTER)                                        \
    S(callback_total_ns, uint64_t, COUNTER)                                     \
    S(callback_exclusive_ns, uint64_t, COUNTER) /* minus frames inside */      \
    S(callback_min_ns, uint64_t, MIN)                                           \
    S(callback_max_ns, uint64_t, MAX)                                           \
    S(dropped_samples, uint64_t, COUNTER) /* durations without a row */        \
    S(heap_bytes, uint64_t, GAUGE)        /* everything this state holds */    \
    S(folded, uint64_t, GAUGE)            /* ended threads folded into it */

/* A (thread, target) pair (fh_target `t` of the thread at index `thread`). */
#define FH_TARGET_RECORD(S, V)                                                  \
    V(thread, uint64_t, KEY, thread)                                            \
    V(target, uint64_t, KEY, t->address)                                        \
    S(calls, uint64_t, COUNTER)                                                 \
    S(total_ns, uint64_t, COUNTER)                                              \
    S(exclusive_ns, uint64_t, COUNTER)                                          \
    S(min_ns, uint64_t, MIN)                                                    \
    S(max_ns, uint64_t, MAX)                                                    \
    S(timeouts, uint64_t, COUNTER)                                              \
    V(overflow, uint32_t, KEY, t->overflow)

/* A call site (fh_site `site` of the thread at index `thread`). */
#define FH_SITE_RECORD(S, V)                                                    \
    V(thread, uint64_t, KEY, thread)                                            \
    V(code, uint64_t, KEY, site->code)                                          \
    V(where, uint32_t, KEY, site->where)                                        \
    V(target, uint64_t, KEY, site->target)                                      \
    S(calls, uint64_t, COUNTER)                                                 \
    S(total_ns, uint64_t, COUNTER)                                              \
    S(exclusive_ns, uint64_t, COUNTER)

/* Which histogram a row of counts belongs to: the thread's index, the
 * target's index among the copied pairs (-1: the thread's callbacks), the
 * kind (fh_hist_kind) and the power-of-two row. */
#define FH_ROW_RECORD(S, V)                                                     \
    V(thread, int64_t, KEY, thread)                                             \
    V(target, int64_t, KEY, target)                                             \
    V(kind, int8_t, KEY, kind)                                                  \
    V(row, int16_t, KEY, row)

/* Which call site a row of its histogram's counts belongs to: the site's
 * index among the copied sites and the power-of-two row (only the rows a
 * site has are copied: most have one or two of FH_SITE_ROWS). */
#define FH_SITE_ROW_RECORD(S, V)                                                \
    V(site, int64_t, KEY, site)                                                 \
    V(row, int16_t, KEY, row)

/* ---- what the tables generate ------------------------------------------ */

#define FH_MEMBER(name, ctype, role) ctype name;
#define FH_NOT_STORED(name, ctype, role, value)

#define FH_COLUMN(name, ctype, role) +1
#define FH_COLUMN_V(name, ctype, role, value) +1

#define FH_COPY_STORED(name, ctype, role) *out++ = fh_load(&FH_COPY_SOURCE->name);
#define FH_COPY_VALUE(name, ctype, role, value) *out++ = (value);

typedef struct fh_field {
    const char *name;
    const char *ctype;
    int role;
} fh_field;

#define FH_FIELD(name, ctype, role) {#name, #ctype, FH_ROLE_##role},
#define FH_FIELD_V(name, ctype, role, value) {#name, #ctype, FH_ROLE_##role},

#endif /* FASTHOST_SCHEMA_H */
