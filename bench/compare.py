"""fasthost next to its peers and the machine's floor, side by side in one
process: every budget of docs/protocol.md §5, thread scaling and growth. Writes
bench/RESULTS.md (the tables) and bench/results.png (the ratios).

    python bench/compare.py            # the full run, about a minute on 2 cores
    python bench/compare.py --quick    # a smoke run (CI): small sizes, 1 repetition

Each figure's variants are measured in turns, several times over (A B C,
A B C, ...), and each ratio is the median of the ratios of one turn: the
machine drifts between turns (this VM's speed moves by tens of percent from
one second to the next), not within one.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import ctypes.util
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fasthost
import fasthost.ctypes
from bench.loops import UNROLL, unrolled
from bench.native import load as load_native
from bench.peers import PurePythonRecorder
from fasthost import _testing

native = load_native()

HERE = Path(__file__).resolve().parent


@dataclass
class Sizes:
    repeats: int = 7
    c_pairs: int = 1_000_000
    py_iterations: int = 2_000
    ctypes_iterations: int = 1_000
    builtin_iterations: int = 1_000
    scaling_pairs: int = 2_000_000
    values: int = 2_000_000
    peer_values: int = 20_000
    growth_pairs: int = 500_000


QUICK = Sizes(
    repeats=1,
    c_pairs=20_000,
    py_iterations=50,
    ctypes_iterations=50,
    builtin_iterations=50,
    scaling_pairs=20_000,
    values=50_000,
    peer_values=1_000,
    growth_pairs=10_000,
)


@dataclass
class Row:
    """One figure: fasthost's value, its peers', and the ratio the budget
    is about (``ratio`` is ``ours / baseline`` unless ``inverse``)."""

    figure: str
    unit: str
    ours: float
    peers: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    ratio_of: str = ""
    budget: str = ""
    passed: bool | None = None
    note: str = ""


def turns(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Measures every variant once per turn, `repeats` turns, rotating the
    order; returns each variant's results by turn."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(repeats):
        order = names[turn % len(names) :] + names[: turn % len(names)]
        for name in order:
            results[name].append(variants[name]())
    return results


def median_ratio(results: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(results[a], results[b]))


def medians(results: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in results.items()}


def per_unit(run: Callable[[], object], units: int) -> Callable[[], float]:
    """A variant measuring ns per unit of one call of `run`."""

    def measure() -> float:
        t0 = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - t0) / units

    return measure


def tsc_clock() -> str:
    return "tsc" if fasthost._core.tsc_available() else "monotonic"


# ---- budget rows (docs/protocol.md §5) ------------------------------------------------


def c_pair(sizes: Sizes) -> Row:
    n = sizes.c_pairs
    results = turns(
        {
            kind: (lambda kind=kind: native.pair_loop(kind, n) / n)
            for kind in ("fasthost", "minimal", "atomic", "mutex")
        },
        sizes.repeats,
    )
    m = medians(results)
    ratio = median_ratio(results, "fasthost", "minimal")
    return Row(
        "C-level leave+enter pair (C API, tsc, one thread)",
        "ns/pair",
        m["fasthost"],
        {"minimal hand-written pair": m["minimal"], "atomic shared counters": m["atomic"], "mutex-guarded": m["mutex"]},
        ratio,
        "fasthost / minimal pair",
        "≤ 1.25x",
        ratio <= 1.25,
    )


def python_pair(sizes: Sizes) -> tuple[Row, Row]:
    it = sizes.py_iterations
    pairs = it * UNROLL
    target = 0x7F00_1234_5678
    recorder = PurePythonRecorder()
    variants = {
        "fasthost": unrolled(
            "leave(t); enter()", it, leave=fasthost.leave_runtime, enter=fasthost.enter_runtime, t=target
        ),
        "builtins": unrolled("noop1(t); noop()", it, noop1=native.noop1, noop=native.noop, t=target),
        "minimal": unrolled("leave(t); enter()", it, leave=native.minimal_leave, enter=native.minimal_enter, t=target),
        "recorder": unrolled(
            "leave(t); enter()", it, leave=recorder.leave_runtime, enter=recorder.enter_runtime, t=target
        ),
    }
    results = turns({name: per_unit(run, pairs) for name, run in variants.items()}, sizes.repeats)
    m = medians(results)
    peers = {
        "two empty builtins": m["builtins"],
        "minimal pair as builtins": m["minimal"],
        "pure-Python recorder": m["recorder"],
    }
    # The floor is the minimal pair exposed as builtins: on a VM its two
    # rdtsc cost about as much as two empty calls (docs/protocol.md §5).
    ratio = median_ratio(results, "fasthost", "minimal")
    speedup = median_ratio(results, "recorder", "fasthost")
    return (
        Row(
            "Python-level pair",
            "ns/pair",
            m["fasthost"],
            peers,
            ratio,
            "fasthost / minimal pair as builtins",
            "≤ 1.15x",
            ratio <= 1.15,
            note=f"the floor, the minimal pair as builtins, is {median_ratio(results, 'minimal', 'builtins'):.2f}x"
            " two empty builtins",
        ),
        Row(
            "Python-level pair vs a pure-Python recorder",
            "ns/pair",
            m["fasthost"],
            {"pure-Python recorder": m["recorder"]},
            speedup,
            "recorder / fasthost (speed-up)",
            "≥ 6x",
            speedup >= 6,
        ),
    )


def _libm() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("m"))
    lib.cos.restype = ctypes.c_double
    lib.cos.argtypes = [ctypes.c_double]
    return lib


class Profilers:
    """cProfile, yappi and pyinstrument around a callable, each started and
    stopped within the measurement (their reports are made afterwards,
    untimed); `sees` tells whether a profiler's report names a function,
    e.g. whether it saw libm's cos at all."""

    def __init__(self) -> None:
        self.last: dict[str, object] = {}

    def cprofile(self, run: Callable[[], object]) -> Callable[[], object]:
        def go() -> None:
            profiler = cProfile.Profile()
            profiler.enable()
            run()
            profiler.disable()
            self.last["cProfile"] = profiler

        return go

    def yappi(self, run: Callable[[], object]) -> Callable[[], object] | None:
        try:
            import yappi
        except ImportError:
            return None

        def go() -> None:
            yappi.clear_stats()
            yappi.set_clock_type("wall")
            yappi.start(builtins=True)
            run()
            yappi.stop()
            self.last["yappi"] = yappi

        return go

    def pyinstrument(self, run: Callable[[], object]) -> Callable[[], object] | None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            return None

        def go() -> None:
            profiler = Profiler(interval=0.0001)
            profiler.start()
            run()
            profiler.stop()
            self.last["pyinstrument"] = profiler

        return go

    def around(self, run: Callable[[], object]) -> dict[str, Callable[[], object]]:
        wrapped = {"cProfile": self.cprofile(run), "yappi": self.yappi(run), "pyinstrument": self.pyinstrument(run)}
        return {name: go for name, go in wrapped.items() if go is not None}

    def report(self, name: str) -> str:
        """The names in the last report of profiler `name`."""
        profiler: Any = self.last.get(name)
        if profiler is None:
            return ""
        if name == "cProfile":
            profiler.create_stats()
            return " ".join(function for (_, _, function) in profiler.stats)
        if name == "yappi":
            return " ".join(stat.name for stat in profiler.get_func_stats())
        names, frames = [], [profiler.last_session.root_frame()]
        while frames:
            frame = frames.pop()
            if frame is not None:
                names.append(str(frame.function))
                frames.extend(frame.children)
        return " ".join(names)

    def sees(self, name: str, function: str) -> bool:
        """Whether profiler `name` reported `function` as a function of its own."""
        return re.search(rf"(^|[\s.<]){re.escape(function)}([\s>]|$)", self.report(name)) is not None


