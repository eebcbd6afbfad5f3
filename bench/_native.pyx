# cython: language_level=3, always_allow_keywords=False, binding=False, embedsignature=True
"""The native code bench/ compares fasthost against (built by bench/native.py).

The C API pair in a loop, a minimal hand-written recorder (2 x rdtsc, a
thread-local push/pop, one histogram increment) as a C loop, as builtins,
as a profile hook and as sys.monitoring callbacks, and recorders sharing one
histogram between threads (mutex, atomics).
"""

from libc.stdint cimport int32_t, uint64_t
from time import monotonic_ns as _now

import sys

cdef extern from "_native.h":
    object fh_minimal_monitor_callback(int i, int vectorcall)

cdef extern from "_native.h" nogil:
    int fasthost_import() except -1 with gil
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

fasthost_import()


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


def minimal_monitor(bint on, int tool=5, bint vectorcall=False):
    """Turns on (or off) a minimal C sys.monitoring recorder under tool id
    ``tool`` (Python 3.12+): the minimal hand-written leave at every call of
    anything but a Python function and enter at its C_RETURN/C_RAISE. The
    floor that capture_native is measured against. Its callbacks are builtin
    functions, or with ``vectorcall`` objects called through their own
    vectorcall slot, as fasthost's are."""
    monitoring = sys.monitoring
    events = monitoring.events
    if on:
        monitoring.use_tool_id(tool, "fasthost minimal recorder")
        monitoring.register_callback(tool, events.CALL, fh_minimal_monitor_callback(0, vectorcall))
        monitoring.register_callback(tool, events.C_RETURN, fh_minimal_monitor_callback(1, vectorcall))
        monitoring.register_callback(tool, events.C_RAISE, fh_minimal_monitor_callback(1, vectorcall))
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
