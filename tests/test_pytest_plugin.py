"""The pytest plugin, through real pytest(-benchmark, -xdist) sessions run by
``pytester`` in subprocesses (the plugin touches process-wide state)."""

import json
import re
import sys

import numpy as np
import pytest

import fasthost
from fasthost.pytest_plugin import Threshold, parse_threshold

# A benchmark whose function makes a known number of foreign calls.
BENCHMARK_FILE = """
import ctypes, ctypes.util
import fasthost.ctypes

libm = fasthost.ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("m")))
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]


def work():
    for _ in range({calls}):
        libm.cos(0.5)


def test_cos_calls(benchmark{fixture}):
    benchmark(work)
"""

FAST = ("-p", "no:cacheprovider", "--benchmark-max-time=0.002", "--benchmark-min-rounds=3")


def write_benchmark(pytester, calls, fixture=True, name="test_bench"):
    pytester.makepyfile(**{name: BENCHMARK_FILE.format(calls=calls, fixture=", fasthost" if fixture else "")})


def benchmarks(path):
    with open(path) as f:
        return {b["name"]: b for b in json.load(f)["benchmarks"]}


def test_extra_info_has_exact_transitions_per_call(pytester):
    write_benchmark(pytester, calls=3)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    bench = benchmarks(pytester.path / "out.json")["test_cos_calls"]
    figures = bench["extra_info"]["fasthost"]
    assert figures["transitions_per_call"] == 3.0
    assert figures["per_call"] == {"leave": 3.0, "enter": 3.0, "reverse_leave": 0.0, "reverse_enter": 0.0}
    assert figures["transitions"] == 3 * figures["calls"]
    # Calibration, warmup and the measured rounds all count: at least the rounds.
    assert figures["calls"] >= bench["stats"]["rounds"] * bench["stats"]["iterations"]
    assert figures["errors"] == {}
    assert 0 < figures["unmanaged_ns"]["p50"] <= figures["unmanaged_ns"]["p99"] <= figures["unmanaged_ns"]["max"]
    (top,) = figures["top_targets"]
    assert top["symbol"] == "libm.so.6!cos"
    assert top["calls_per_call"] == 3.0