def ctypes_call(sizes: Sizes) -> tuple[Row, list[str]]:
    it = sizes.ctypes_iterations
    calls = it * UNROLL
    plain, instrumented = _libm(), fasthost.ctypes.instrument(_libm())
    plain_run = unrolled("cos(0.5)", it, cos=plain.cos)
    profilers = Profilers()
    variants = {
        "fasthost": unrolled("cos(0.5)", it, cos=instrumented.cos),
        "plain": plain_run,
        **profilers.around(plain_run),
    }
    results = turns({name: per_unit(run, calls) for name, run in variants.items()}, sizes.repeats)
    m = medians(results)
    snap = fasthost.snapshot()
    seen = {"fasthost": "libm.so.6!cos" in snap.targets["symbol"].tolist()}
    seen.update({name: profilers.sees(name, "cos") for name in profilers.last})
    ratio = median_ratio(results, "fasthost", "plain")
    peers = {"uninstrumented": m["plain"], **{f"under {name}": m[name] for name in profilers.last}}
    notes = [f"{name}: {'sees' if saw else 'does not see'} the ctypes calls" for name, saw in seen.items()]
    return (
        Row(
            "ctypes call (libm cos)",
            "ns/call",
            m["fasthost"],
            peers,
            ratio,
            "instrumented / uninstrumented",
            "≤ 1.15x",
            ratio <= 1.15,
            note="; ".join(notes),
        ),
        notes,
    )


