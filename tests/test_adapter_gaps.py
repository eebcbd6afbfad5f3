"""Gaps in the capture adapters, on real libraries: ctypes functions fetched
by item access (``lib["cos"]``), and cffi callbacks (``ffi.callback``)
called from a real libc ``qsort``."""

import ctypes
import ctypes.util

import pytest

import fasthost
import fasthost.cffi
import fasthost.ctypes
from fasthost import HResult

LIBM_PATH = ctypes.util.find_library("m")
QSORT_CDEF = "void qsort(void *base, size_t nmemb, size_t size, int(*compar)(const void *, const void *));"
COMPARATOR = "int(const void *, const void *)"


def cos_address():
    """cos's C address, from a library fasthost has never seen."""
    return ctypes.cast(ctypes.CDLL(LIBM_PATH).cos, ctypes.c_void_p).value


def typed(function):
    function.restype = ctypes.c_double
    function.argtypes = [ctypes.c_double]
    return function


def recorded_targets(call):
    """The targets (address -> calls) recorded while ``call()`` runs."""
    fasthost.start(clock="monotonic")
    try:
        call()
    finally:
        fasthost.stop()
    return {int(row["target"]): int(row["calls"]) for row in fasthost.snapshot().targets}


# ---- ctypes: lib["name"] ---------------------------------------------------------------


def test_item_access_on_an_instrumented_library_is_a_u_frame_on_the_function(recording):
    lib = fasthost.ctypes.instrument(ctypes.CDLL(LIBM_PATH))
    cos = typed(lib["cos"])
    assert fasthost.ctypes.is_instrumented(cos)
    assert cos(0.0) == 1.0
    assert cos(1.0) == pytest.approx(0.5403023058681398)  # argtypes/restype converted
    with pytest.raises(ctypes.ArgumentError):
        cos("not a double")
    (row,) = fasthost.snapshot().targets
    assert row["target"] == cos_address()
    assert row["symbol"] == "libm.so.6!cos"
    assert row["calls"] == 3


def test_item_access_on_a_library_loaded_after_enable(recording):
    fasthost.ctypes.enable()
    try:
        lib = ctypes.CDLL(LIBM_PATH)
    finally:
        fasthost.ctypes.disable()
    cos, by_attribute = typed(lib["cos"]), typed(lib.cos)
    assert cos(0.0) == by_attribute(0.0) == 1.0
    (row,) = fasthost.snapshot().targets
    assert row["target"] == cos_address()
    assert row["calls"] == 2  # item and attribute access alike


def test_item_access_before_instrumenting_changes_class_in_place_like_attributes():
    lib = ctypes.CDLL(LIBM_PATH)
    by_item, by_attribute = typed(lib["cos"]), typed(lib.cos)
    by_ordinal_name = typed(lib["sqrt"])
    fasthost.ctypes.instrument(lib)
    assert fasthost.ctypes.is_instrumented(by_attribute)
    assert fasthost.ctypes.is_instrumented(by_item)
    assert fasthost.ctypes.is_instrumented(by_ordinal_name)
    targets = recorded_targets(lambda: (by_item(0.0), by_attribute(0.0), by_ordinal_name(4.0)))
    assert targets[cos_address()] == 2
    assert sum(targets.values()) == 3
    assert by_ordinal_name(9.0) == 3.0

    fasthost.ctypes.uninstrument(lib)
    assert not fasthost.ctypes.is_instrumented(by_item)
    assert not fasthost.ctypes.is_instrumented(by_attribute)
    assert recorded_targets(lambda: by_item(0.0)) == {}
    assert by_item(0.0) == 1.0  # argtypes/restype survive both class changes


def test_instrumenting_one_library_leaves_another_librarys_functions_alone():
    mine, other = ctypes.CDLL(LIBM_PATH), ctypes.CDLL(LIBM_PATH)
    theirs = typed(other["cos"])
    fasthost.ctypes.instrument(mine)
    assert not fasthost.ctypes.is_instrumented(theirs)
    assert recorded_targets(lambda: theirs(0.0)) == {}


# ---- cffi: ffi.callback ----------------------------------------------------------------


@pytest.fixture
def libc_qsort():
    """A real libc qsort through cffi's ABI mode, instrumented."""
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(QSORT_CDEF)
    return ffi, fasthost.cffi.instrument(ffi.dlopen(None))


def counting_comparator(ffi):
    """A comparator of ints for qsort and the list its calls are counted in."""
    calls = []

    def compare(a, b):
        calls.append(1)
        x, y = ffi.cast("int *", a)[0], ffi.cast("int *", b)[0]
        return (x > y) - (x < y)

    return compare, calls


def qsort(ffi, lib, values, comparator):
    array = ffi.new("int[]", values)
    lib.qsort(array, len(values), ffi.sizeof("int"), comparator)
    return list(array)


