# cython: language_level=3, always_allow_keywords=False, binding=False, embedsignature=True
"""The compiled core of fasthost: the only place where Python meets the C
runtime in core/fh_runtime.h.

The transition functions here are thin: convert the argument, call the
inline C function, return a cached ``HResult``. Everything that shapes data
for people (structured arrays, histograms, reports) lives in Python above.
"""

cimport cython
from cpython.bool cimport PyBool_Check
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyIndex_Check, PyNumber_Index
from cpython.pycapsule cimport PyCapsule_New
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.errno cimport errno
from libc.string cimport memcpy, memset

import os
import sys

import numpy as np

from fasthost._runtime cimport *
from fasthost.hresult import RESULT_ORDER

cdef extern from *:
    """
    #define FASTHOST_NO_IMPORT
    #include "fasthost.h"
    """
    const char *FASTHOST_CAPSULE_NAME
    uint32_t FASTHOST_ABI_VERSION
    ctypedef struct fasthost_api:
        uint32_t abi_version
        uint32_t size
        int32_t (*LeaveRuntime)(size_t target) noexcept nogil
        int32_t (*EnterRuntime)() noexcept nogil
        int32_t (*ReverseLeaveRuntime)() noexcept nogil
        int32_t (*ReverseEnterRuntime)() noexcept nogil

# HResult members by result index; a C static, so the hot path reads it
# without a module-dict lookup.
cdef tuple _RESULTS = tuple(RESULT_ORDER)
# The same members as borrowed pointers (the tuple keeps them alive): the
# transitions return one without touching the tuple's reference count.
cdef PyObject *_RESULT_OBJECTS[FH_RESULTS]
for _i, _member in enumerate(_RESULTS):
    _RESULT_OBJECTS[_i] = <PyObject *>_member
del _i, _member

CLOCKS = ("auto", "tsc", "monotonic", "manual")
CONFIG_FIELDS = ("clock", "max_depth", "precision", "timeout_ns", "max_targets")
CONFIG_LIMITS = {
    "max_depth": (1, FH_MAX_DEPTH_LIMIT),
    "precision": (FH_PRECISION_MIN, FH_PRECISION_MAX),
    "timeout_ns": (0, 2**64 - 1),
    "max_targets": (1, FH_MAX_TARGETS_LIMIT),
}
"""The integer settings of start(): name -> (lowest, highest) allowed."""
CALLS = FH_CALLS  # the four transitions
RESULTS = FH_RESULTS  # the results a transition can have
HIST_KINDS = {
    "inclusive": FH_HIST_INCLUSIVE,
    "nested_inclusive": FH_HIST_NESTED_INCLUSIVE,
    "nested_exclusive": FH_HIST_NESTED_EXCLUSIVE,
    "callback": FH_HIST_CALLBACK,
}
"""The kinds of histogram rows: a target's inclusive durations, the part of
them of frames with frames inside (inclusive and exclusive), a thread's
callbacks."""
cdef dict _CLOCK_IDS = {"tsc": FH_CLOCK_TSC, "monotonic": FH_CLOCK_MONOTONIC, "manual": FH_CLOCK_MANUAL}
cdef dict _CLOCK_NAMES = {v: k for k, v in _CLOCK_IDS.items()}

cdef uint64_t _tsc_ns_per_tick = 0  # calibrated once per process
cdef object _config = None          # the running session's config, as a tuple
cdef uint64_t _session_start_ns = 0

if fh_runtime_init() != 0:
    raise ImportError("fasthost: could not initialise the runtime (pthread_key_create/pthread_atfork failed)")


cdef extern from "Python.h":
    int PyGILState_Check() nogil
    unsigned long PyThread_get_thread_ident() nogil
    PyObject *PyImport_GetModuleDict()
    PyObject *PyDict_GetItemString(PyObject *d, const char *key)
    PyObject *PyDict_GetItemWithError(PyObject *d, PyObject *key)
    PyObject *PyModule_GetDict(PyObject *m)
    PyObject *PyObject_GenericGetDict(PyObject *o, void *context)
    PyObject *PyLong_FromUnsignedLong(unsigned long v)
    PyObject *PyUnicode_AsEncodedString(PyObject *u, const char *encoding, const char *errors)
    char *PyBytes_AS_STRING(PyObject *b)
    Py_ssize_t PyBytes_GET_SIZE(PyObject *b)
    bint PyModule_CheckExact(PyObject *o)
    bint PyDict_CheckExact(PyObject *o)
    bint PyDict_Check(PyObject *o)
    bint PyUnicode_CheckExact(PyObject *o)
    void _fh_decref "Py_DECREF"(PyObject *o)
    void PyErr_Fetch(PyObject **t, PyObject **v, PyObject **tb)
    void PyErr_Restore(PyObject *t, PyObject *v, PyObject *tb)
    void PyErr_Clear()