def test_pedantic_counts_rounds_times_iterations(pytester):
    pytester.makepyfile(
        test_pedantic=BENCHMARK_FILE.format(calls=2, fixture=", fasthost").replace(
            "benchmark(work)", "benchmark.pedantic(work, rounds=7, iterations=3, warmup_rounds=2)"
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    figures = benchmarks(pytester.path / "out.json")["test_cos_calls"]["extra_info"]["fasthost"]
    # (7 rounds + 2 warmup) x 3 iterations, and one more call for the result.
    assert figures["calls"] == 9 * 3 + 1
    assert figures["transitions"] == 2 * figures["calls"]


def test_fasthost_option_covers_every_benchmark_test(pytester):
    write_benchmark(pytester, calls=2, fixture=False)
    result = pytester.runpytest_subprocess(*FAST, "--fasthost", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    figures = benchmarks(pytester.path / "out.json")["test_cos_calls"]["extra_info"]["fasthost"]
    assert figures["transitions_per_call"] == 2.0
    result.stdout.fnmatch_lines(["*fasthost: transitions per benchmarked call*", "*test_cos_calls*2.000*"])


def test_without_the_option_benchmarks_are_left_alone(pytester):
    write_benchmark(pytester, calls=2, fixture=False)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1)
    assert "fasthost" not in benchmarks(pytester.path / "out.json")["test_cos_calls"]["extra_info"]


def test_fixture_alone_gives_the_tests_delta_snapshot(pytester):
    pytester.makepyfile(
        test_alone="""
        import fasthost as fh

        def test_first(fasthost):
            fh.leave_runtime(0x10)
            fh.enter_runtime()
            snap = fasthost.snapshot()
            assert snap.totals["calls"]["leave"] == 1
            assert snap.targets["target"].tolist() == [0x10]

        def test_second_sees_only_its_own(fasthost):
            assert not fh.running() or fasthost.snapshot().totals["calls"]["leave"] == 0
            fh.leave_runtime(0x20)
            fh.enter_runtime()
            assert fasthost.snapshot().targets["target"].tolist() == [0x20]

        def test_recording_was_stopped_after_each_test():
            assert not fh.running()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_session_capture_instruments_ctypes_loaded_by_tests(pytester):
    pytester.makepyfile(
        test_capture="""
        import ctypes, ctypes.util

        def test_libm(fasthost):
            libm = ctypes.CDLL(ctypes.util.find_library("m"))
            libm.cos.restype = ctypes.c_double
            libm.cos.argtypes = [ctypes.c_double]
            libm.cos(0.0)
            assert fasthost.snapshot().targets["symbol"].tolist() == ["libm.so.6!cos"]
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fasthost-capture=ctypes").assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)  # without the capture, nothing is recorded


def save_baseline(pytester, calls):
    write_benchmark(pytester, calls=calls)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-save=base", "--benchmark-storage=store")
    result.assert_outcomes(passed=1)


def test_gate_fails_when_a_benchmark_makes_one_more_foreign_call(pytester):
    save_baseline(pytester, calls=4)
    write_benchmark(pytester, calls=5)
    result = pytester.runpytest_subprocess(
        *FAST, "--benchmark-storage=store", "--fasthost-compare", "--fasthost-compare-fail=transitions:5%"
    )
    result.assert_outcomes(passed=1)  # the test passed; the session fails on the gate
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*comparison with the baseline*",
            "*test_cos_calls*4.000*5.000*+25.0%*FAILED (transitions:5%)*",
            "    +1 libm.so.6!cos per call (4 -> 5)",
            "FAILED test_bench.py::test_cos_calls (transitions:5%): +1 libm.so.6!cos per call (4 -> 5)",
            "*= fasthost: 1 benchmark(s) beyond --fasthost-compare-fail =*",
        ]
    )
    # The verdict comes after pytest-benchmark's table, at the end.
    lines = result.stdout.lines
    table = max(i for i, line in enumerate(lines) if "Name (time in" in line)
    verdict = max(i for i, line in enumerate(lines) if "fasthost: 1 benchmark(s) beyond" in line)
    assert verdict > table


# The same benchmark, with a call of another target added.
TWO_TARGETS_FILE = BENCHMARK_FILE.replace(
    "        libm.cos(0.5)\n", "        libm.cos(0.5)\n    libm.sin.argtypes = [ctypes.c_double]\n    libm.sin(0.5)\n"
)


def test_gate_names_the_target_a_benchmark_added(pytester):
    save_baseline(pytester, calls=2)
    pytester.makepyfile(test_bench=TWO_TARGETS_FILE.format(calls=2, fixture=", fasthost"))
    result = pytester.runpytest_subprocess(
        *FAST, "--benchmark-storage=store", "--fasthost-compare", "--fasthost-compare-fail=transitions:+0.5"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2.000*3.000*", "    +1 libm.so.6!sin per call (new)"])
    result.stdout.no_fnmatch_line("*libm.so.6!cos per call*")  # unchanged: not listed


def test_gate_shows_p99_in_human_units(pytester):
    save_baseline(pytester, calls=2)
    result = pytester.runpytest_subprocess(*FAST, "--benchmark-storage=store", "--fasthost-compare")
    assert result.ret == pytest.ExitCode.OK
    (row,) = [line for line in result.stdout.lines if line.startswith("test_bench.py::test_cos_calls ")]
    assert re.search(r"\d(\.\d+)? (ns|us|ms|s) ", row), row
    assert not re.search(r"\d{4,} ns", row), row


# The benchmark's test body makes foreign calls of its own around the
# benchmarked function: setup work that is not what is measured.
BODY_CALLS_FILE = BENCHMARK_FILE.replace(
    "    benchmark(work)\n", "    libm.cos(1.0); libm.cos(2.0)\n    benchmark(work)\n    libm.cos(3.0)\n"
)


@pytest.mark.parametrize("disabled", [False, True], ids=["timed", "benchmark-disable"])
def test_calls_in_the_test_body_around_the_benchmark_do_not_count(pytester, disabled):
    pytester.makepyfile(test_bench=BODY_CALLS_FILE.format(calls=3, fixture=", fasthost"))
    extra = ("--benchmark-disable",) if disabled else ()
    result = pytester.runpytest_subprocess(*FAST, *extra, "--fasthost-json=out.json")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    figures = bench["extra_info"]["fasthost"]
    assert figures["transitions_per_call"] == 3.0  # not (3 + 3) / 1 with --benchmark-disable
    assert figures["calls_per_call_by_target"] == {"libm.so.6!cos": 3.0}


# Builtins only, so that every builtin pytest-benchmark's own code calls
# (its timer, its loops) is seen by the capture too.
BUILTINS_FILE = """
import math


def work():
    for _ in range(3):
        math.cos(0.5)


def test_cos_calls(benchmark, fasthost):
    benchmark(work)
"""


# What each capture sees of work(): the builtins capture its C functions;
# the native capture also the call of the C type range.
EXPECTED_BY_CAPTURE = {
    "builtins": (3.0, {"math.cos": 3.0}),
    "native": (4.0, {"math.cos": 3.0, "range": 1.0}),
}


@pytest.mark.parametrize("capture", sorted(EXPECTED_BY_CAPTURE))
def test_transitions_per_call_are_the_same_on_every_run_of_unchanged_code(pytester, capture):
    if capture == "native" and sys.version_info < (3, 12):
        pytest.skip("capture_native sees every call on 3.12+ only")
    pytester.makepyfile(test_bench=BUILTINS_FILE)
    values = set()
    for run in range(10):
        # Rounds and calibration differ from run to run (and so do the
        # timer calls pytest-benchmark makes): the figures must not.
        rounds = f"--benchmark-min-rounds={3 + run}"
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--benchmark-max-time=0.002", rounds, f"--fasthost-capture={capture}",
            f"--fasthost-json=out{run}.json",
        )  # fmt: skip
        result.assert_outcomes(passed=1)
        (bench,) = json.loads((pytester.path / f"out{run}.json").read_text())["benchmarks"]
        figures = bench["extra_info"]["fasthost"]
        values.add((figures["transitions_per_call"], json.dumps(figures["calls_per_call_by_target"], sort_keys=True)))
    assert len(values) == 1, values
    ((per_call, by_target),) = values
    assert (per_call, json.loads(by_target)) == EXPECTED_BY_CAPTURE[capture]


# A test body that makes more distinct call sites than the per-thread
# table holds (max_targets, 1024 by default) before it benchmarks.
SITES_FULL_FILE = """
import math

FILL = "def fill():\\n" + "".join(f"    len('{i}')\\n" for i in range(1100))
exec(FILL)


def work():
    math.cos(0.5)


def test_cos_calls(benchmark, fasthost):
    fill()
    benchmark(work)
"""


def test_figures_say_when_the_call_site_table_was_full(pytester):
    pytester.makepyfile(test_bench=SITES_FULL_FILE)
    result = pytester.runpytest_subprocess(*FAST, "--fasthost-capture=builtins", "--fasthost-json=out.json")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert bench["extra_info"]["fasthost"]["callsites_dropped"] > 0
    result.stdout.fnmatch_lines(["fasthost: test_bench.py::test_cos_calls: * call(s) found the call-site table full*"])


def test_pytest_own_calls_do_not_reach_the_call_site_table(pytester):
    # Collection, fixtures and reporting run outside the capture: the only
    # sites a benchmark's figures see are the test body's and the harness's.
    pytester.makepyfile(test_bench=BUILTINS_FILE)
    result = pytester.runpytest_subprocess(*FAST, "--fasthost-capture=builtins", "--fasthost-json=out.json")
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert bench["extra_info"]["fasthost"]["callsites_dropped"] == 0
    result.stdout.no_fnmatch_line("*call-site table full*")


def test_calls_by_target_keep_the_busiest_and_add_up_the_rest():
    from fasthost.pytest_plugin import OTHER, TARGETS_KEPT, _calls_by_target, target_changes

    rows = np.zeros(TARGETS_KEPT + 3, dtype=[("symbol", "U16"), ("calls", "u8"), ("overflow", "?")])
    rows["symbol"] = [f"f{i}" for i in range(len(rows))]
    rows["calls"] = np.arange(len(rows), 0, -1) * 10
    kept = _calls_by_target(rows, per=10)
    assert len(kept) == TARGETS_KEPT + 1
    assert sum(kept.values()) == rows["calls"].sum() / 10
    assert kept[OTHER] == 3 + 2 + 1
    assert target_changes({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 3.0, "c": 0.5}) == [
        "+1 b per call (2 -> 3)",
        "+0.5 c per call (new)",
    ]
    assert target_changes({"a": 1.0}, {}) == ["-1 a per call (gone)"]


def test_gate_passes_when_nothing_changed(pytester):
    save_baseline(pytester, calls=4)
    result = pytester.runpytest_subprocess(
        *FAST,
        "--benchmark-storage=store",
        "--fasthost-compare=0001",
        "--fasthost-compare-fail=transitions:5%",
        "--fasthost-compare-fail=transitions:+0.5",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_cos_calls*4.000*4.000*+0.0%*"])
    result.stdout.no_fnmatch_line("*FAILED*")


def test_gate_reports_a_benchmark_missing_from_the_baseline_without_failing(pytester):
    save_baseline(pytester, calls=1)
    write_benchmark(pytester, calls=1, name="test_other")
    result = pytester.runpytest_subprocess(
        *FAST, "--benchmark-storage=store", "--fasthost-compare", "--fasthost-compare-fail=transitions:5%"
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_other.py::test_cos_calls*new*"])


def test_gate_reads_a_json_baseline(pytester):
    write_benchmark(pytester, calls=2)
    pytester.runpytest_subprocess(*FAST, "--fasthost-json=base.json").assert_outcomes(passed=1)
    write_benchmark(pytester, calls=4)
    result = pytester.runpytest_subprocess(
        *FAST, "--fasthost-compare=base.json", "--fasthost-compare-fail=transitions:+1"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2.000*4.000*+100.0%*FAILED (transitions:+1)*"])


def test_under_xdist_each_benchmark_has_its_own_figures(pytester):
    pytest.importorskip("xdist")
    for calls in (1, 2, 3, 4):
        write_benchmark(pytester, calls=calls, name=f"test_bench_{calls}")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--fasthost-json=out.json")
    result.assert_outcomes(passed=4)
    with open(pytester.path / "out.json") as f:
        figures = {b["fullname"]: b["extra_info"]["fasthost"] for b in json.load(f)["benchmarks"]}
    # pytest-benchmark runs each function once under xdist; each test's
    # figures are its own, whichever worker ran it alongside another.
    assert {node: f["transitions_per_call"] for node, f in figures.items()} == {
        f"test_bench_{n}.py::test_cos_calls": float(n) for n in (1, 2, 3, 4)
    }
    assert all(f["calls"] == 1 for f in figures.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("transitions:5%", Threshold("transitions", 0.05, True)),
        ("transitions:+2", Threshold("transitions", 2.0, False)),
        ("p99:20%", Threshold("p99", 0.2, True)),
        ("p99:+500", Threshold("p99", 500.0, False)),
    ],
)
def test_thresholds_parse(text, expected):
    assert parse_threshold(text) == expected


def test_threshold_semantics():
    assert Threshold("transitions", 0.05, True).exceeded(4.0, 5.0)
    assert not Threshold("transitions", 0.05, True).exceeded(4.0, 4.1)
    assert Threshold("transitions", 0.5, False).exceeded(4.0, 5.0)
    assert not Threshold("transitions", 1.0, False).exceeded(4.0, 5.0)
    assert Threshold("transitions", 0.05, True).exceeded(0.0, 1.0)


def test_bad_threshold_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--fasthost-compare", "--fasthost-compare-fail=transitions:lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a threshold*"])


def test_compare_fail_without_compare_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--fasthost-compare-fail=transitions:5%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fasthost-compare-fail needs --fasthost-compare*"])


def test_package_exports_match_its_lazy_table():
    assert set(fasthost.__all__) == {*fasthost._WHERE, "__version__", "get_include"}
    for name in fasthost.__all__:
        assert getattr(fasthost, name) is not None


def test_unknown_capture_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--fasthost-capture=dtrace")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fasthost-capture takes ctypes, cffi, builtins, native or none, not dtrace*"])


# A builtin benchmarked directly is called from pytest-benchmark's runner
# (and the plugin's counting wrapper): those calls are the benchmark's own.
DIRECT_BUILTIN_FILE = """
import math


def test_cos_direct(benchmark, fasthost):
    benchmark(math.cos, 0.5)


def setup():
    math.sin(0.1); math.sin(0.2)


def work():
    math.cos(0.5)


def test_pedantic_setup(benchmark, fasthost):
    benchmark.pedantic(work, setup=setup, rounds=5)
"""


def test_builtins_capture_counts_the_benchmarked_function_exactly(pytester):
    # Found failing: benchmark(math.cos, 0.5) gave 0 transitions per call
    # (its calls' site is pytest-benchmark's runner, so they were
    # subtracted). pedantic's setup counts, as the README says.
    pytester.makepyfile(test_bench=DIRECT_BUILTIN_FILE)
    result = pytester.runpytest_subprocess(*FAST, "--fasthost-capture=builtins", "--fasthost-json=out.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    figures = {b["fullname"].split("::")[-1]: b["extra_info"]["fasthost"] for b in data}
    assert figures["test_cos_direct"]["calls_per_call_by_target"] == {"math.cos": 1.0}
    assert figures["test_cos_direct"]["transitions_per_call"] == 1.0
    assert figures["test_pedantic_setup"]["calls_per_call_by_target"] == {"math.cos": 1.0, "math.sin": 2.0}


def builtins_figures(pytester, source: str, rounds: int, *options: str) -> dict:
    """Test name -> fasthost figures of a session over ``source`` (two
    benchmark tests) under ``--fasthost-capture=builtins``, with at least
    ``rounds`` rounds."""
    pytester.makepyfile(test_bench=source)
    result = pytester.runpytest_subprocess(
        *FAST[:2], "--benchmark-max-time=0.002", f"--benchmark-min-rounds={rounds}", *options,
        "--fasthost-capture=builtins", "--fasthost-json=out.json",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    return {b["fullname"].split("::")[-1]: b["extra_info"]["fasthost"] for b in data}


# Builtins that pytest-benchmark's runner itself calls around its loops
# (its timer, gc.isenabled), benchmarked directly.
HARNESS_BUILTIN_FILE = """
import gc, time


def test_timer(benchmark, fasthost):
    benchmark(time.perf_counter)


def test_gc_isenabled(benchmark, fasthost):
    benchmark(gc.isenabled)
"""


@pytest.mark.parametrize("rounds", [3, 11])
def test_benchmarking_the_harness_own_builtin_counts_one_call_per_call(pytester, rounds):
    # Found failing: benchmark(time.perf_counter) gave 1.02 transitions per
    # call, and another figure on each run: the runner's own timer calls
    # share the benchmarked target and were all kept as the benchmark's.
    figures = builtins_figures(pytester, HARNESS_BUILTIN_FILE, rounds)
    assert figures["test_timer"]["calls_per_call_by_target"] == {"time.perf_counter": 1.0}
    assert figures["test_timer"]["transitions_per_call"] == 1.0
    assert figures["test_gc_isenabled"]["calls_per_call_by_target"] == {"gc.isenabled": 1.0}
    assert figures["test_gc_isenabled"]["transitions_per_call"] == 1.0


CPROFILE_FILE = """
import math


def three():
    math.sqrt(2.0); math.sqrt(3.0); math.cos(1.0)


def test_three(benchmark, fasthost):
    benchmark(three)


def test_three_pedantic(benchmark, fasthost):
    benchmark.pedantic(three, rounds=4, iterations=3)
"""


@pytest.mark.parametrize("rounds", [3, 11])
def test_benchmark_cprofile_leaves_the_figures_exact(pytester, rounds):
    # Found failing: under --benchmark-cprofile, 2.998 transitions per call
    # on 3.11 (cProfile displaces the builtins capture for its extra runs,
    # which were counted as calls) and 3.07 on 3.13 (cProfile's and pstats'
    # own calls), another figure on each run. The figures now end where
    # pytest-benchmark's cProfile runs begin, after the timed ones.
    figures = builtins_figures(pytester, CPROFILE_FILE, rounds, "--benchmark-cprofile=tottime")
    for name, each in figures.items():
        assert each["calls_per_call_by_target"] == {"math.sqrt": 2.0, "math.cos": 1.0}, name
        assert each["transitions_per_call"] == 3.0, name


# Tests that make known ctypes calls, spread over xdist's workers.
SESSION_TESTS = """
import ctypes, ctypes.util
import pytest
import fasthost.ctypes

libm = fasthost.ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("m")))
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]


@pytest.mark.parametrize("calls", range(1, 9))
def test_cos(calls):
    for _ in range(calls):
        libm.cos(0.5)
"""


@pytest.mark.parametrize("workers", [None, 2])
def test_save_writes_one_session_snapshot_combining_xdist_workers(pytester, workers):
    if workers:
        pytest.importorskip("xdist")
    pytester.makepyfile(test_session=SESSION_TESTS)
    spread = ("-n", str(workers)) if workers else ()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *spread, "--fasthost-save=session.npz")
    result.assert_outcomes(passed=8)
    snap = fasthost.load(pytester.path / "session.npz")
    assert snap.totals["calls"]["leave"] == sum(range(1, 9))  # every test's calls, each once
    cos = snap.targets[snap.targets["symbol"] == "libm.so.6!cos"]
    assert int(cos["calls"].sum()) == sum(range(1, 9))
    assert len(snap.pids) == (workers or 1)
    result.stdout.fnmatch_lines([f"fasthost: saved session.npz: {workers or 1} process(es)*"])
