"""The capture adapters on real libraries: ctypes (libc, libm), callbacks,
cffi's ABI mode, and builtin C calls through the profile hook."""

import cProfile
import ctypes
import ctypes.util
import math
import sys
import threading

import pytest

import fasthost
import fasthost.cffi
import fasthost.ctypes
from fasthost import HResult, _core, _testing

LIBM_PATH = ctypes.util.find_library("m")
LIBC_PATH = ctypes.util.find_library("c")
INT_COMPARATOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))


@pytest.fixture
def libm():
    lib = ctypes.CDLL(LIBM_PATH)
    lib.cos.restype = ctypes.c_double
    lib.cos.argtypes = [ctypes.c_double]
    return fasthost.ctypes.instrument(lib)


@pytest.fixture
def libc():
    return fasthost.ctypes.instrument(ctypes.CDLL(LIBC_PATH))


def address(function):
    return ctypes.cast(function, ctypes.c_void_p).value


def by_symbol(snap):
    return {str(row["symbol"]): row for row in snap.targets}


# ---- ctypes ---------------------------------------------------------------------


def test_instrumented_call_is_a_frame_with_the_real_c_address(recording, libm):
    assert libm.cos(0.0) == 1.0
    assert fasthost.depth() == 0
    (row,) = fasthost.snapshot().targets
    assert row["target"] == address(libm.cos)
    assert row["symbol"] == "libm.so.6!cos"
    assert row["calls"] == 1
    assert fasthost.ctypes.address_of(libm.cos) == address(libm.cos)


def test_instrumented_functions_stay_real_ctypes_function_pointers(recording, libm, libc):
    cos = libm.cos
    assert isinstance(cos, ctypes._CFuncPtr)
    assert fasthost.ctypes.is_instrumented(cos)
    assert cos.argtypes == [ctypes.c_double]
    assert cos.restype is ctypes.c_double
    assert ctypes.cast(cos, ctypes.c_void_p).value == fasthost.ctypes.address_of(cos)
    # Passed as an argument (a function pointer into C): qsort calls strcmp-like code through it.
    values = (ctypes.c_int * 3)(3, 1, 2)
    compare = INT_COMPARATOR(lambda a, b: a[0] - b[0])
    libc.qsort(values, 3, ctypes.sizeof(ctypes.c_int), compare)
    assert list(values) == [1, 2, 3]
    # errcheck is called and can replace the result.
    libm.sqrt.restype = ctypes.c_double
    libm.sqrt.argtypes = [ctypes.c_double]
    libm.sqrt.errcheck = lambda result, func, args: result * 10
    assert libm.sqrt(4.0) == 20.0


def test_a_call_that_raises_still_closes_its_frame(recording, libm):
    with pytest.raises(ctypes.ArgumentError):
        libm.cos("not a double")
    libm.floor.argtypes = [ctypes.c_double]
    libm.floor.errcheck = lambda *args: 1 / 0
    with pytest.raises(ZeroDivisionError):
        libm.floor(1.5)
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert snap.totals["errors"] == 0
    assert snap.totals["calls"]["leave"] == snap.totals["calls"]["enter"] == 2


def test_functions_fetched_before_instrumenting_are_instrumented_in_place(recording):
    lib = ctypes.CDLL(LIBM_PATH)
    early = lib.fabs
    early.restype = ctypes.c_double
    early.argtypes = [ctypes.c_double]
    fasthost.ctypes.instrument(lib)
    assert early(-2.0) == 2.0
    assert fasthost.snapshot().totals["calls"]["leave"] == 1
    fasthost.ctypes.uninstrument(lib)
    assert early(-3.0) == 3.0
    assert not fasthost.ctypes.is_instrumented(early)
    assert fasthost.snapshot().totals["calls"]["leave"] == 1


def test_item_access_is_instrumented_too(recording, libm):
    cos = libm["cos"]
    cos.restype = ctypes.c_double
    cos.argtypes = [ctypes.c_double]
    assert cos(0.0) == 1.0
    assert fasthost.snapshot().totals["calls"]["leave"] == 1


def test_calls_when_not_recording_are_plain_calls(libm):
    assert libm.cos(0.0) == 1.0
    assert fasthost.depth() == 0