cdef extern from *:
    """
    /* The collector's switch is C API from 3.10; on 3.9 it stays as it is
     * (the lookups allocate at most an int and a thread's empty dict). */
    #if PY_VERSION_HEX >= 0x030A0000
    #define fh_gc_disable() PyGC_Disable()
    #define fh_gc_enable() PyGC_Enable()
    #else
    #define fh_gc_disable() 0
    #define fh_gc_enable() 0
    #endif
    """
    int fh_gc_disable()
    int fh_gc_enable()


cdef void _copy_name(PyObject *value, char *name, size_t size) noexcept:
    cdef PyObject *encoded = PyUnicode_AsEncodedString(value, "utf-8", "replace")
    if encoded == NULL:
        return
    cdef const char *data = PyBytes_AS_STRING(encoded)
    cdef size_t n = <size_t>PyBytes_GET_SIZE(encoded)
    cdef size_t i = 0
    while i < n and data[i] != 0:  # a NUL ends it (nothing of the OS name after)
        i += 1
    n = i
    if n > size - 1:
        n = size - 1
        while n > 0 and (<unsigned char>data[n] & 0xC0) == 0x80:  # no character cut in two
            n -= 1
    if n:
        memset(name, 0, size)
        memcpy(name, data, n)
    _fh_decref(encoded)


cdef void _name_thread_held(char *name, size_t size) noexcept:
    # C-API only, and no code of the program's runs: dicts read with str or
    # int keys, the thread's `_name` taken from its instance dict (a property
    # or __getattr__ is never called), the collector off (no finalizer runs).
    # Whatever went wrong is cleared, and an exception already set is kept.
    cdef PyObject *et
    cdef PyObject *ev
    cdef PyObject *etb
    cdef PyObject *module
    cdef PyObject *active
    cdef PyObject *key
    cdef PyObject *thread
    cdef PyObject *attrs
    cdef PyObject *value
    PyErr_Fetch(&et, &ev, &etb)
    cdef int collecting = fh_gc_disable()
    module = PyDict_GetItemString(PyImport_GetModuleDict(), "threading")
    if module != NULL and PyModule_CheckExact(module):
        active = PyDict_GetItemString(PyModule_GetDict(module), "_active")
        if active != NULL and PyDict_CheckExact(active):
            key = PyLong_FromUnsignedLong(PyThread_get_thread_ident())
            if key != NULL:
                thread = PyDict_GetItemWithError(active, key)
                _fh_decref(key)
                if thread != NULL:
                    attrs = PyObject_GenericGetDict(thread, NULL)
                    if attrs != NULL:
                        if PyDict_Check(attrs):
                            value = PyDict_GetItemString(attrs, "_name")
                            if value != NULL and PyUnicode_CheckExact(value):
                                _copy_name(value, name, size)
                        _fh_decref(attrs)
    PyErr_Clear()
    if collecting:
        fh_gc_enable()
    PyErr_Restore(et, ev, etb)


cdef void _name_thread(char *name, size_t size) noexcept nogil:
    """A new thread state's name: its Python thread's, where the thread holds
    the GIL at its first call and threading knows it (a native thread keeps
    its OS name). C-API lookups only, so no capture sees them, and nothing of
    the program's runs (no property, no finalizer): see _name_thread_held."""
    if not PyGILState_Check():
        return
    with gil:
        _name_thread_held(name, size)


fh_thread_namer = _name_thread

cdef extern from *:
    """
    #ifndef FASTHOST_DEBUG
    #define FASTHOST_DEBUG 0
    #endif
    #ifdef NDEBUG
    #define FH_ASSERTS_ON 0
    #else
    #define FH_ASSERTS_ON 1
    #endif
    """
    int FASTHOST_DEBUG
    int FH_ASSERTS_ON

# True in setup.py's debug profile (FASTHOST_DEBUG=1): Cython's checks and
# the core's C asserts on. _ASSERTS tells whether assert() is compiled in.
_DEBUG_BUILD = bool(FASTHOST_DEBUG)
_ASSERTS = bool(FH_ASSERTS_ON)


# ---- the four transitions ---------------------------------------------------