def builtins_loop(sizes: Sizes) -> list[Row]:
    it = sizes.builtin_iterations
    loop = unrolled("cos(x); len(s); abs(-1)", it, cos=math.cos, len=len, abs=abs, x=0.5, s="abc")

    minimal = minimal_recorder(loop)

    def captured() -> None:
        with fasthost.capture_builtins():
            loop()

    profilers = Profilers()
    variants = {"none": loop, "fasthost": captured, "minimal": minimal, **profilers.around(loop)}
    results = turns({name: per_unit(run, 1) for name, run in variants.items()}, sizes.repeats)
    slowdown = {name: [x / y for x, y in zip(values, results["none"])] for name, values in results.items()}
    m = medians(slowdown)
    ratio = median_ratio(results, "fasthost", "minimal")
    peers = {MINIMAL_NAME: m["minimal"], **{name: m[name] for name in profilers.last}}
    rows = [
        Row(
            "capture_builtins() on a builtin-heavy loop",
            "x slowdown",
            m["fasthost"],
            peers,
            ratio,
            "fasthost slowdown / minimal recorder's",
            "≤ 1.1x",
            ratio <= 1.1,
        )
    ]
    for name in ("cProfile", "yappi"):
        if name in m:
            faster = median_ratio(results, name, "fasthost")
            rows.append(
                Row(
                    f"capture_builtins() vs {name}",
                    "x slowdown",
                    m["fasthost"],
                    {name: m[name]},
                    faster,
                    f"{name} / fasthost",
                    "> 1x",
                    faster > 1,
                )
            )
    return rows


MONITORING = sys.version_info >= (3, 12)
MINIMAL_NAME = "minimal C monitoring recorder" if MONITORING else "minimal C profile hook"


def minimal_recorder(run: Callable[[], object], vectorcall: bool = False) -> Callable[[], None]:
    """`run` under the floor a capture is measured against: the minimal C
    sys.monitoring recorder on 3.12+ (what capture_builtins and
    capture_native use there; with `vectorcall`, its callbacks are called
    through their own vectorcall slot, as fasthost's are), the minimal C
    profile hook before."""

    def go() -> None:
        if MONITORING:
            native.minimal_monitor(True, vectorcall=vectorcall)
        else:
            native.minimal_profile_hook(True)
        try:
            run()
        finally:
            if MONITORING:
                native.minimal_monitor(False)
            else:
                native.minimal_profile_hook(False)

    return go


