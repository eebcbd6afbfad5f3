"""docs/protocol.md §5, core rows: the C-level and the Python-level pair, each next to
its baselines in the same run. `python bench/report.py` turns the saved JSON
into the ratio table of the README.

    pytest bench/test_core_bench.py --benchmark-json=bench/core.json
"""

import pytest

import fasthost

from .loops import UNROLL, unrolled
from .native import load
from .peers import PurePythonRecorder

C_PAIRS = 200_000
PY_ITERATIONS = 100
PY_PAIRS = PY_ITERATIONS * UNROLL
TARGET = 0x7F00_1234_5678
native = load()


@pytest.fixture
def tsc_recording():
    if not fasthost._core.tsc_available():
        pytest.skip("the C pair budget is measured on the tsc clock; this CPU has no invariant TSC")
    fasthost.start(clock="tsc")
    yield
    fasthost.stop()


def per_pair(benchmark, pairs):
    benchmark.extra_info["pairs_per_round"] = pairs


@pytest.mark.benchmark(group="c-pair")
def test_c_api_pair(benchmark, tsc_recording):
    per_pair(benchmark, C_PAIRS)
    benchmark(native.capi_pair_loop, C_PAIRS, TARGET)
    assert fasthost.snapshot().totals["calls"]["leave"] >= C_PAIRS


@pytest.mark.benchmark(group="c-pair")
def test_c_minimal_pair(benchmark, tsc_recording):
    per_pair(benchmark, C_PAIRS)
    benchmark(native.minimal_pair_loop, C_PAIRS, TARGET)


@pytest.mark.benchmark(group="python-pair")
def test_python_fasthost_pair(benchmark, tsc_recording):
    per_pair(benchmark, PY_PAIRS)
    run = unrolled(
        "leave(t); enter()", PY_ITERATIONS, leave=fasthost.leave_runtime, enter=fasthost.enter_runtime, t=TARGET
    )
    benchmark(run)
    assert fasthost.snapshot().totals["results"]["S_OK"] >= 2 * PY_PAIRS


@pytest.mark.benchmark(group="python-pair")
def test_python_two_empty_builtins(benchmark):
    per_pair(benchmark, PY_PAIRS)
    benchmark(unrolled("noop1(t); noop()", PY_ITERATIONS, noop1=native.noop1, noop=native.noop, t=TARGET))


@pytest.mark.benchmark(group="python-pair")
def test_python_minimal_pair_builtins(benchmark):
    per_pair(benchmark, PY_PAIRS)
    leave, enter = native.minimal_leave, native.minimal_enter
    benchmark(unrolled("leave(t); enter()", PY_ITERATIONS, leave=leave, enter=enter, t=TARGET))


@pytest.mark.benchmark(group="python-pair")
def test_python_pure_python_recorder(benchmark):
    per_pair(benchmark, PY_PAIRS)
    recorder = PurePythonRecorder()
    run = unrolled(
        "leave(t); enter()", PY_ITERATIONS, leave=recorder.leave_runtime, enter=recorder.enter_runtime, t=TARGET
    )
    benchmark(run)
    assert sum(recorder.histogram.values()) >= PY_PAIRS


SCALING_PAIRS = 500_000


@pytest.mark.benchmark(group="threads")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["fasthost", "mutex"])
def test_native_threads_pairs(benchmark, tsc_recording, kind, threads):
    """Wall time of `threads` native threads doing SCALING_PAIRS pairs each:
    aggregate throughput = threads x pairs / time (bench/report.py)."""
    benchmark.extra_info["pairs_per_round"] = SCALING_PAIRS * threads
    benchmark(native.scaling_run, kind, threads, SCALING_PAIRS)