cdef inline size_t _as_target(object target) except? <size_t>-1:
    # Cython's size_t conversion has unrolled fast paths for small ints, but
    # on its own it would also truncate floats through __int__: so only ints
    # reach it, and anything else must have __index__. A bool is not an
    # address (start() rejects bools for the same reason).
    if not PyLong_CheckExact(target):
        if PyBool_Check(target) or not PyIndex_Check(target):
            raise TypeError(f"target must be an int (the unmanaged function's address), not {type(target).__name__}")
        target = PyNumber_Index(target)
    return <size_t>target  # OverflowError below 0 or past 2**64 - 1


def leave_runtime(target):
    """Opens an unmanaged (U) frame: managed code is about to call ``target``.

    ``target`` is the address of the unmanaged function, 0 <= target < 2**64.
    Returns an ``HResult``; never raises for a protocol error. Raises
    ``TypeError`` (not an int) or ``OverflowError`` (out of range) before
    anything is recorded.
    """
    return <object>_RESULT_OBJECTS[fh_leave_runtime(_as_target(target))]


def enter_runtime():
    """Closes the unmanaged frame on top of this thread's stack.

    Records its inclusive and exclusive duration (ns). Returns an
    ``HResult``; never raises.
    """
    return <object>_RESULT_OBJECTS[fh_enter_runtime()]


def reverse_enter_runtime():
    """Opens a managed (M) frame: unmanaged code calls back into Python.

    Allowed on an empty stack. Returns an ``HResult``; never raises.
    """
    return <object>_RESULT_OBJECTS[fh_reverse_enter_runtime()]


def reverse_leave_runtime():
    """Closes the managed frame on top of this thread's stack.

    Records the callback duration (ns). Returns an ``HResult``; never raises.
    """
    return <object>_RESULT_OBJECTS[fh_reverse_leave_runtime()]


def depth():
    """Number of frames open on the calling thread: recorded ones, ones set
    aside by a new session, and opens that were not recorded (refused, or
    made while stopped), which still nest."""
    return fh_current_depth()


# unmanaged and callback keep no state: the core remembers every open,
# recorded or not, so each close pops its own open. One object can be used
# by any number of threads, at any nesting.

@cython.final
cdef class unmanaged:
    """Context manager: ``leave_runtime(target)`` on entry, ``enter_runtime()``
    on exit, also when the block raises. Never raises for protocol errors;
    ``__enter__`` returns the ``HResult`` of ``leave_runtime``. One object may
    be shared by threads and entered recursively.

    Raises ``TypeError``/``OverflowError`` at construction for a bad target.
    """
    cdef readonly uint64_t target

    def __cinit__(self, target):
        self.target = _as_target(target)

    def __enter__(self):
        return <object>_RESULT_OBJECTS[fh_leave_runtime(self.target)]

    def __exit__(self, exc_type, exc_value, traceback):
        fh_enter_runtime()
        return False

    def __repr__(self):
        return f"fasthost.unmanaged(0x{self.target:x})"


@cython.final
cdef class callback:
    """Context manager: ``reverse_enter_runtime()`` on entry,
    ``reverse_leave_runtime()`` on exit, also when the block raises. Never
    raises for protocol errors; ``__enter__`` returns the opening
    ``HResult``. One object may be shared by threads and entered recursively.
    """

    def __enter__(self):
        return <object>_RESULT_OBJECTS[fh_reverse_enter_runtime()]

    def __exit__(self, exc_type, exc_value, traceback):
        fh_reverse_leave_runtime()
        return False

    def __repr__(self):
        return "fasthost.callback()"


# ---- session control ----------------------------------------------------------

cdef uint64_t _checked_int(object value, str name, uint64_t low, uint64_t high) except? 0:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def tsc_available():
    """True when the CPU has an invariant TSC that ``clock="tsc"`` can use."""
    return bool(fh_tsc_is_invariant())


cdef int _resolve_clock(object clock) except -1:
    global _tsc_ns_per_tick
    if not isinstance(clock, str):
        raise TypeError(f"clock must be a str, not {type(clock).__name__}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(map(repr, CLOCKS))}, got {clock!r}")
    if clock == "auto":
        clock = "tsc" if fh_tsc_is_invariant() else "monotonic"
    if clock == "tsc":
        if not fh_tsc_is_invariant():
            raise ValueError("clock='tsc' needs an invariant TSC, which this CPU does not report; use 'monotonic' or 'auto'")
        if _tsc_ns_per_tick == 0:
            with nogil:
                _tsc_ns_per_tick = fh_tsc_calibrate(20_000_000)
            if _tsc_ns_per_tick == 0:
                raise RuntimeError("clock='tsc': calibration against CLOCK_MONOTONIC failed")
    return _CLOCK_IDS[clock]