def assert_callbacks_nest_in_qsort(snap, comparator_calls):
    assert comparator_calls > 0
    assert int(snap.threads["reverse_enter"].sum()) == comparator_calls
    assert int(snap.threads["reverse_leave"].sum()) == comparator_calls
    assert snap.calls("reverse_leave", HResult.S_OK) == comparator_calls
    assert snap.totals["errors"] == 0
    assert snap.threads["max_depth"][0] == 2  # U (qsort) -> M (the comparator)
    (row,) = [row for row in snap.targets if str(row["symbol"]).endswith("!qsort")]
    assert row["calls"] == 1
    assert row["exclusive_ns"] <= row["total_ns"]
    assert snap.histogram("callback").total == comparator_calls


def test_cffi_callback_helper_runs_the_function_in_an_m_frame(recording, libc_qsort):
    ffi, lib = libc_qsort
    compare, calls = counting_comparator(ffi)
    comparator = fasthost.cffi.callback(ffi, COMPARATOR, compare)
    assert ffi.typeof(comparator) is ffi.typeof("int(*)(const void *, const void *)")
    assert qsort(ffi, lib, list(range(40, 0, -1)), comparator) == list(range(1, 41))
    assert fasthost.depth() == 0
    assert_callbacks_nest_in_qsort(fasthost.snapshot(), len(calls))


def test_cffi_callback_helper_as_a_decorator(recording, libc_qsort):
    ffi, lib = libc_qsort
    compare, calls = counting_comparator(ffi)
    comparator = fasthost.cffi.callback(ffi, COMPARATOR)(compare)
    assert qsort(ffi, lib, [3, 1, 2, 5, 4], comparator) == [1, 2, 3, 4, 5]
    assert_callbacks_nest_in_qsort(fasthost.snapshot(), len(calls))


@pytest.mark.parametrize("form", ["direct", "decorator"])
def test_cffi_enable_makes_ffi_callback_record_m_frames(recording, libc_qsort, form):
    ffi, lib = libc_qsort
    compare, calls = counting_comparator(ffi)
    fasthost.cffi.enable()
    try:
        comparator = ffi.callback(COMPARATOR, compare) if form == "direct" else ffi.callback(COMPARATOR)(compare)
    finally:
        fasthost.cffi.disable()
    assert qsort(ffi, lib, list(range(25, 0, -1)), comparator) == list(range(1, 26))
    assert_callbacks_nest_in_qsort(fasthost.snapshot(), len(calls))


def test_cffi_disable_gives_ffi_callback_back(recording, libc_qsort):
    ffi, lib = libc_qsort
    compare, calls = counting_comparator(ffi)
    fasthost.cffi.enable()
    fasthost.cffi.disable()
    assert qsort(ffi, lib, [2, 1, 3], ffi.callback(COMPARATOR, compare)) == [1, 2, 3]
    assert len(calls) > 0
    assert fasthost.snapshot().calls("reverse_enter") == 0


def test_cffi_callback_that_raises_closes_its_frame_and_returns_the_error_value(recording, libc_qsort):
    ffi, lib = libc_qsort
    seen = []

    def compare(a, b):
        raise RuntimeError("boom")

    comparator = fasthost.cffi.callback(
        ffi, COMPARATOR, compare, error=0, onerror=lambda exc_type, value, tb: seen.append(exc_type)
    )
    qsort(ffi, lib, [3, 2, 1], comparator)
    assert fasthost.depth() == 0
    assert seen
    assert set(seen) == {RuntimeError}
    snap = fasthost.snapshot()
    assert snap.calls("reverse_enter") == snap.calls("reverse_leave", HResult.S_OK) == len(seen)


def test_cffi_callback_keeps_cffis_own_errors():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    with pytest.raises(TypeError, match="not callable"):
        fasthost.cffi.callback(ffi, COMPARATOR, 42)
    with pytest.raises(TypeError, match="not callable"):
        fasthost.cffi.callback(ffi, COMPARATOR)(42)
    with pytest.raises(TypeError, match="FFI"):
        fasthost.cffi.callback(object(), COMPARATOR, print)


def test_cffi_callback_helper_under_enable_opens_one_frame_per_call(recording, libc_qsort):
    ffi, lib = libc_qsort
    compare, calls = counting_comparator(ffi)
    fasthost.cffi.enable()
    try:
        comparator = fasthost.cffi.callback(ffi, COMPARATOR, compare)
    finally:
        fasthost.cffi.disable()
    qsort(ffi, lib, [4, 3, 2, 1], comparator)
    assert_callbacks_nest_in_qsort(fasthost.snapshot(), len(calls))  # not two M frames per call


def test_cffi_callback_helper_takes_a_compiled_modules_ffi(recording):
    backend = pytest.importorskip("_cffi_backend")
    ffi = backend.FFI()  # the type of a compiled (out-of-line) module's ffi
    increment = fasthost.cffi.callback(ffi, "int(int)", lambda x: x + 1)
    assert increment(41) == 42  # a real call through the C trampoline
    snap = fasthost.snapshot()
    assert snap.calls("reverse_enter") == snap.calls("reverse_leave", HResult.S_OK) == 1
