# cython: language_level=3, always_allow_keywords=False, binding=False, embedsignature=True
"""Test-only native helpers for fasthost (not part of the public API).

Native threads that never hold the GIL, a deliberately corrupted thread
state, a manual clock, and the C loops the benchmarks compare.
"""

from cpython.pycapsule cimport PyCapsule_Import
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport calloc, free
from time import monotonic_ns as _now

from fasthost.hresult import HResult

import sys

cdef extern from "_testing_native.h":
    object fh_minimal_monitor_callback(int i)

cdef extern from "_testing_native.h" nogil:
    int fasthost_import() except -1 with gil
    enum:
        FH_WORK_PAIRS
        FH_WORK_NESTED
        FH_WORK_LEAVE_OPEN
        FH_WORK_TARGETS
    ctypedef struct fh_worker:
        int mode
        size_t count
        size_t target
        size_t distinct
        uint64_t not_ok
    int fh_run_workers(fh_worker *workers, int nthreads)
    ctypedef struct sem_t:
        pass
    int sem_init(sem_t *sem, int pshared, unsigned int value)
    int sem_post(sem_t *sem)
    int sem_wait(sem_t *sem)
    int sem_destroy(sem_t *sem)
    ctypedef struct pthread_t:
        pass
    ctypedef struct fh_held_frame:
        pthread_t thread
        size_t target
        int kind
        sem_t opened
        sem_t release_
        sem_t closed
        int32_t open_result
        int32_t close_result
    void *fh_held_main(void *arg)
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)
    uint64_t fh_capi_pair_loop(size_t n, size_t target)
    uint64_t fh_minimal_pair_loop(size_t n, size_t target)
    int fh_minimal_ready()
    int32_t fh_minimal_leave(size_t target)
    int32_t fh_minimal_enter()
    int fh_minimal_profile(int on) with gil
    uint64_t fh_scaling_run(int kind, int nthreads, size_t n)
    uint64_t fh_nested_pair_loop(size_t n, unsigned int depth, size_t target)
    uint64_t fh_targets_pair_loop(size_t n, size_t distinct, size_t target)
    void fh_pairs(int kind, size_t n, size_t target)

cdef extern from "fh_test_api.h":
    const char *FH_TEST_CAPSULE_NAME
    enum:
        FH_CORRUPT_DEPTH
        FH_CORRUPT_TOP_FRAME
    ctypedef struct fh_test_api:
        int (*corrupt_current_thread)(int how) noexcept nogil
        void (*set_manual_time)(uint64_t ns) noexcept nogil

fasthost_import()
cdef fh_test_api *_hooks = <fh_test_api *>PyCapsule_Import(FH_TEST_CAPSULE_NAME, 0)
cdef uint64_t _manual_now = 0

_MODES = {"pairs": FH_WORK_PAIRS, "nested": FH_WORK_NESTED, "leave_open": FH_WORK_LEAVE_OPEN,
          "targets": FH_WORK_TARGETS}


def run_native_threads(int nthreads, size_t count, size_t target, str mode="pairs", size_t distinct=1):
    """Runs `nthreads` pthreads (created and joined in C, never holding the
    GIL), each doing `count` iterations of `mode` through the C API.

    Modes: "pairs" (leave/enter), "nested" (U -> M -> U per iteration),
    "leave_open" (`count` leaves, then the thread exits with them open),
    "targets" (pairs cycling over `distinct` targets from `target`).
    Returns the per-thread number of calls that did not return S_OK.
    """
    if nthreads < 1:
        raise ValueError("nthreads must be >= 1")
    if distinct < 1:
        raise ValueError("distinct must be >= 1")
    cdef int m = _MODES[mode]
    cdef fh_worker *workers = <fh_worker *>calloc(nthreads, sizeof(fh_worker))
    cdef int i, err
    if workers == NULL:
        raise MemoryError()
    try:
        for i in range(nthreads):
            workers[i].mode = m
            workers[i].count = count
            workers[i].target = target
            workers[i].distinct = distinct
        with nogil:
            err = fh_run_workers(workers, nthreads)
        if err != 0:
            raise OSError(err, "pthread_create failed")
        return [workers[i].not_ok for i in range(nthreads)]
    finally:
        free(workers)


cdef class HeldFrame:
    """A native thread that opens a frame (U with `target`, or M when
    `managed`), then waits for :meth:`close` to close it and exit."""
    cdef fh_held_frame held
    cdef bint started, joined

    def __cinit__(self, size_t target=0, bint managed=False):
        sem_init(&self.held.opened, 0, 0)
        sem_init(&self.held.release_, 0, 0)
        sem_init(&self.held.closed, 0, 0)
        self.held.target = target
        self.held.kind = 1 if managed else 0
        if pthread_create(&self.held.thread, NULL, fh_held_main, &self.held) != 0:
            raise OSError("pthread_create failed")
        self.started = True
        with nogil:
            sem_wait(&self.held.opened)

    @property
    def open_result(self):
        """HResult of the opening call."""
        return HResult.from_int32(self.held.open_result)

    def close(self):
        """Lets the thread close its frame; returns the closing HResult."""
        if not self.joined:
            sem_post(&self.held.release_)
            with nogil:
                pthread_join(self.held.thread, NULL)
            self.joined = True
        return HResult.from_int32(self.held.close_result)

    def __dealloc__(self):
        if self.started and not self.joined:
            sem_post(&self.held.release_)
            pthread_join(self.held.thread, NULL)
        sem_destroy(&self.held.opened)
        sem_destroy(&self.held.release_)
        sem_destroy(&self.held.closed)