def native_loop(sizes: Sizes) -> list[Row]:
    """Native calls under capture_native() (3.12+; capture_builtins() with
    its callbacks before, where ufuncs are not seen): the cost per call on a
    loop of builtins and numpy ufunc calls against the minimal recorder, and
    the slowdown of a loop that also calls a Python function against
    cProfile's, on the same interpreter."""
    it = sizes.builtin_iterations
    a = np.ones(4)

    def helper(v: float) -> float:
        return v

    names = {"cos": math.cos, "len": len, "add": np.add, "a": a, "x": 0.5, "s": "abc"}
    calls_only = unrolled("cos(x); len(s); add(a, a)", it, **names)
    mixed = unrolled("cos(x); len(s); add(a, a); helper(x)", it, helper=helper, **names)
    native_calls = it * UNROLL * (3 if MONITORING else 2)  # cos, len (and the ufunc where it is seen)
    capture = fasthost.capture_native if MONITORING else fasthost.capture_builtins
    name = "capture_native()" if MONITORING else "capture_builtins()"
    version = f"Python {sys.version_info[0]}.{sys.version_info[1]}"

    def under(run: Callable[[], object], **options: Any) -> Callable[[], None]:
        def go() -> None:
            with capture(**options):
                run()

        return go

    variants = {
        "none": calls_only,
        "fasthost": under(calls_only),
        "no call sites": under(calls_only, callsites=False),
        "minimal": minimal_recorder(calls_only),
    }
    if MONITORING:
        variants["minimal, vectorcall"] = minimal_recorder(calls_only, vectorcall=True)
    results = turns({key: per_unit(run, 1) for key, run in variants.items()}, sizes.repeats)

    def overhead(key: str) -> list[float]:
        return [max(x - y, 1e-9) / native_calls for x, y in zip(results[key], results["none"])]

    per_call = {key: statistics.median(overhead(key)) for key in variants if key != "none"}
    vs_minimal = statistics.median(f / m for f, m in zip(overhead("fasthost"), overhead("minimal")))
    bare = statistics.median(f / m for f, m in zip(overhead("no call sites"), overhead("minimal")))
    sites_cost = statistics.median(f / m for f, m in zip(overhead("fasthost"), overhead("no call sites")))
    note = f"without call sites {bare:.2f}x the minimal recorder; call sites cost {sites_cost:.2f}x"
    peers = {MINIMAL_NAME: per_call["minimal"], "without call sites": per_call["no call sites"]}
    if MONITORING:
        vs_vectorcall = statistics.median(f / m for f, m in zip(overhead("fasthost"), overhead("minimal, vectorcall")))
        note += f"; {vs_vectorcall:.2f}x the minimal recorder with vectorcall callbacks, as fasthost's"
        peers["minimal, vectorcall callbacks"] = per_call["minimal, vectorcall"]

    profilers = Profilers()
    mixed_variants = {"none": mixed, "fasthost": under(mixed), "cProfile": profilers.cprofile(mixed)}
    mixed_results = turns({key: per_unit(run, 1) for key, run in mixed_variants.items()}, sizes.repeats)
    slowdown = medians({k: [x / y for x, y in zip(v, mixed_results["none"])] for k, v in mixed_results.items()})
    vs_cprofile = median_ratio(mixed_results, "cProfile", "fasthost")
    cprofile_sees = "yes" if profilers.sees("cProfile", "add") else "no"
    fasthost_sees = "yes" if "numpy.add" in fasthost.snapshot().targets["symbol"].tolist() else "no"
    return [
        Row(
            f"{name} per native call ({version})",
            "ns/call",
            per_call["fasthost"],
            peers,
            vs_minimal,
            "fasthost overhead / minimal recorder's",
            "≤ 1.2x",
            vs_minimal <= 1.2,
            note=note,
        ),
        Row(
            f"{name} vs cProfile, calls and a Python function ({version})",
            "x slowdown",
            slowdown["fasthost"],
            {"cProfile": slowdown["cProfile"]},
            vs_cprofile,
            "cProfile / fasthost",
            "> 1x",
            vs_cprofile > 1,
            note=f"ufunc calls seen: fasthost {fasthost_sees}, cProfile {cprofile_sees}",
        ),
    ]


def scaling(sizes: Sizes) -> tuple[Row, dict[str, dict[int, float]]]:
    n = sizes.scaling_pairs
    threads = (1, 2, 4, 8)
    kinds = ("fasthost", "minimal", "atomic", "mutex")
    variants = {
        (kind, t): (lambda kind=kind, t=t: t * n / native.scaling_run(kind, t, n) * 1e3)
        for kind in kinds
        for t in threads
    }  # M pairs/s
    results = turns(variants, sizes.repeats)
    throughput = {kind: {t: statistics.median(results[(kind, t)]) for t in threads} for kind in kinds}
    two = {kind: statistics.median(x / y for x, y in zip(results[(kind, 2)], results[(kind, 1)])) for kind in kinds}
    return (
        Row(
            "two native threads on two cores",
            "x one thread's pairs/s",
            two["fasthost"],
            {kind: two[kind] for kind in kinds[1:]},
            two["fasthost"],
            "2-thread / 1-thread throughput",
            "≥ 1.8x",
            two["fasthost"] >= 1.8,
        ),
        throughput,
    )


