"""docs/protocol.md §5, capture rows: an instrumented ctypes call next to the same call
uninstrumented; capture_builtins() on a builtin-call-heavy loop next to a
minimal C profile hook, cProfile and yappi, all in one run.

    pytest bench/test_capture_bench.py --benchmark-json=bench/capture.json
"""

import cProfile
import ctypes
import ctypes.util
import math

import pytest

import fasthost
import fasthost.ctypes

from .loops import UNROLL, unrolled
from .native import load

CTYPES_ITERATIONS = 200
BUILTIN_ITERATIONS = 200
native = load()


def libm(instrumented):
    lib = ctypes.CDLL(ctypes.util.find_library("m"))
    lib.cos.restype = ctypes.c_double
    lib.cos.argtypes = [ctypes.c_double]
    return fasthost.ctypes.instrument(lib) if instrumented else lib


def per_call(benchmark, calls):
    benchmark.extra_info["pairs_per_round"] = calls


@pytest.fixture
def tsc_recording():
    fasthost.start(clock="tsc" if fasthost._core.tsc_available() else "monotonic")
    yield
    fasthost.stop()


@pytest.mark.benchmark(group="ctypes-call")
def test_ctypes_cos_uninstrumented(benchmark):
    per_call(benchmark, CTYPES_ITERATIONS * UNROLL)
    benchmark(unrolled("cos(0.5)", CTYPES_ITERATIONS, cos=libm(False).cos))


@pytest.mark.benchmark(group="ctypes-call")
def test_ctypes_cos_instrumented(benchmark, tsc_recording):
    per_call(benchmark, CTYPES_ITERATIONS * UNROLL)
    benchmark(unrolled("cos(0.5)", CTYPES_ITERATIONS, cos=libm(True).cos))
    assert fasthost.snapshot().targets["calls"][0] >= CTYPES_ITERATIONS * UNROLL


# A loop of cheap builtin calls: what a profile hook slows down the most.
BUILTIN_STATEMENT = "cos(x); len(s); abs(-1)"
BUILTINS = {"cos": math.cos, "len": len, "abs": abs, "x": 0.5, "s": "abc"}


def builtin_loop():
    return unrolled(BUILTIN_STATEMENT, BUILTIN_ITERATIONS, **BUILTINS)


def builtin_calls(benchmark):
    per_call(benchmark, BUILTIN_ITERATIONS * UNROLL * 3)


@pytest.mark.benchmark(group="builtins-hook")
def test_builtins_no_hook(benchmark):
    builtin_calls(benchmark)
    benchmark(builtin_loop())


@pytest.mark.benchmark(group="builtins-hook")
def test_builtins_minimal_c_hook(benchmark):
    builtin_calls(benchmark)
    run = builtin_loop()
    native.minimal_profile_hook(True)
    try:
        benchmark(run)
    finally:
        native.minimal_profile_hook(False)


@pytest.mark.benchmark(group="builtins-hook")
def test_builtins_fasthost_capture(benchmark, tsc_recording):
    builtin_calls(benchmark)
    run = builtin_loop()
    with fasthost.capture_builtins():
        benchmark(run)
    assert fasthost.snapshot().totals["calls"]["leave"] >= BUILTIN_ITERATIONS * UNROLL * 3


@pytest.mark.benchmark(group="builtins-hook")
def test_builtins_cprofile(benchmark):
    builtin_calls(benchmark)
    loop = builtin_loop()
    profiler = cProfile.Profile()

    # Enabled inside the round: pytest-benchmark itself chokes on a
    # profiler left installed between rounds.
    def run():
        profiler.enable()
        loop()
        profiler.disable()

    benchmark(run)


@pytest.mark.benchmark(group="builtins-hook")
def test_builtins_yappi(benchmark):
    yappi = pytest.importorskip("yappi")
    builtin_calls(benchmark)
    run = builtin_loop()
    yappi.set_clock_type("wall")
    yappi.start(builtins=True)
    try:
        benchmark(run)
    finally:
        yappi.stop()
        yappi.clear_stats()
