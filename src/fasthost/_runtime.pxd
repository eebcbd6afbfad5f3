# Declarations of the C core (core/*.h) for _core.pyx, the one
# module that owns the runtime.
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from "fh_histogram.h" nogil:
    uint32_t FH_PRECISION_MIN
    uint32_t FH_PRECISION_MAX
    uint32_t fh_bucket_index(uint64_t value, unsigned precision) noexcept
    uint32_t fh_bucket_rows(unsigned precision) noexcept
    uint32_t fh_bucket_count(unsigned precision) noexcept
    uint64_t fh_bucket_lower(uint32_t index, unsigned precision) noexcept

cdef extern from "fh_clock.h" nogil:
    enum:
        FH_CLOCK_TSC
        FH_CLOCK_MONOTONIC
        FH_CLOCK_MANUAL
    ctypedef struct fh_clock:
        int kind
        uint64_t ns_per_tick
    int fh_tsc_is_invariant() noexcept
    uint64_t fh_tsc_calibrate(uint64_t window_ns) noexcept
    uint64_t fh_monotonic_ns() noexcept
    void fh_clock_set_manual(uint64_t ns) noexcept
    uint64_t fh_clock_ticks(const fh_clock *clock) noexcept

# One block per header of the core (core/fh_runtime.h lists them), in the
# order they build on each other.
cdef extern from "fh_protocol.h" nogil:
    enum:
        FH_OK
        FH_CALLS
        FH_RESULTS
        FH_HIST_INCLUSIVE
        FH_HIST_NESTED_INCLUSIVE
        FH_HIST_NESTED_EXCLUSIVE
        FH_HIST_CALLBACK
        FH_MAX_DEPTH_LIMIT
        FH_MAX_TARGETS_LIMIT
    const int32_t fh_hresult_of[]

cdef extern from "fh_state.h" nogil:
    ctypedef struct fh_config:
        uint32_t max_depth
        uint32_t precision
        uint32_t max_targets
        uint64_t timeout_ns

    # Only what _core reads member by member; the records' columns are
    # copied by the fh_copy_*_record functions (core/fh_schema.h).
    ctypedef struct fh_target:
        uint32_t rows_per_hist
        uint64_t **nested
        uint64_t **rows

    enum:
        FH_SITE_BUCKETS
        FH_SITE_PRECISION
        FH_SITE_ROWS
        FH_SITE_WIDTH
    ctypedef struct fh_site:
        pass

    ctypedef struct fh_thread:
        uint32_t alive
        uint32_t precision
        uint64_t results[4][7]
        uint64_t *callback_counts
        fh_target **targets
        uint64_t heap_bytes
        uint64_t tid
        char name[32]
        uint64_t sites_dropped
        fh_thread *next

    ctypedef struct fh_runtime:
        uint32_t epoch
        uint64_t unregistered_out_of_memory
        fh_thread *threads

    fh_runtime fh_rt
    void fh_add_counts(uint64_t *dst, const uint64_t *src, uint32_t n) noexcept

cdef extern from "fh_threads.h" nogil:
    enum:
        FH_THREAD_NAME
    void (*fh_thread_namer)(char *name, size_t size) noexcept nogil

cdef extern from "fh_transitions.h" nogil:
    int fh_leave_runtime(uint64_t target) noexcept
    int fh_enter_runtime() noexcept
    int fh_reverse_enter_runtime() noexcept
    int fh_reverse_leave_runtime() noexcept
    int32_t FH_API_LeaveRuntime(size_t target) noexcept
    int32_t FH_API_EnterRuntime() noexcept
    int32_t FH_API_ReverseLeaveRuntime() noexcept
    int32_t FH_API_ReverseEnterRuntime() noexcept

cdef extern from "fh_session.h" nogil:
    int fh_runtime_init() noexcept
    void fh_start(const fh_config *config, const fh_clock *clock) noexcept
    void fh_stop() noexcept
    void fh_reset() noexcept
    int fh_running() noexcept
    int fh_poisoned() noexcept
    uint64_t fh_current_depth() noexcept
    int fh_abandon_entry(uint64_t position) noexcept
    int fh_top_is_unmanaged() noexcept
    int fh_test_corrupt_current(int how) noexcept
    int fh_test_add_site_samples(uint64_t code, uint32_t where, uint64_t target, uint64_t ns, uint64_t count) noexcept

cdef extern from "fh_readers.h" nogil:
    void fh_registry_lock() noexcept
    void fh_registry_unlock() noexcept
    uint64_t fh_read_u64(const uint64_t *p) noexcept
    uint32_t fh_read_u32(const uint32_t *p) noexcept
    int fh_thread_in_session(const fh_thread *ts) noexcept
    uint32_t fh_thread_ntargets(const fh_thread *ts) noexcept
    uint32_t fh_thread_nsites(const fh_thread *ts) noexcept
    fh_site **fh_thread_sites(fh_thread *ts) noexcept
    uint64_t *fh_read_row(uint64_t **slot) noexcept
    uint64_t **fh_read_nested(fh_target *t) noexcept

    enum:
        FH_THREAD_COLUMNS
        FH_TARGET_COLUMNS
        FH_SITE_COLUMNS
        FH_ROW_COLUMNS
        FH_SITE_ROW_COLUMNS
    ctypedef struct fh_field:
        const char *name
        const char *ctype
        int role
    const fh_field fh_thread_schema[]
    const fh_field fh_target_schema[]
    const fh_field fh_site_schema[]
    const fh_field fh_row_schema[]
    const fh_field fh_site_row_schema[]
    void fh_copy_thread_record(const fh_thread *ts, uint64_t *out) noexcept
    void fh_copy_target_record(uint64_t thread, const fh_target *t, uint64_t *out) noexcept
    void fh_copy_site_record(uint64_t thread, const fh_site *site, uint64_t *out) noexcept
    const uint64_t *fh_site_row(const fh_site *site, uint32_t row) noexcept
    uint32_t fh_site_nrows(const fh_site *site) noexcept
    void fh_copy_row_record(long long thread, long long target, long long kind, long long row, long long *out) noexcept
    void fh_copy_site_row_record(long long site, long long row, long long *out) noexcept

cdef extern from "fh_test_api.h" nogil:
    const char *FH_TEST_CAPSULE_NAME
    ctypedef struct fh_test_api:
        int (*corrupt_current_thread)(int how) noexcept
        void (*set_manual_time)(uint64_t ns) noexcept
        int (*add_site_samples)(uint64_t code, uint32_t where, uint64_t target, uint64_t ns, uint64_t count) noexcept