def record_many(sizes: Sizes) -> Row:
    values = np.random.default_rng(7).lognormal(7, 1.5, sizes.values).astype(np.uint64)
    peer_values = values[: sizes.peer_values].tolist()
    bins = np.logspace(0, 64 * np.log10(2), len(fasthost.Histogram().counts) + 1)

    def hdr_loop() -> None:
        from hdrh.histogram import HdrHistogram

        hist = HdrHistogram(1, 2**40, 2)
        for v in peer_values:
            hist.record_value(v)

    variants = {
        "fasthost": per_unit(lambda: fasthost.Histogram().record_many(values), sizes.values),
        "numpy.histogram": per_unit(lambda: np.histogram(values, bins), sizes.values),
    }
    try:
        import hdrh.histogram  # noqa: F401
    except ImportError:
        pass
    else:
        variants["hdrhistogram"] = per_unit(hdr_loop, sizes.peer_values)
    m = medians(turns(variants, sizes.repeats))
    rate = 1e3 / m["fasthost"]
    return Row(
        "Histogram.record_many",
        "M values/s",
        rate,
        {name: 1e3 / ns for name, ns in m.items() if name != "fasthost"},
        None,
        "",
        "≥ 100 M/s",
        rate >= 100,
    )


def snapshot_64(sizes: Sizes) -> Row:
    fasthost.reset()
    _testing.run_native_threads(64, 1000, 0x4000, "targets", 8)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.npz")
        m = medians(
            turns(
                {
                    "snapshot": per_unit(fasthost.snapshot, 1),
                    "save": per_unit(lambda: fasthost.snapshot().save(path), 1),
                },
                max(sizes.repeats, 3),
            )
        )
    ms = m["snapshot"] / 1e6
    return Row(
        "snapshot() with 64 threads", "ms", ms, {"snapshot() + save()": m["save"] / 1e6}, None, "", "≤ 5 ms", ms <= 5
    )


def memory() -> Row:
    fasthost.reset()
    _testing.run_native_threads(1, 10, 0x5000, "targets", 1)
    _testing.run_native_threads(1, 1000, 0x9000, "targets", 100)
    rows = fasthost.memory_usage()["threads"]
    rows = rows[rows["in_session"]]
    one = rows[rows["targets"] == 1]["bytes"][0]
    hundred = rows[rows["targets"] == 100]["bytes"][0]
    per_target = (hundred - one) / 99
    ok = one <= 64 * 1024 + 4 * 1024 and per_target <= 4 * 1024
    return Row(
        "memory at defaults",
        "KiB",
        one / 1024,
        {"per further target": per_target / 1024},
        None,
        "",
        "≤ 64 KiB/thread + 4 KiB/target",
        ok,
        note="a thread with one target; each further target",
    )


# ---- growth -----------------------------------------------------------------------------


def growth(sizes: Sizes) -> dict[str, dict[int, float]]:
    n = sizes.growth_pairs
    fasthost.reset()
    depth = medians(
        turns({d: (lambda d=d: native.nested_pair_loop(n, d) / n) for d in (1, 4, 16, 64, 256)}, sizes.repeats)
    )
    fasthost.reset()
    counts = (1, 16, 256, 1024, 10_000)
    targets = medians(turns({k: (lambda k=k: native.targets_pair_loop(n, k) / n) for k in counts}, sizes.repeats))
    snapshots: dict[int, float] = {}
    for threads in (1, 4, 16, 64, 256):
        fasthost.reset()
        _testing.run_native_threads(threads, 100, 0x8000, "targets", 4)
        snapshots[threads] = medians(turns({0: per_unit(fasthost.snapshot, 1)}, max(sizes.repeats, 3)))[0] / 1e6
    return {"depth": depth, "targets": targets, "snapshot": snapshots}