def test_refused_open_does_not_close_the_callers_frame(libm):
    # The protocol's second open is refused at max_depth 1 and stays open,
    # unrecorded; nothing opens inside it, so the instrumented call is
    # refused too (no entry, no close) and the closes still pair.
    fasthost.start(clock="monotonic", max_depth=1)
    try:
        with fasthost.unmanaged(0x1234) as opened:
            assert opened is HResult.S_OK
            assert fasthost.leave_runtime(0x5678) == HResult.E_OUTOFMEMORY
            assert libm.cos(0.0) == 1.0  # refused: E_OUTOFMEMORY, and no close
            assert fasthost.depth() == 2
            assert fasthost.enter_runtime() == HResult.HOST_E_CLRNOTAVAILABLE
            assert fasthost.depth() == 1
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert snap.totals["results"]["E_OUTOFMEMORY"] == 2
    assert [int(t) for t in snap.targets["target"]] == [0x1234]


def test_an_instrumented_call_records_inside_a_protocol_nesting_at_max_depth(libm):
    # The captures' frames have max_depth of their own: the protocol's full
    # nesting leaves the instrumented call its room.
    fasthost.start(clock="monotonic", max_depth=1)
    try:
        with fasthost.unmanaged(0x1234) as opened:
            assert opened is HResult.S_OK
            assert libm.cos(0.0) == 1.0
            assert fasthost.depth() == 1
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert snap.totals["results"]["E_OUTOFMEMORY"] == 0
    cos = fasthost.ctypes.address_of(libm.cos)
    assert sorted(int(t) for t in snap.targets["target"]) == sorted([0x1234, cos])
    row = snap.targets[snap.targets["target"] == 0x1234][0]
    assert row["exclusive_ns"] < row["total_ns"]  # cos's time is 0x1234's child time


def test_instrument_rejects_non_libraries():
    with pytest.raises(TypeError, match="ctypes library"):
        fasthost.ctypes.instrument("libm")
    with pytest.raises(TypeError, match="function type"):
        fasthost.ctypes.callback(ctypes.c_int)
    with pytest.raises(TypeError, match="function pointer"):
        fasthost.ctypes.address_of(42)


def sort_with_callback(libc, comparator_type, values):
    array = (ctypes.c_int * len(values))(*values)
    libc.qsort(array, len(values), ctypes.sizeof(ctypes.c_int), comparator_type(lambda a, b: a[0] - b[0]))
    return list(array)


def test_callbacks_nest_inside_qsort_and_make_exclusive_smaller(recording, libc):
    comparator = fasthost.ctypes.callback(INT_COMPARATOR)
    assert fasthost.ctypes.callback(INT_COMPARATOR) is comparator
    assert sort_with_callback(libc, comparator, list(range(50, 0, -1))) == list(range(1, 51))
    snap = fasthost.snapshot()
    (qsort,) = snap.targets
    assert qsort["symbol"] == "libc.so.6!qsort"
    callbacks = snap.calls("reverse_enter")
    assert callbacks >= 49
    assert snap.calls("reverse_leave", HResult.S_OK) == callbacks
    assert snap.threads["max_depth"][0] == 2  # U -> M
    assert qsort["exclusive_ns"] < qsort["total_ns"]
    assert snap.histogram("callback").total == callbacks


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # ctypes reports the error
def test_callback_that_raises_closes_its_frame(recording, libc):
    def compare(a, b):
        raise RuntimeError("boom")

    array = (ctypes.c_int * 3)(3, 2, 1)
    libc.qsort(array, 3, ctypes.sizeof(ctypes.c_int), fasthost.ctypes.callback(INT_COMPARATOR)(compare))
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert snap.calls("reverse_enter") == snap.calls("reverse_leave", HResult.S_OK) >= 1


def test_callbacks_in_threads_are_counted_per_thread(recording, libc):
    comparator = fasthost.ctypes.callback(INT_COMPARATOR)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(sort_with_callback(libc, comparator, [5, 4, 3, 2, 1])))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[1, 2, 3, 4, 5]] * 4
    snap = fasthost.snapshot()
    workers = snap.threads[snap.threads["name"] != "MainThread"]
    assert len(workers) == 4
    assert set(workers["leave"].tolist()) == {1}
    assert all(w["reverse_enter"] == w["reverse_leave"] >= 4 for w in workers)
    assert snap.totals["errors"] == 0


def test_enable_instruments_libraries_and_callback_types_created_afterwards(recording):
    before = ctypes.CDLL(LIBC_PATH)
    fasthost.ctypes.enable()
    try:
        assert fasthost.ctypes.enabled()
        after = ctypes.CDLL(LIBC_PATH)
        loader = ctypes.cdll.LoadLibrary(LIBM_PATH)
        pydll = ctypes.PyDLL(LIBC_PATH)
        comparator = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    finally:
        fasthost.ctypes.disable()
    assert not fasthost.ctypes.is_instrumented(before)
    assert fasthost.ctypes.is_instrumented(after)
    assert fasthost.ctypes.is_instrumented(loader)
    assert fasthost.ctypes.is_instrumented(pydll)
    assert fasthost.ctypes.is_instrumented(comparator)
    assert ctypes.CFUNCTYPE is not None
    assert not fasthost.ctypes.is_instrumented(ctypes.CFUNCTYPE(ctypes.c_int))
    assert sort_with_callback(after, comparator, [2, 1]) == [1, 2]
    pydll.strlen.argtypes = [ctypes.c_char_p]
    assert pydll.strlen(b"abc") == 3
    snap = fasthost.snapshot()
    assert snap.calls("leave") == 2
    assert snap.calls("reverse_enter") == 1


