# cython: language_level=3, always_allow_keywords=False, binding=False, embedsignature=True
"""Test-only native helpers for fasthost (not part of the public API).

Native threads that never hold the GIL, a deliberately corrupted thread
state and a manual clock. The C loops the benchmarks compare live in bench/.
"""

from cpython.pycapsule cimport PyCapsule_Import
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free

from fasthost.hresult import HResult

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
        int32_t open_result
        int32_t close_result
    void *fh_held_main(void *arg)
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)

cdef extern from "fh_test_api.h":
    const char *FH_TEST_CAPSULE_NAME
    enum:
        FH_CORRUPT_DEPTH
        FH_CORRUPT_TOP_FRAME
    ctypedef struct fh_test_api:
        int (*corrupt_current_thread)(int how) noexcept nogil
        void (*set_manual_time)(uint64_t ns) noexcept nogil
        int (*add_site_samples)(uint64_t code, uint32_t where, uint64_t target, uint64_t ns,
                                uint64_t count) noexcept nogil

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


def add_site_samples(uint64_t code, uint32_t where, uint64_t target, uint64_t ns, uint64_t count):
    """Records `count` closes of `ns` ns at the call site (code, where) ->
    target of the calling thread, in one step, as that many closes would
    (counts past 2**32 without 2**32 calls). RuntimeError if the thread is
    not recording in this session (make one call first) or the site finds
    no room."""
    if _hooks.add_site_samples(code, where, target, ns, count) != 0:
        raise RuntimeError("this thread is not recording (or its call sites are full)")


cdef extern from "Python.h":
    bint PyCFunction_CheckExact(object)
    void *PyCFunction_GET_FUNCTION(object)


def c_function_address(function):
    """The address of the C function that the builtin function object
    `function` calls (fasthost's own included: the captures refuse those
    as targets). TypeError for anything but a builtin function."""
    if not PyCFunction_CheckExact(function):
        raise TypeError(f"c_function_address() takes a builtin function, not {type(function).__name__}")
    return <size_t>PyCFunction_GET_FUNCTION(function)