def start(*, clock="auto", max_depth=256, precision=5, timeout_ns=0, max_targets=1024):
    """Starts a new recording session (counters at zero; frames opened before
    it will close as HOST_E_ABANDONED).

    clock: "tsc" (invariant TSC calibrated to ns), "monotonic"
    (clock_gettime), "auto" (tsc where invariant, else monotonic), or
    "manual" (time moves only when fasthost._testing says; for tests).
    max_depth: frames per thread, 1..2**20, for the protocol's frames and as
    many again for the frames captures open; a protocol open beyond it
    returns E_OUTOFMEMORY. precision: sub-bucket bits of the histograms, 1..8.
    timeout_ns: a frame longer than this closes with HOST_E_TIMEOUT (0 =
    never). max_targets: distinct targets per thread, 1..2**20, before the
    rest fold into one overflow row.

    Calling it while recording with the same configuration does nothing;
    with a different one raises ``RuntimeError``. Bad values raise
    ``TypeError``/``ValueError``.
    """
    global _config, _session_start_ns
    cdef fh_config config
    cdef fh_clock clk
    clock_id = _resolve_clock(clock)
    config.max_depth = _setting(max_depth, "max_depth")
    config.precision = _setting(precision, "precision")
    config.timeout_ns = _setting(timeout_ns, "timeout_ns")
    config.max_targets = _setting(max_targets, "max_targets")
    wanted = (_CLOCK_NAMES[clock_id], config.max_depth, config.precision, config.timeout_ns, config.max_targets)
    if fh_running():
        if wanted == _config:
            return
        raise RuntimeError(f"fasthost is already recording with {_describe(_config)}; stop() it before starting with {_describe(wanted)}")
    clk.kind = clock_id
    clk.ns_per_tick = _tsc_ns_per_tick if clock_id == FH_CLOCK_TSC else (<uint64_t>1 << 32)
    _config = wanted
    _session_start_ns = fh_monotonic_ns()
    _site_codes_clear()  # before: a site of the new session must find its code kept
    fh_start(&config, &clk)


cdef _setting(value, str name):
    """`value` checked as start()'s integer setting `name`."""
    low, high = CONFIG_LIMITS[name]
    return _checked_int(value, name, low, high)


cdef str _describe(tuple config):
    names = CONFIG_FIELDS
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, config))


def stop():
    """Stops recording. Data stays readable with ``snapshot()`` until the next
    ``start()``/``reset()``; calls made while stopped return
    HOST_E_CLRNOTAVAILABLE and are not counted, but still nest: a close pops
    the frame or the unrecorded open it closes."""
    fh_stop()


def running():
    """True while recording (also when poisoned by an E_FAIL)."""
    return bool(fh_running())


def poisoned():
    """True once a call returned E_FAIL, until the next ``start()``/``reset()``."""
    return bool(fh_poisoned())


def reset():
    """Zeroes all counters and histograms and forgets exited threads; frames
    open now will close as HOST_E_ABANDONED. Recording stays on or off as it
    was, and a poisoned session recovers."""
    global _session_start_ns
    _session_start_ns = fh_monotonic_ns()
    _site_codes_clear()
    fh_reset()


def config():
    """The configuration of the current (or last) session as a dict, or None
    before the first ``start()``."""
    if _config is None:
        return None
    return dict(zip(CONFIG_FIELDS, _config))


# ---- reading -------------------------------------------------------------------

_ROLES = ("key", "counter", "gauge", "min", "max")


cdef tuple _record_schema(const fh_field *fields, Py_ssize_t n):
    return tuple(
        (fields[i].name.decode(), fields[i].ctype.decode().removesuffix("_t"), _ROLES[fields[i].role])
        for i in range(n)
    )


SCHEMA = {
    "thread": _record_schema(fh_thread_schema, FH_THREAD_COLUMNS),
    "target": _record_schema(fh_target_schema, FH_TARGET_COLUMNS),
    "row": _record_schema(fh_row_schema, FH_ROW_COLUMNS),
    "site": _record_schema(fh_site_schema, FH_SITE_COLUMNS),
    "site_row": _record_schema(fh_site_row_schema, FH_SITE_ROW_COLUMNS),
}
"""The columns of every record ``_collect`` returns, from the core's tables
(core/fh_schema.h): record -> ((name, numpy type name, role), ...) in
column order. Roles: "key" (identifies the row), "counter" (grows: a diff
subtracts it), "gauge" (a level: a diff keeps the later one), "min" and
"max" (extremes)."""