# ---- cffi -------------------------------------------------------------------------


@pytest.fixture
def cffi_libm():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("double cos(double); double sqrt(double);")
    return ffi, ffi.dlopen(LIBM_PATH)


def test_cffi_functions_are_frames_with_their_c_address(recording, cffi_libm):
    ffi, lib = cffi_libm
    early = lib.cos  # fetched before instrumenting
    cos_address = int(ffi.cast("uintptr_t", early))
    fasthost.cffi.instrument(lib)
    assert fasthost.cffi.is_instrumented(lib)
    assert lib.cos(0.0) == 1.0
    assert lib.sqrt(9.0) == 3.0
    assert lib.cos.function is early
    snap = fasthost.snapshot()
    rows = by_symbol(snap)
    assert rows["libm.so.6!cos"]["target"] == cos_address
    assert rows["libm.so.6!sqrt"]["calls"] == 1
    fasthost.cffi.uninstrument(lib)
    assert lib.cos is early
    with pytest.raises(TypeError):
        lib.cos("x")
    assert fasthost.snapshot().totals["calls"]["leave"] == 2


def test_cffi_enable_instruments_libraries_opened_afterwards(recording, cffi_libm):
    ffi, _ = cffi_libm
    fasthost.cffi.enable()
    try:
        lib = ffi.dlopen(LIBM_PATH)
    finally:
        fasthost.cffi.disable()
    assert fasthost.cffi.is_instrumented(lib)
    assert lib.sqrt(16.0) == 4.0
    assert fasthost.snapshot().totals["calls"]["leave"] == 1


def test_cffi_instrument_rejects_other_objects():
    with pytest.raises(TypeError, match="dlopen"):
        fasthost.cffi.instrument(object())


# ---- builtins ----------------------------------------------------------------------


def builtin_work(n):
    total = 0.0
    for i in range(n):
        total += math.cos(i)
    return total


def test_builtin_calls_are_recorded_with_their_c_function(recording):
    with fasthost.capture_builtins():
        builtin_work(100)
        [].append(1)
    assert fasthost.depth() == 0
    rows = by_symbol(fasthost.snapshot())
    cos = [row for symbol, row in rows.items() if symbol == "math.cos"]
    assert len(cos) == 1
    assert cos[0]["calls"] == 100
    assert cos[0]["symbol"].startswith("math.")
    assert any(symbol == "list.append" for symbol in rows)  # a method descriptor


def test_builtin_that_raises_closes_its_frame(recording):
    with fasthost.capture_builtins():
        with pytest.raises(ValueError):
            math.sqrt(-1.0)
        assert fasthost.depth() == 0
    rows = by_symbol(fasthost.snapshot())
    (sqrt,) = [row for symbol, row in rows.items() if symbol == "math.sqrt"]
    assert sqrt["calls"] == 1


def test_builtins_are_captured_in_threads_started_before_and_after(recording):
    started = threading.Event()
    go = threading.Event()

    def early_worker():
        started.set()
        go.wait()
        builtin_work(30)

    early = threading.Thread(target=early_worker, name="early")
    early.start()
    started.wait()
    with fasthost.capture_builtins():
        go.set()
        early.join()
        late = threading.Thread(target=builtin_work, args=(20,), name="late")
        late.start()
        late.join()
        builtin_work(10)
    snap = fasthost.snapshot()
    # Ended threads are named by their OS name, so look them up by id.
    for thread, expected in ((early.native_id, 30), (late.native_id, 20), ("MainThread", 10)):
        cos = snap.histogram(target=_math_cos(snap), thread=thread)
        assert cos.total == expected, thread


def _math_cos(snap):
    (symbol,) = [str(s) for s in snap.targets["symbol"] if str(s) == "math.cos"]
    return symbol


