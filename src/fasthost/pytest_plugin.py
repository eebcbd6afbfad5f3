"""fasthost's pytest plugin (entry point ``pytest11``).

- The ``fasthost`` fixture records transitions during one test and gives
  its delta :class:`~fasthost.Snapshot`.
- With pytest-benchmark, a test using both ``benchmark`` and ``fasthost``
  (every benchmark test under ``--fasthost``) gets
  ``benchmark.extra_info["fasthost"]``: transitions per benchmarked call,
  errors, p50/p99/max of unmanaged durations, top targets. They go into
  ``--benchmark-save``/``--benchmark-json`` output, and into
  ``--fasthost-json``, which also works under pytest-xdist.
- ``--fasthost-save PATH`` records the whole session and saves its
  snapshot; under pytest-xdist each worker sends its snapshot to the
  controller through ``workeroutput`` and the controller saves them
  combined.
- ``--fasthost-compare`` compares transitions per call (and p99) with a
  saved run; ``--fasthost-compare-fail=transitions:5%`` turns that into a
  regression gate that does not depend on timing noise. The baseline is
  read and checked when the session starts: a missing file or one of the
  wrong shape is a usage error (exit status 4) before any test runs.

Nothing heavy is imported until a test uses the fixture: every pytest run
in an environment with fasthost installed loads this module.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["FasthostPlugin", "Threshold", "figures_for"]

PROPERTY = "fasthost"  # the key of the figures in a test's user_properties
TOP_TARGETS = 5
# Targets whose calls per benchmarked call the figures keep by name (the
# busiest); the rest add up to one "other" entry, so the sum stays exact.
TARGETS_KEPT = 50
OTHER = "other"


@dataclass(frozen=True)
class Threshold:
    """One ``--fasthost-compare-fail`` rule: ``metric`` ("transitions" or
    "p99") may grow by at most ``limit``, relative (``5%``) or absolute
    (``+N``: transitions per call, or ns for p99)."""

    metric: str
    limit: float
    relative: bool

    def exceeded(self, before: float, after: float) -> bool:
        growth = after - before
        if self.relative:
            return growth > self.limit * before if before else growth > 0
        return growth > self.limit

    def __str__(self) -> str:
        return f"{self.metric}:{self.limit * 100:g}%" if self.relative else f"{self.metric}:+{self.limit:g}"


_THRESHOLD = re.compile(r"^(transitions|p99):(\+?)(\d+(?:\.\d+)?)(%?)$")


def parse_threshold(text: str) -> Threshold:
    """``transitions:5%``, ``transitions:+2``, ``p99:20%``, ``p99:+500``."""
    match = _THRESHOLD.match(text.strip())
    if match is None or (match.group(2) and match.group(4)) or not (match.group(2) or match.group(4)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a threshold: use transitions:5%, transitions:+N, p99:20% or p99:+NS"
        )
    metric, _, number, percent = match.groups()
    return Threshold(metric, float(number) / 100 if percent else float(number), bool(percent))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fasthost", "fasthost: Python <-> native transitions")
    group.addoption(
        "--fasthost", action="store_true", help="record transitions in every benchmark test (pytest-benchmark)"
    )
    group.addoption(
        "--fasthost-capture",
        metavar="LIST",
        help="turn capture adapters on for the session: ctypes, cffi, builtins, native (comma-separated)",
    )
    group.addoption("--fasthost-json", metavar="PATH", help="write every recorded test's figures to PATH")
    group.addoption(
        "--fasthost-save",
        metavar="PATH",
        help="record the whole session and save its snapshot to PATH (under pytest-xdist: the workers' "
        "snapshots combined)",
    )
    group.addoption(
        "--fasthost-compare",
        metavar="NUM|PATH",
        nargs="?",
        const=True,
        help="compare transitions per call with a saved pytest-benchmark run (the last one, NUM or a glob as "
        "for --benchmark-compare) or a JSON file (--benchmark-json or --fasthost-json output)",
    )
    group.addoption(
        "--fasthost-compare-fail",
        metavar="EXPR",
        action="append",
        type=parse_threshold,
        help="fail the session when a benchmark grows beyond EXPR: transitions:5%%, transitions:+N, p99:20%%",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fasthost: the test records transitions (added by --fasthost)")
    plugin = FasthostPlugin(config)
    config.pluginmanager.register(plugin, "fasthost-plugin")


class FasthostPlugin:
    """Session state: the adapters turned on, the figures of every test,
    the comparison with a baseline."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.figures: dict[str, dict[str, Any]] = {}
        self.comparison_lines: list[str] = []  # the table of --fasthost-compare
        self.save_lines: list[str] = []  # what --fasthost-save did
        self.failures: list[str] = []  # one line per benchmark beyond a threshold
        from fasthost.capture.modes import INTERPRETER_CAPTURES, Captures, parse_captures

        try:
            captures = parse_captures(config.getoption("fasthost_capture"))
        except ValueError as exc:
            raise pytest.UsageError(f"--fasthost-capture {exc}") from None
        # The ctypes and cffi adapters are on for the whole session (they
        # instrument libraries as they load, at collection too); a capture
        # that hooks the interpreter only while a test's body runs (see
        # pytest_runtest_call).
        self._captures = Captures([c for c in captures if c not in INTERPRETER_CAPTURES])
        self._test_captures = Captures([c for c in captures if c in INTERPRETER_CAPTURES])
        self._thresholds: list[Threshold] = config.getoption("fasthost_compare_fail") or []
        if self._thresholds and not config.getoption("fasthost_compare"):
            raise pytest.UsageError("--fasthost-compare-fail needs --fasthost-compare")
        self._baseline_source = ""
        self._baseline: dict[str, dict[str, Any]] = {}  # fullname -> the saved run's fasthost figures
        self._save_path: str | None = config.getoption("fasthost_save")
        self._recording_session = False  # whether this process started recording for --fasthost-save
        self._worker_snapshots: list[Any] = []  # the controller's, from each xdist worker
        self._silent_workers: list[str] = []  # xdist workers that sent no snapshot

    # ---- session-wide capture ---------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # The baseline is read here, not when comparing: a bad one must stop
        # the session before the tests (and xdist's workers) run, not after.
        # pytest-benchmark's storage, which it may come from, exists by now.
        if self.config.getoption("fasthost_compare") and not hasattr(self.config, "workerinput"):
            self._baseline_source, self._baseline = self._load_baseline()
        self._captures.start()
        if self._save_path and not self._is_xdist_controller():
            import fasthost

            if not fasthost.running():
                fasthost.start()
                self._recording_session = True

    def _is_xdist_controller(self) -> bool:
        """Whether this process hands the tests to xdist workers (and runs none)."""
        return self.config.pluginmanager.hasplugin("dsession")

    # ---- --fasthost-save: one snapshot of the session, over xdist's workers ---------
    def _session_snapshot(self) -> Any:
        import fasthost

        if self._recording_session:
            fasthost.stop()
        return fasthost.snapshot()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist, on the controller: a worker ended; keep its snapshot."""
        if not self._save_path:
            return
        data = getattr(node, "workeroutput", {}).get("fasthost_snapshot")
        if data is None:
            self._silent_workers.append(str(getattr(node, "gateway", node).id))
            return
        import tempfile

        import fasthost

        with tempfile.TemporaryDirectory(prefix="fasthost-xdist-") as folder:
            path = f"{folder}/worker.npz"
            with open(path, "wb") as f:
                f.write(data)
            self._worker_snapshots.append(fasthost.load(path))

    def _save_session(self) -> None:
        """Writes the session's snapshot (a worker sends it to the controller
        instead, as pytest-cov sends its data through ``workeroutput``)."""
        import fasthost

        path = self._save_path
        assert path is not None
        if hasattr(self.config, "workerinput"):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="fasthost-xdist-") as folder:
                self._session_snapshot().save(f"{folder}/worker.npz")
                with open(f"{folder}/worker.npz", "rb") as f:
                    self.config.workeroutput["fasthost_snapshot"] = f.read()  # type: ignore[attr-defined]
            return
        if self._is_xdist_controller():
            if not self._worker_snapshots:
                self.save_lines.append(f"fasthost: no worker sent a snapshot: {path} not written")
                return
            snap = fasthost.merge(self._worker_snapshots)
        else:
            snap = self._session_snapshot()
        snap.save(path)
        silent = f"; workers without data: {', '.join(self._silent_workers)}" if self._silent_workers else ""
        self.save_lines.append(
            f"fasthost: saved {path}: {snap.totals['processes']} process(es), {snap.totals['threads']} thread(s), "
            f"{snap.totals['transitions']:,} transitions{silent}"
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._captures.stop()
        if self._recording_session:
            import fasthost

            fasthost.stop()

    # trylast: the innermost wrapper, so that other plugins' code around the
    # test is not recorded either.
    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        # The builtins and native captures see every call of the process. On
        # for the session, they would record pytest's own (collection,
        # fixtures, reporting) into whatever recording runs, and those call
        # sites would fill the per-thread table before a benchmark ran:
        # pytest-benchmark's calls could then no longer be told apart by
        # their call site, and the figures would change from run to run.
        self._test_captures.start()
        try:
            yield
        finally:
            self._test_captures.stop()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if not self.config.getoption("fasthost"):
            return
        for item in items:
            names = getattr(item, "fixturenames", None)
            if names is not None and "benchmark" in names and "fasthost" not in names:
                names.append("fasthost")
                item.add_marker("fasthost")

    # ---- figures from every test (also from xdist workers) -------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == PROPERTY and isinstance(value, dict):
                self.figures[report.nodeid] = value

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self._save_path:
            self._save_session()
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: its figures travel in the reports
        path = self.config.getoption("fasthost_json")
        if path:
            benchmarks = [{"fullname": node, "extra_info": {"fasthost": f}} for node, f in sorted(self.figures.items())]
            with open(path, "w") as out:
                json.dump({"fasthost_version": _version(), "benchmarks": benchmarks}, out, indent=2)
        if self.config.getoption("fasthost_compare"):
            failed = self._compare()
            if failed:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the verdict comes last
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.save_lines:
            terminalreporter.write_line(line)
        if self.figures and not self.config.getoption("fasthost_compare"):
            terminalreporter.section("fasthost: transitions per benchmarked call")
            width = max(len(node) for node in self.figures)
            for node, f in sorted(self.figures.items()):
                errors = sum(f["errors"].values())
                p99 = f["unmanaged_ns"]["p99"]
                terminalreporter.write_line(
                    f"{node:<{width}}  {f['transitions_per_call']:>10.3f}  calls={f['calls']:<8} "
                    f"p99={_ns(p99)}  errors={errors}"
                )
        inexact = sorted(node for node, f in self.figures.items() if f.get("callsites_dropped"))
        for node in inexact:
            terminalreporter.write_line(
                f"fasthost: {node}: {self.figures[node]['callsites_dropped']} call(s) found the call-site table "
                "full (max_targets per thread): pytest-benchmark's own calls among them are counted as the "
                "benchmark's",
                yellow=True,
            )
        if self.comparison_lines:
            terminalreporter.section("fasthost: comparison with the baseline")
            for line in self.comparison_lines:
                terminalreporter.write_line(line)
        if self.failures:
            for failure in self.failures:
                terminalreporter.write_line(f"FAILED {failure}", red=True)
            terminalreporter.write_sep(
                "=", f"fasthost: {len(self.failures)} benchmark(s) beyond --fasthost-compare-fail", red=True
            )

    # ---- the regression gate ---------------------------------------------------
    def _compare(self) -> bool:
        baseline = self._baseline
        lines = [f"baseline: {self._baseline_source}"]
        width = max([len(node) for node in self.figures] + [9])
        lines.append(
            f"{'benchmark':<{width}}  {'before':>9} {'now':>9} {'change':>8}  {'p99 before':>11} {'p99 now':>11} "
            f"{'change':>8}"
        )
        failures = []
        for node, now in sorted(self.figures.items()):
            before = baseline.get(node)
            if before is None:
                lines.append(f"{node:<{width}}  {'-':>9} {now['transitions_per_call']:>9.3f} {'new':>8}")
                continue
            t0, t1 = before["transitions_per_call"], now["transitions_per_call"]
            p0, p1 = before["unmanaged_ns"]["p99"], now["unmanaged_ns"]["p99"]
            broken = [
                str(rule)
                for rule in self._thresholds
                if (rule.metric == "transitions" and rule.exceeded(t0, t1))
                or (rule.metric == "p99" and p0 is not None and p1 is not None and rule.exceeded(p0, p1))
            ]
            change = _change(t0, t1)
            p99_change = _change(p0, p1) if p0 is not None and p1 is not None else "-"
            lines.append(
                f"{node:<{width}}  {t0:>9.3f} {t1:>9.3f} {change:>8}  {_ns(p0):>11} {_ns(p1):>11} {p99_change:>8}"
                + (f"  FAILED ({', '.join(broken)})" if broken else "")
            )
            changed = target_changes(before.get("calls_per_call_by_target", {}), now["calls_per_call_by_target"])
            if "calls_per_call_by_target" in before:
                lines.extend(f"    {line}" for line in changed)
            if broken:
                said = f": {'; '.join(changed)}" if changed and "calls_per_call_by_target" in before else ""
                failures.append(f"{node} ({', '.join(broken)}){said}")
        missing = sorted(set(baseline) - set(self.figures))
        if missing:
            lines.append(f"not run now: {', '.join(missing)}")
        self.comparison_lines = lines
        self.failures = failures
        return bool(failures)

    def _load_baseline(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """(where it came from, fullname -> fasthost figures). Raises
        ``pytest.UsageError``, one line naming the file and the problem,
        when the baseline is missing, unreadable or of the wrong shape."""
        value = self.config.getoption("fasthost_compare")
        if isinstance(value, str) and value.endswith(".json"):
            try:
                with open(value) as f:
                    data = json.load(f)
            except OSError as exc:
                raise pytest.UsageError(f"--fasthost-compare: cannot read {value}: {exc.strerror or exc}") from None
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise pytest.UsageError(f"--fasthost-compare: {value}: not JSON ({exc})") from None
            return value, _baseline_figures(value, data)
        session = getattr(self.config, "_benchmarksession", None)
        if session is None:
            raise pytest.UsageError("--fasthost-compare NUM needs pytest-benchmark (or give a .json file)")
        loaded = list(session.storage.load()) if value is True else list(session.storage.load(value))
        if not loaded:
            raise pytest.UsageError(f"--fasthost-compare: no saved benchmark run in {session.storage}")
        path, data = loaded[-1]
        return str(path), _baseline_figures(str(path), data)


def _baseline_figures(source: str, data: Any) -> dict[str, dict[str, Any]]:
    """fullname -> fasthost figures of a saved run ``data`` (the JSON of
    ``--benchmark-json``, ``--benchmark-save`` or ``--fasthost-json``).
    Benchmarks recorded without fasthost have no figures and are skipped.
    Raises ``pytest.UsageError`` naming ``source`` and the first thing that
    is not as those files have it, since the comparison relies on it."""

    def wrong(problem: str) -> pytest.UsageError:
        return pytest.UsageError(f"--fasthost-compare: {source}: {problem}")

    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if benchmarks is None:
        raise wrong("not an object with a 'benchmarks' list (--benchmark-json or --fasthost-json output)")
    if not isinstance(benchmarks, list):
        raise wrong(f"'benchmarks' is {type(benchmarks).__name__}, not a list")
    baseline = {}
    for i, bench in enumerate(benchmarks):
        if not isinstance(bench, dict):
            raise wrong(f"benchmarks[{i}] is {type(bench).__name__}, not an object")
        name = bench.get("fullname")
        if not isinstance(name, str):
            raise wrong(f"benchmarks[{i}] has no 'fullname'")
        extra_info = bench.get("extra_info")
        if not isinstance(extra_info, dict):
            raise wrong(f"benchmarks[{i}] ({name}) has no 'extra_info' object")
        figures = extra_info.get("fasthost")
        if figures is None:
            continue
        problem = _figures_problem(figures)
        if problem:
            raise wrong(f"benchmarks[{i}] ({name}): its fasthost figures {problem}")
        baseline[name] = figures
    return baseline


def _figures_problem(figures: Any) -> str | None:
    """What keeps ``figures`` (one benchmark's, from :func:`figures_for`)
    from being compared, or None: the comparison reads transitions per call,
    the p99 of unmanaged durations (ns, null when nothing was timed) and,
    where the run saved them, calls per call by target."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(figures, dict):
        return f"are {type(figures).__name__}, not an object"
    if not number(figures.get("transitions_per_call")):
        return "have no 'transitions_per_call' number"
    unmanaged = figures.get("unmanaged_ns")
    p99 = unmanaged.get("p99", "absent") if isinstance(unmanaged, dict) else "absent"  # None is a valid p99
    if not (p99 is None or number(p99)):
        return "have no 'unmanaged_ns' p99 (a number, or null)"
    by_target = figures.get("calls_per_call_by_target", {})  # absent from older runs
    if not isinstance(by_target, dict) or not all(isinstance(k, str) and number(v) for k, v in by_target.items()):
        return "have a 'calls_per_call_by_target' that is not an object of numbers"
    return None


def _change(before: float, after: float) -> str:
    if before:
        return f"{(after - before) / before:+.1%}"
    return "+inf" if after else "+0.0%"


def _ns(value: float | None) -> str:
    from fasthost.export.report import format_ns

    return format_ns(value)


def _version() -> str:
    from fasthost import __version__

    return __version__


# ---- the fixture ---------------------------------------------------------------------


class Recording:
    """What the ``fasthost`` fixture gives a test: the transitions made
    since the test began (all threads of this process)."""

    def __init__(self) -> None:
        import fasthost

        self._fasthost = fasthost
        self._owns_session = not fasthost.running()
        if self._owns_session:
            fasthost.start()
        self._before = fasthost.snapshot()
        self.result: Any = None  # the final delta Snapshot, once the test ended

    def snapshot(self) -> Any:
        """The delta :class:`~fasthost.Snapshot` from the test's start to
        now (or to its end, once it ended). If the test itself started a
        new session, the whole new session."""
        if self.result is not None:
            return self.result
        now = self._fasthost.snapshot()
        try:
            return now.diff(self._before)
        except ValueError:
            return now

    def finish(self) -> Any:
        self.result = self.snapshot()
        if self._owns_session:
            self._fasthost.stop()
        return self.result


def _harness_calls(delta: Any, benchmarked: int = 0, runs: int = 0) -> dict[int, int]:
    """Target address -> calls made from pytest-benchmark's own code or
    this plugin's (its timer, its loops, the call counting): the captures
    that see every builtin record them too, and their number depends on
    rounds and calibration, not on the code under test. Known by the call
    site, so only where call sites were recorded. When the benchmarked
    function is native itself (target ``benchmarked``), ``runs`` of its
    calls from those sites are the benchmark's, one per run, though
    pytest-benchmark's runner makes them; any more are the harness's (the
    runner's timer, when ``time.perf_counter`` is what is benchmarked)."""
    import os

    import numpy as np
    import pytest_benchmark

    harness = (os.path.dirname(pytest_benchmark.__file__) + os.sep, os.path.abspath(__file__))
    sites = delta.callsites
    if not len(sites):
        return {}
    mine = np.array([str(f).startswith(harness[0]) or str(f) == harness[1] for f in sites["file"]], dtype=bool)
    out: dict[int, int] = {}
    for target, n in zip(sites["target"][mine].tolist(), sites["calls"][mine].tolist()):
        out[target] = out.get(target, 0) + n
    if benchmarked and benchmarked in out:
        out[benchmarked] = max(out[benchmarked] - runs, 0)
    return out


def figures_for(delta: Any, calls: int, benchmarked: int = 0) -> dict[str, Any]:
    """The JSON-ready figures of a benchmark: ``delta`` is what the
    benchmark call recorded, ``calls`` how many times pytest-benchmark ran
    the function (calibration, warmup and rounds x iterations, as it ran
    them). Calls that pytest-benchmark's own code makes (see
    ``_harness_calls``) are left out, so that unchanged code gives the same
    figures on every run."""
    totals = delta.totals
    per = max(calls, 1)
    harness = _harness_calls(delta, benchmarked, calls)
    left_out = sum(harness.values())
    hist = delta.histogram("inclusive")
    p50, p99 = (float(q) for q in hist.quantile([0.5, 0.99])) if hist.total else (None, None)
    targets = delta.targets.copy()
    for i, address in enumerate(targets["target"].tolist()):
        if not targets["overflow"][i]:
            targets["calls"][i] -= harness.get(address, 0)
    targets = targets[targets["calls"] > 0]
    top = sorted(targets, key=lambda row: -int(row["calls"]))[:TOP_TARGETS]
    by_kind = dict(totals["calls"])
    by_kind["leave"] -= left_out
    by_kind["enter"] -= left_out
    transitions = totals["transitions"] - left_out
    return {
        "calls": calls,
        "transitions": transitions,
        "transitions_per_call": transitions / per,
        "per_call": {kind: n / per for kind, n in by_kind.items()},
        "errors": {name: n for name, n in totals["results"].items() if name != "S_OK" and n},
        "unmanaged_ns": {"p50": p50, "p99": p99, "max": hist.max},
        "top_targets": [
            {"symbol": str(row["symbol"]), "calls_per_call": int(row["calls"]) / per, "total_ns": int(row["total_ns"])}
            for row in top
        ],
        "calls_per_call_by_target": _calls_by_target(targets, per),
        # Closes that found the call-site table full: the harness's calls
        # among them cannot be told apart, so the figures may include some.
        "callsites_dropped": int(delta.meta.get("callsites_dropped", 0)),
    }


def _calls_by_target(targets: Any, per: int) -> dict[str, float]:
    """Symbol -> calls per benchmarked call: the TARGETS_KEPT busiest by
    name, the rest as OTHER (targets that share a name add up)."""
    by_symbol: dict[str, int] = {}
    for row in targets:
        symbol = "overflow" if row["overflow"] else str(row["symbol"])
        by_symbol[symbol] = by_symbol.get(symbol, 0) + int(row["calls"])
    busiest = sorted(by_symbol.items(), key=lambda item: (-item[1], item[0]))
    kept = {symbol: calls / per for symbol, calls in busiest[:TARGETS_KEPT]}
    rest = sum(calls for _, calls in busiest[TARGETS_KEPT:])
    if rest:
        kept[OTHER] = kept.get(OTHER, 0.0) + rest / per
    return kept


def target_changes(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """What changed in calls per benchmarked call, target by target, biggest
    change first: ``+1.0 LLVMPY_GetTargetTriple per call (new)``."""
    changes = []
    for symbol in set(before) | set(after):
        b, a = before.get(symbol, 0.0), after.get(symbol, 0.0)
        if abs(a - b) > 1e-9 * max(abs(a), abs(b), 1.0):
            why = "new" if symbol not in before else "gone" if symbol not in after else f"{b:g} -> {a:g}"
            changes.append((-abs(a - b), symbol, f"{a - b:+.4g} {symbol} per call ({why})"))
    return [line for _, _, line in sorted(changes)]


class _Window:
    """What ``benchmark(...)`` did: how many times it ran the function, and
    snapshots taken just before and after the call, so that the figures
    leave out what the test body does around it."""

    def __init__(self) -> None:
        self.calls = 0
        self.before: Any = None
        self.after: Any = None
        self.closed = False  # the figures have ended: runs from now on are not counted
        self.target = 0  # the benchmarked function's, when it is native (benchmark(math.cos, x))

    def around(self, function: Any, run: Any) -> Any:
        import fasthost
        from fasthost import _core

        self.target = _core._callable_target(function)
        self.closed = False
        self.before = fasthost.snapshot()
        try:
            return run()
        finally:
            self.close()

    def close(self) -> None:
        """Ends the figures here (once per ``benchmark(...)`` call)."""
        if not self.closed and self.before is not None:
            import fasthost

            self.after = fasthost.snapshot()
            self.closed = True

    def delta(self, whole_test: Any) -> Any:
        """The transitions made inside the benchmark call, or ``whole_test``
        when there was no such call (or the session changed in between)."""
        if self.before is None or self.after is None:
            return whole_test
        try:
            return self.after.diff(self.before)
        except ValueError:
            return whole_test


def _count_calls(benchmark: Any) -> _Window:
    """Makes ``benchmark`` count how many times it runs the function, with
    nothing added inside its timed loops: its runners are built around the
    original function and count whole loops; anything that calls the
    function directly goes through a counting wrapper. The call of
    ``benchmark`` itself is bracketed by snapshots (see ``_Window``)."""
    window = _Window()
    base = type(benchmark)

    def counted(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not window.closed:
                window.calls += 1
            return function(*args, **kwargs)

        call.__wrapped__ = function  # type: ignore[attr-defined]
        return call

    class CountingBenchmark(base):  # type: ignore[misc, valid-type]
        def __call__(self, function: Any, *args: Any, **kwargs: Any) -> Any:
            return window.around(function, lambda: base.__call__(self, counted(function), *args, **kwargs))

        def pedantic(self, target: Any, *args: Any, **kwargs: Any) -> Any:
            return window.around(target, lambda: base.pedantic(self, counted(target), *args, **kwargs))

        def _make_runner(self, function: Any, args: Any, kwargs: Any) -> Any:
            runner = base._make_runner(self, getattr(function, "__wrapped__", function), args, kwargs)

            def counting_runner(loops_range: Any, *rest: Any, **options: Any) -> Any:
                if not window.closed:
                    window.calls += len(loops_range) if loops_range else 1
                return runner(loops_range, *rest, **options)

            return counting_runner

        # pytest-benchmark reads its cprofile option once, after the timed
        # runs, just before its cProfile runs (--benchmark-cprofile): the
        # figures end there. Those runs are not timed, cProfile displaces
        # the builtins capture on 3.9-3.11 (the runs would count with no
        # transitions), and its own calls and pstats' are not the
        # benchmark's; how many runs it makes depends on calibration.
        @property
        def cprofile(self) -> Any:
            value = self.__dict__.get("cprofile")
            if value:
                window.close()
            return value

        @cprofile.setter
        def cprofile(self, value: Any) -> None:
            self.__dict__["cprofile"] = value

    CountingBenchmark.__name__ = base.__name__
    benchmark.__class__ = CountingBenchmark
    return window


@pytest.fixture
def fasthost(request: pytest.FixtureRequest) -> Any:
    """Records transitions during this test (starting fasthost if it is not
    recording, and stopping it again after) and yields a ``Recording``:
    ``.snapshot()`` is the delta Snapshot so far.

    Used with pytest-benchmark's ``benchmark``, it also stores the
    figures per benchmarked call in ``benchmark.extra_info["fasthost"]``:
    of the ``benchmark(...)`` call only, not of the test body around it."""
    benchmark = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    window = _count_calls(benchmark) if benchmark is not None else None
    recording = Recording()
    try:
        yield recording
    finally:
        delta = recording.finish()
        if benchmark is not None and window is not None and window.calls:
            figures = figures_for(window.delta(delta), window.calls, window.target)
            benchmark.extra_info["fasthost"] = figures
            request.node.user_properties.append((PROPERTY, figures))