THREAD_FIELDS = tuple(name for name, _, _ in SCHEMA["thread"])
TARGET_FIELDS = tuple(name for name, _, _ in SCHEMA["target"])
ROW_FIELDS = tuple(name for name, _, _ in SCHEMA["row"])
SITE_FIELDS = tuple(name for name, _, _ in SCHEMA["site"])
SITE_ROW_FIELDS = tuple(name for name, _, _ in SCHEMA["site_row"])


cdef Py_ssize_t _count_rows(fh_thread *ts, Py_ssize_t *ntargets) noexcept nogil:
    cdef Py_ssize_t rows = 0
    cdef uint32_t i, r, n = fh_thread_ntargets(ts)
    cdef fh_target *t
    cdef uint64_t **nested
    ntargets[0] += n
    for i in range(n):
        t = ts.targets[i]
        nested = fh_read_nested(t)
        for r in range(t.rows_per_hist):
            rows += fh_read_row(&t.rows[r]) != NULL
            if nested != NULL:
                rows += (fh_read_row(&nested[r]) != NULL) + (fh_read_row(&nested[r + t.rows_per_hist]) != NULL)
    return rows + fh_bucket_rows(ts.precision)  # callback rows, at most


cdef Py_ssize_t _count_site_rows(fh_thread *ts, Py_ssize_t *nsites) noexcept nogil:
    cdef Py_ssize_t rows = 0
    cdef uint32_t i, n = fh_thread_nsites(ts)
    cdef fh_site **thread_sites = fh_thread_sites(ts)
    nsites[0] += n
    for i in range(n):
        rows += fh_site_nrows(thread_sites[i])
    return rows


cdef void _count_session(Py_ssize_t *nthreads, Py_ssize_t *ntargets, Py_ssize_t *nrows,
                         Py_ssize_t *nsites, Py_ssize_t *nsite_rows) noexcept nogil:
    cdef fh_thread *ts
    fh_registry_lock()
    ts = fh_rt.threads
    while ts != NULL:
        if fh_thread_in_session(ts):
            nthreads[0] += 1
            nrows[0] += _count_rows(ts, ntargets)
            nsite_rows[0] += _count_site_rows(ts, nsites)
        ts = ts.next
    fh_registry_unlock()


SITE_BUCKETS = FH_SITE_BUCKETS
SITE_PRECISION = FH_SITE_PRECISION


def _collect():
    """Raw session data as numpy arrays (the export layer shapes it).

    Returns a dict: ``threads`` (uint64, one row per thread of
    THREAD_FIELDS), ``names`` (bytes, S32), ``results`` (uint64, threads x 4
    calls x 7 results), ``targets`` (uint64, TARGET_FIELDS), ``rows`` (int64,
    ROW_FIELDS: which histogram row each ``counts`` row is; target -1 is the
    thread's callback histogram), ``counts`` (uint64, rows x
    2**precision), ``sites`` (uint64, SITE_FIELDS), ``site_rows`` (int64,
    SITE_ROW_FIELDS: the site and histogram row of each ``site_counts``
    row) and ``site_counts`` (uint64, rows x 2**SITE_PRECISION: only the
    rows the sites have), plus ``precision`` and session facts.
    """
    cdef Py_ssize_t nthreads, ntargets, nrows, nsites, nsite_rows
    cdef Py_ssize_t filled_targets = 0, filled_rows = 0, filled_sites = 0, filled_site_rows = 0
    cdef uint64_t sites_dropped = 0
    cdef uint32_t precision = _config[2] if _config is not None else 5
    while True:
        nthreads = ntargets = nrows = nsites = nsite_rows = 0
        _count_session(&nthreads, &ntargets, &nrows, &nsites, &nsite_rows)
        # Live threads may add threads, targets and rows between counting and
        # copying: leave room, and count again in the rare case it was not
        # enough. The registry lock is never held while Python code can run
        # (a GC finalizer here could switch to a thread that needs the lock).
        nthreads += 4
        ntargets += 16
        nrows += 64
        nsites += 16
        nsite_rows += 64
        sites = np.zeros((nsites, len(SITE_FIELDS)), dtype=np.uint64)
        # Sparse, as ``rows``/``counts``: a site's histogram spans
        # FH_SITE_BUCKETS counts (3.9 KiB) but has one or two rows of them.
        site_rows = np.zeros((nsite_rows, len(SITE_ROW_FIELDS)), dtype=np.int64)
        site_counts = np.zeros((nsite_rows, FH_SITE_WIDTH), dtype=np.uint64)
        threads = np.zeros((nthreads, len(THREAD_FIELDS)), dtype=np.uint64)
        names = np.zeros(nthreads, dtype=f"S{FH_THREAD_NAME}")
        results = np.zeros((nthreads, FH_CALLS, FH_RESULTS), dtype=np.uint64)
        targets = np.zeros((ntargets, len(TARGET_FIELDS)), dtype=np.uint64)
        rows = np.zeros((nrows, len(ROW_FIELDS)), dtype=np.int64)
        counts = np.zeros((nrows, 1 << precision), dtype=np.uint64)
        sites_dropped = 0
        filled_threads = _fill(precision, threads, names.view(np.uint8).reshape(nthreads, FH_THREAD_NAME), results,
                               targets, rows, counts, &filled_targets, &filled_rows,
                               sites, site_rows, site_counts, &filled_sites, &filled_site_rows, &sites_dropped)
        if filled_threads >= 0:
            break
    return {
        "precision": precision,
        "threads": threads[:filled_threads],
        "names": names[:filled_threads],
        "results": results[:filled_threads],
        "targets": targets[:filled_targets],
        "rows": rows[:filled_rows],
        "counts": counts[:filled_rows],
        "sites": sites[:filled_sites],
        "site_rows": site_rows[:filled_site_rows],
        "site_counts": site_counts[:filled_site_rows],
        "sites_dropped": sites_dropped,
        "unregistered_out_of_memory": fh_read_u64(&fh_rt.unregistered_out_of_memory),
        "config": config(),
        "running": bool(fh_running()),
        "poisoned": bool(fh_poisoned()),
        "session_ns": fh_monotonic_ns() - _session_start_ns if _config is not None else 0,
        "session": fh_read_u32(&fh_rt.epoch),
    }