def test_fasthost_own_functions_are_not_targets(recording):
    with fasthost.capture_builtins():
        assert fasthost.leave_runtime(0x77) is HResult.S_OK
        assert fasthost.enter_runtime() is HResult.S_OK
    snap = fasthost.snapshot()
    assert 0x77 in snap.targets["target"].tolist()
    assert snap.totals["errors"] == 0
    assert not any("leave_runtime" in str(s) for s in snap.targets["symbol"])


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_fasthost_own_functions_stay_no_targets_after_their_address_was_one(capture):
    """The captures' fast paths take targets from a cache that never holds
    fasthost's own code, so passing leave_runtime's own C address as a
    target (once, by hand) does not make later calls of leave_runtime
    frames around the frames they open. (The manual clock: the fast paths
    need a clock read without a call.)"""
    own = _testing.c_function_address(fasthost.leave_runtime)
    fasthost.start(clock="manual")
    try:
        with fasthost.capture_native() if capture == "native" else fasthost.capture_builtins():
            assert fasthost.leave_runtime(own) is HResult.S_OK
            assert fasthost.enter_runtime() is HResult.S_OK
            for _ in range(5):
                assert fasthost.leave_runtime(0x77) is HResult.S_OK
                assert fasthost.enter_runtime() is HResult.S_OK
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    calls = {int(row["target"]): int(row["calls"]) for row in snap.targets}
    assert (calls[0x77], calls[own], snap.totals["errors"]) == (5, 1, 0)


def test_capture_starts_and_stops_a_session_when_none_runs():
    capture = fasthost.capture_builtins().start()
    assert fasthost.running()
    builtin_work(5)
    capture.stop()
    assert not fasthost.running()
    assert any(str(s) == "math.cos" for s in fasthost.snapshot().targets["symbol"])


def test_only_one_capture_at_a_time(recording):
    with fasthost.capture_builtins(), pytest.raises(RuntimeError, match="already"):
        fasthost.capture_builtins().start()


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="3.12+: cProfile and fasthost each have a sys.monitoring tool id"
)
def test_previous_profiler_is_set_aside_and_gets_its_hook_back(recording):
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with fasthost.capture_builtins():
            builtin_work(3)  # fasthost's hook: cProfile does not see these
        math.cos(0.0)  # cProfile's hook again
    finally:
        profiler.disable()
    profiler.create_stats()
    cos_calls = [stats[0] for (_, _, name), stats in profiler.stats.items() if name == "<built-in method math.cos>"]
    assert cos_calls == [1]
    assert _math_cos(fasthost.snapshot())  # and fasthost saw its three
    assert fasthost.snapshot().histogram(target=_math_cos(fasthost.snapshot())).total == 3


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_cprofile_keeps_running_alongside_a_capture_on_312_and_later(recording):
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with fasthost.capture_builtins():
            builtin_work(3)
            tool = _core._monitor_tool_id()
        math.cos(0.0)
    finally:
        profiler.disable()
    profiler.create_stats()
    cos_calls = [stats[0] for (_, _, name), stats in profiler.stats.items() if name == "<built-in method math.cos>"]
    assert cos_calls == [4]  # cProfile saw every call, fasthost's three included
    assert fasthost.snapshot().histogram(target=_math_cos(fasthost.snapshot())).total == 3
    assert tool not in (0, 1, 2, 5, None)  # not the debugger's, coverage's, profiler's or optimizer's
    assert _core._monitor_tool_id() is None  # given back
    assert sys.monitoring.get_tool(tool) is None


def test_instrument_takes_llvmlites_ffi_lib_and_records_its_calls(recording):
    llvm = pytest.importorskip("llvmlite.binding")
    from llvmlite.binding import ffi

    llvm.get_default_triple()  # a function handed out before instrumenting
    fasthost.ctypes.instrument(ffi.lib)
    try:
        for _ in range(3):
            llvm.get_default_triple()
        rows = {str(r["symbol"]): int(r["calls"]) for r in fasthost.snapshot().targets}
    finally:
        fasthost.ctypes.uninstrument(ffi.lib)
    assert rows["libllvmlite.so!LLVMPY_GetDefaultTargetTriple"] == 3


@pytest.mark.parametrize("wrong", [42, "libm.so.6", object()])
def test_instrument_says_what_to_pass_for_anything_else(wrong):
    with pytest.raises(TypeError, match=r"a ctypes library .* or an object that wraps one in \._lib"):
        fasthost.ctypes.instrument(wrong)


def test_enable_warns_about_libraries_loaded_before_it():
    plain = ctypes.CDLL(LIBM_PATH)  # loaded before, not instrumented
    try:
        with pytest.warns(fasthost.ctypes.NotInstrumentedWarning, match=r"loaded before \(.*libm"):
            fasthost.ctypes.enable()
    finally:
        fasthost.ctypes.disable()
    assert not fasthost.ctypes.is_instrumented(plain)