# ---- output ---------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def render(
    rows: list[Row], throughput: dict[str, dict[int, float]], grown: dict[str, dict[int, float]], quick: bool
) -> str:
    cpu = _cpu_name()
    lines = [
        "# fasthost against its peers",
        "",
        f"`python bench/compare.py{' --quick' if quick else ''}`, one process, {platform.python_implementation()} "
        f"{platform.python_version()}, {cpu}, {os.cpu_count()} CPUs. Values are medians over turns; ratios are "
        "medians of per-turn ratios (see the script's docstring).",
        "",
        "| figure | fasthost | peers | ratio | budget | |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        peers = "<br>".join(f"{name}: {fmt(v)}" for name, v in r.peers.items())
        ratio = f"{r.ratio:.2f}x ({r.ratio_of})" if r.ratio is not None else ""
        verdict = "" if r.passed is None else ("pass" if r.passed else "**MISS**")
        lines.append(f"| {r.figure} | {fmt(r.ours)} {r.unit} | {peers} | {ratio} | {r.budget} | {verdict} |")
    notes = [f"- {r.figure}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "## Thread scaling: aggregate pairs/s (millions), native threads",
        "",
        "| threads | " + " | ".join(throughput) + " |",
        "|---:|" + "---:|" * len(throughput),
    ]
    for t in next(iter(throughput.values())):
        lines.append(f"| {t} | " + " | ".join(f"{throughput[k][t]:.1f}" for k in throughput) + " |")
    lines += ["", "## Growth", "", "| nesting depth | ns/pair |", "|---:|---:|"]
    lines += [f"| {d} | {v:.1f} |" for d, v in grown["depth"].items()]
    lines += ["", "| distinct targets (max_targets 1024) | ns/pair |", "|---:|---:|"]
    lines += [f"| {k:,} | {v:.1f} |" for k, v in grown["targets"].items()]
    lines += ["", "| threads | snapshot() ms |", "|---:|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in grown["snapshot"].items()]
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def chart(rows: list[Row], path: Path) -> None:
    from matplotlib.figure import Figure

    budgeted = [r for r in rows if r.ratio is not None]
    fig = Figure(figsize=(9, 0.55 * len(budgeted) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(budgeted))[::-1]
    colours = ["#55A868" if r.passed else "#C44E52" for r in budgeted]
    ax.barh(y, [r.ratio for r in budgeted], color=colours)
    for yi, r in zip(y, budgeted):
        limit = float(r.budget.strip("≤≥>< x"))
        ax.plot([limit, limit], [yi - 0.4, yi + 0.4], color="black", linewidth=2)
        ax.text(r.ratio, yi, f" {r.ratio:.2f}x", va="center", fontsize="small")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.figure}\n({r.ratio_of})" for r in budgeted], fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel("ratio (log scale); black tick: the budget; green: met, red: missed")
    ax.set_title("fasthost vs its baselines, measured side by side")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repetition (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md and results.png")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    args.out.mkdir(parents=True, exist_ok=True)

    def step(name: str) -> None:
        print(f"compare: {name}", file=sys.stderr, flush=True)

    fasthost.start(clock=tsc_clock())
    try:
        step("C pair")
        rows = [c_pair(sizes)]
        step("Python pair")
        rows += python_pair(sizes)
        step("ctypes")
        row, _ = ctypes_call(sizes)
        rows.append(row)
        step("builtins")
        rows += builtins_loop(sizes)
        step("native")
        rows += native_loop(sizes)
        step("threads")
        row, throughput = scaling(sizes)
        rows.append(row)
        step("record_many")
        rows.append(record_many(sizes))
        step("snapshot")
        rows.append(snapshot_64(sizes))
        rows.append(memory())
        step("growth")
        grown = growth(sizes)
    finally:
        fasthost.stop()
        fasthost.reset()
    text = render(rows, throughput, grown, args.quick)
    (args.out / "RESULTS.md").write_text(text)
    chart(rows, args.out / "results.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