cdef Py_ssize_t _fill(uint32_t precision, uint64_t[:, ::1] threads, unsigned char[:, ::1] names,
                      uint64_t[:, :, ::1] results, uint64_t[:, ::1] targets, long long[:, ::1] rows,
                      uint64_t[:, ::1] counts, Py_ssize_t *filled_targets, Py_ssize_t *filled_rows,
                      uint64_t[:, ::1] sites, long long[:, ::1] site_rows, uint64_t[:, ::1] site_counts,
                      Py_ssize_t *filled_sites, Py_ssize_t *filled_site_rows, uint64_t *sites_dropped) noexcept nogil:
    """Copies every in-session thread into the (zeroed) arrays. Returns the
    number of threads copied, or -1 when an array was too small."""
    cdef fh_thread *ts
    cdef fh_target *t
    cdef Py_ssize_t ti = 0, gi = 0, ri = 0, si = 0, sri = 0
    cdef fh_site **thread_sites
    cdef fh_site *site
    cdef uint32_t i, r, c, k, n, nrow = fh_bucket_rows(precision), width = 1u << precision
    cdef uint64_t *row
    cdef const uint64_t *site_row
    cdef uint64_t **nested
    cdef int kind
    fh_registry_lock()
    ts = fh_rt.threads
    while ts != NULL:
        if not fh_thread_in_session(ts):
            ts = ts.next
            continue
        if ti >= threads.shape[0]:
            fh_registry_unlock()
            return -1
        fh_copy_thread_record(ts, &threads[ti, 0])
        memcpy(&names[ti, 0], ts.name, FH_THREAD_NAME)
        for c in range(FH_CALLS):
            for k in range(FH_RESULTS):
                results[ti, c, k] = fh_read_u64(&ts.results[c][k])
        # The thread's callback histogram, cut into rows like the others; an
        # empty row is left in place (still zero) and overwritten by the next.
        for r in range(nrow):
            if ri >= rows.shape[0]:
                fh_registry_unlock()
                return -1
            fh_add_counts(&counts[ri, 0], &ts.callback_counts[r * width], width)
            if _row_is_empty(&counts[ri, 0], width):
                continue
            fh_copy_row_record(ti, -1, FH_HIST_CALLBACK, r, &rows[ri, 0])
            ri += 1
        n = fh_thread_ntargets(ts)
        for i in range(n):
            t = ts.targets[i]
            if gi >= targets.shape[0]:
                fh_registry_unlock()
                return -1
            fh_copy_target_record(ti, t, &targets[gi, 0])
            # Nested rows first: a frame closing meanwhile adds to INCLUSIVE
            # before NESTED_INCLUSIVE, so reading in the opposite order keeps
            # INCLUSIVE - NESTED_INCLUSIVE from going negative.
            nested = fh_read_nested(t)
            for kind in range(3):
                for r in range(t.rows_per_hist):
                    if kind == 0:
                        row = NULL if nested == NULL else fh_read_row(&nested[r])
                    elif kind == 1:
                        row = NULL if nested == NULL else fh_read_row(&nested[r + t.rows_per_hist])
                    else:
                        row = fh_read_row(&t.rows[r])
                    if row == NULL:
                        continue
                    if ri >= rows.shape[0]:
                        fh_registry_unlock()
                        return -1
                    fh_add_counts(&counts[ri, 0], row, width)
                    fh_copy_row_record(ti, gi, _ROW_KINDS[kind], r, &rows[ri, 0])
                    ri += 1
            gi += 1
        n = fh_thread_nsites(ts)
        thread_sites = fh_thread_sites(ts)
        for i in range(n):
            if si >= sites.shape[0]:
                fh_registry_unlock()
                return -1
            site = thread_sites[i]
            fh_copy_site_record(ti, site, &sites[si, 0])
            # Only the rows the site has; one made since the sizing may not
            # fit (the caller sizes again).
            for r in range(FH_SITE_ROWS):
                site_row = fh_site_row(site, r)
                if site_row == NULL:
                    continue
                if sri >= site_rows.shape[0]:
                    fh_registry_unlock()
                    return -1
                fh_add_counts(&site_counts[sri, 0], site_row, FH_SITE_WIDTH)
                fh_copy_site_row_record(si, r, &site_rows[sri, 0])
                sri += 1
            si += 1
        sites_dropped[0] += fh_read_u64(&ts.sites_dropped)
        ti += 1
        ts = ts.next
    fh_registry_unlock()
    filled_targets[0] = gi
    filled_rows[0] = ri
    filled_sites[0] = si
    filled_site_rows[0] = sri
    return ti


