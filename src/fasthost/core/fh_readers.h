/* fh_readers.h -- the snapshot side: the registry lock, acquire loads of what
 * the owning threads publish, and the copy of each record of fh_schema.h
 * into a row.
 */
#ifndef FASTHOST_READERS_H
#define FASTHOST_READERS_H

#include "fh_state.h"

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
#define FH_SITE_ROW_COLUMNS (0 FH_SITE_ROW_RECORD(FH_COLUMN, FH_COLUMN_V))

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

/* Row `row` of a call site's histogram (FH_SITE_WIDTH counts), or NULL
 * while it has none. Read the pointer once, with acquire, and the counts
 * through it: a row is published before its first count. */
static inline const uint64_t *fh_site_row(const fh_site *site, uint32_t row)
{
    return fh_load_acquire((uint64_t **)&site->rows[row]);
}

/* How many rows a call site's histogram has (rows are never taken away
 * within a session: a copy made after this finds at least as many). */
static inline uint32_t fh_site_nrows(const fh_site *site)
{
    uint32_t rows = 0;
    for (uint32_t r = 0; r < FH_SITE_ROWS; r++)
        rows += fh_site_row(site, r) != NULL;
    return rows;
}

static inline void fh_copy_row_record(int64_t thread, int64_t target, int64_t kind, int64_t row, long long *out)
{
    FH_ROW_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}

static inline void fh_copy_site_row_record(int64_t site, int64_t row, long long *out)
{
    FH_SITE_ROW_RECORD(FH_COPY_STORED, FH_COPY_VALUE)
}

/* The schema _core exports: every record's columns, in order. */
static const fh_field fh_thread_schema[] = {FH_THREAD_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_target_schema[] = {FH_TARGET_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_site_schema[] = {FH_SITE_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_row_schema[] = {FH_ROW_RECORD(FH_FIELD, FH_FIELD_V)};
static const fh_field fh_site_row_schema[] = {FH_SITE_ROW_RECORD(FH_FIELD, FH_FIELD_V)};

#endif /* FASTHOST_READERS_H */