def corrupt_thread_state(str how="depth"):
    """Breaks the calling thread's fasthost state so that its next call
    finds a broken invariant and returns E_FAIL. `how`: "depth" (depth past
    the stack) or "top_frame" (overwrite the top frame's kind)."""
    cdef int code = {"depth": FH_CORRUPT_DEPTH, "top_frame": FH_CORRUPT_TOP_FRAME}[how]
    if _hooks.corrupt_current_thread(code) != 0:
        raise RuntimeError("this thread has no fasthost state (or no open frame) to corrupt")


def set_manual_time(uint64_t ns):
    """Sets the "manual" clock to `ns`."""
    global _manual_now
    _manual_now = ns
    _hooks.set_manual_time(ns)


def advance_manual_time(uint64_t ns):
    """Moves the "manual" clock forward by `ns`; returns the new time."""
    set_manual_time(_manual_now + ns)
    return _manual_now


def capi_pair_loop(size_t n, size_t target=0x1000):
    """`n` leave/enter pairs through the public C API; elapsed ns."""
    cdef uint64_t elapsed
    with nogil:
        elapsed = fh_capi_pair_loop(n, target)
    return elapsed


def minimal_pair_loop(size_t n, size_t target=0x1000):
    """`n` minimal hand-written pairs (2 x rdtsc, TLS push/pop, one
    histogram increment); elapsed ns."""
    cdef uint64_t elapsed
    with nogil:
        elapsed = fh_minimal_pair_loop(n, target)
    return elapsed


def minimal_leave(size_t target):
    """The minimal hand-written leave as a builtin: what any pair that takes
    two timestamps costs from Python (the floor of the Python-level pair)."""
    if fh_minimal_ready() and fh_minimal_leave(target) == 0:
        return 0
    raise MemoryError()


def minimal_enter():
    """The minimal hand-written enter as a builtin (see minimal_leave)."""
    return fh_minimal_enter()


def noop():
    """An empty builtin (METH_NOARGS): the baseline of Python-level calls."""
    return None


def noop1(object arg):
    """An empty builtin taking one argument (METH_O)."""
    return None


def minimal_profile_hook(bint on):
    """Installs (or removes) on this thread a minimal C profile hook: the
    minimal hand-written leave/enter around every builtin call. The floor
    that capture_builtins is measured against."""
    if fh_minimal_profile(on) != 0:
        raise MemoryError()


def minimal_monitor(bint on, int tool=5):
    """Turns on (or off) a minimal C sys.monitoring recorder under tool id
    ``tool`` (Python 3.12+): the minimal hand-written leave at every call of
    anything but a Python function and enter at its C_RETURN/C_RAISE. The
    floor that capture_native is measured against (bench/ only)."""
    monitoring = sys.monitoring
    events = monitoring.events
    if on:
        monitoring.use_tool_id(tool, "fasthost minimal recorder")
        monitoring.register_callback(tool, events.CALL, fh_minimal_monitor_callback(0))
        monitoring.register_callback(tool, events.C_RETURN, fh_minimal_monitor_callback(1))
        monitoring.register_callback(tool, events.C_RAISE, fh_minimal_monitor_callback(1))
        monitoring.set_events(tool, events.CALL | events.C_RETURN | events.C_RAISE)
    else:
        monitoring.set_events(tool, 0)
        for event in (events.CALL, events.C_RETURN, events.C_RAISE):
            monitoring.register_callback(tool, event, None)
        monitoring.free_tool_id(tool)


_PAIR_KINDS = {"fasthost": 0, "minimal": 1, "mutex": 2, "atomic": 3}


def scaling_run(str kind, int nthreads, size_t pairs):
    """`nthreads` native threads do `pairs` pairs each of `kind` ("fasthost"
    through the C API, "minimal", "mutex" or "atomic": a shared histogram
    guarded by a mutex or updated atomically), released together. Returns
    the elapsed ns from their release to the end of the last one."""
    if nthreads < 1:
        raise ValueError("nthreads must be >= 1")
    cdef int k = _PAIR_KINDS[kind]
    cdef uint64_t elapsed
    with nogil:
        elapsed = fh_scaling_run(k, nthreads, pairs)
    if elapsed == 0:
        raise OSError("could not start the threads")
    return elapsed


def pair_loop(str kind, size_t n, size_t target=0x1000):
    """`n` pairs of `kind` (see scaling_run) on this thread; elapsed ns."""
    cdef int k = _PAIR_KINDS[kind]
    if k == 1 and not fh_minimal_ready():
        raise MemoryError()
    cdef uint64_t t0 = _now()
    with nogil:
        fh_pairs(k, n, target)
    return _now() - t0


def nested_pair_loop(size_t n, unsigned int depth, size_t target=0x2000):
    """`n` C API pairs on top of `depth - 1` open frames; elapsed ns."""
    if depth < 1:
        raise ValueError("depth must be >= 1")
    cdef uint64_t elapsed
    with nogil:
        elapsed = fh_nested_pair_loop(n, depth, target)
    return elapsed


def targets_pair_loop(size_t n, size_t distinct, size_t target=0x100000):
    """`n` C API pairs cycling over `distinct` targets (each met once before
    the clock starts); elapsed ns."""
    if distinct < 1:
        raise ValueError("distinct must be >= 1")
    cdef uint64_t elapsed
    with nogil:
        elapsed = fh_targets_pair_loop(n, distinct, target)
    return elapsed