# A target's histograms in the order _fill reads them (see there).
cdef int[3] _ROW_KINDS = [FH_HIST_NESTED_INCLUSIVE, FH_HIST_NESTED_EXCLUSIVE, FH_HIST_INCLUSIVE]


cdef bint _row_is_empty(const uint64_t *counts, uint32_t width) noexcept nogil:
    cdef uint32_t b
    for b in range(width):
        if counts[b]:
            return False
    return True


# ---- histogram kernels (the export layer's Histogram is built on these) ------

def bucket_lower_edges(unsigned precision):
    """The smallest value (ns) of every bucket at `precision`, as uint64, plus
    one last entry: the upper bound of the last bucket (2**64, as float64
    would round it, is given as 2**64 - 1 here)."""
    _checked_int(precision, "precision", FH_PRECISION_MIN, FH_PRECISION_MAX)
    cdef uint32_t n = fh_bucket_count(precision), i
    edges = np.empty(n + 1, dtype=np.uint64)
    cdef uint64_t[::1] out = edges
    for i in range(n):
        out[i] = fh_bucket_lower(i, precision)
    out[n] = 0xFFFFFFFFFFFFFFFF
    return edges


def bucket_rows(unsigned precision):
    """How many power-of-two rows a histogram at `precision` has (rows of
    2**precision buckets): 65 - precision."""
    _checked_int(precision, "precision", FH_PRECISION_MIN, FH_PRECISION_MAX)
    return fh_bucket_rows(precision)


def bucket_index(uint64_t value, unsigned precision):
    """The bucket `value` (ns) falls in at `precision`."""
    return fh_bucket_index(value, precision)


@cython.overflowcheck(False)  # the 128-bit sum wraps its low word on purpose (the carry)
def histogram_add(uint64_t[::1] counts, const uint64_t[::1] values, unsigned precision):
    """Adds every value (ns) to `counts` (a histogram at `precision`).

    Returns (n, min, max, sum); min/max are None when `values` is empty. The
    sum is exact (128-bit), so means of long runs of large values stay exact.
    """
    if precision < FH_PRECISION_MIN or precision > FH_PRECISION_MAX:
        raise ValueError(f"precision must be between {FH_PRECISION_MIN} and {FH_PRECISION_MAX}")
    if counts.shape[0] != fh_bucket_count(precision):
        raise ValueError(f"counts has {counts.shape[0]} buckets; precision {precision} needs {fh_bucket_count(precision)}")
    cdef Py_ssize_t i, n = values.shape[0]
    cdef uint64_t v, lo = 0xFFFFFFFFFFFFFFFF, hi = 0, sum_low = 0, sum_high = 0
    with nogil:
        for i in range(n):
            v = values[i]
            counts[fh_bucket_index(v, precision)] += 1
            if v < lo:
                lo = v
            if v > hi:
                hi = v
            sum_low += v
            sum_high += sum_low < v  # carry
    if n == 0:
        return 0, None, None, 0
    return n, lo, hi, (<object>sum_high << 64) + sum_low


# ---- symbols and memory ---------------------------------------------------------

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char *dli_fname
        void *dli_fbase
        const char *dli_sname
        void *dli_saddr
    int dladdr(const void *addr, Dl_info *info)


def symbol_of(size_t address):
    """What dladdr() knows of `address`: (object file path, load base,
    symbol name or None, symbol address or 0), or None when no loaded object
    contains it."""
    cdef Dl_info info
    if address == 0 or dladdr(<const void *>address, &info) == 0 or info.dli_fname == NULL:
        return None
    fname = info.dli_fname.decode("utf-8", "replace")
    sname = info.dli_sname.decode("utf-8", "replace") if info.dli_sname != NULL else None
    return fname, <size_t>info.dli_fbase, sname, <size_t>info.dli_saddr


cdef Py_ssize_t _fill_memory(uint64_t[:, ::1] out) noexcept nogil:
    """One row per registered thread state: tid, alive, in session, bytes,
    targets. Returns the rows written, or -1 when `out` was too small."""
    cdef fh_thread *ts
    cdef Py_ssize_t i = 0
    fh_registry_lock()
    ts = fh_rt.threads
    while ts != NULL:
        if i >= out.shape[0]:
            fh_registry_unlock()
            return -1
        out[i, 0] = ts.tid
        out[i, 1] = fh_read_u32(&ts.alive)
        out[i, 2] = fh_thread_in_session(ts)
        out[i, 3] = fh_read_u64(&ts.heap_bytes)
        out[i, 4] = fh_thread_ntargets(ts)
        i += 1
        ts = ts.next
    fh_registry_unlock()
    return i


def _memory():
    """Bytes held by every registered thread state, in session or not: a
    uint64 array with one row per state of (tid, alive, in_session, bytes,
    targets)."""
    cdef Py_ssize_t size = 64, n
    while True:
        out = np.zeros((size, 5), dtype=np.uint64)
        n = _fill_memory(out)
        if n >= 0:
            return out[:n]
        size *= 4


cdef extern from "fh_follow.h":
    int fh_term_arm() nogil
    void fh_term_begin() nogil


def _follow_arm_sigterm():
    """In a followed child, right after follow.py installed its SIGTERM
    handler from the main thread: puts the watchdog of fh_follow.h in front
    of it, so that a SIGTERM ends the process even when the main thread
    never gets back to the interpreter to run the handler. Raises OSError
    if it cannot (the handler is then Python's alone)."""
    if fh_term_arm() != 0:
        code = errno
        raise OSError(code, os.strerror(code), "the SIGTERM watchdog")


def _follow_sigterm_begun():
    """Called first by follow.py's SIGTERM handler: the watchdog stands down."""
    fh_term_begin()


include "capture/_capture.pxi"
include "capture/_monitor.pxi"


# ---- C API --------------------------------------------------------------------

cdef fasthost_api _api
_api.abi_version = FASTHOST_ABI_VERSION
_api.size = sizeof(fasthost_api)
_api.LeaveRuntime = FH_API_LeaveRuntime
_api.EnterRuntime = FH_API_EnterRuntime
_api.ReverseLeaveRuntime = FH_API_ReverseLeaveRuntime
_api.ReverseEnterRuntime = FH_API_ReverseEnterRuntime
_C_API = PyCapsule_New(<void *>&_api, FASTHOST_CAPSULE_NAME, NULL)

cdef fh_test_api _test_api
_test_api.corrupt_current_thread = fh_test_corrupt_current
_test_api.set_manual_time = fh_clock_set_manual
_test_api.add_site_samples = fh_test_add_site_samples
_TEST_API = PyCapsule_New(<void *>&_test_api, FH_TEST_CAPSULE_NAME, NULL)


def function_pointers():
    """C addresses of the four transition functions, in the CLR's IDL order
    (LeaveRuntime, EnterRuntime, ReverseLeaveRuntime, ReverseEnterRuntime).

    Each takes what its C API counterpart takes (``size_t`` target for
    LeaveRuntime, nothing otherwise) and returns an ``int32_t`` HRESULT; they
    need no GIL, so ctypes-loaded libraries may call them from any thread.
    """
    return {
        "LeaveRuntime": <size_t>FH_API_LeaveRuntime,
        "EnterRuntime": <size_t>FH_API_EnterRuntime,
        "ReverseLeaveRuntime": <size_t>FH_API_ReverseLeaveRuntime,
        "ReverseEnterRuntime": <size_t>FH_API_ReverseEnterRuntime,
    }
