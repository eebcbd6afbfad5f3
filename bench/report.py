"""Turns a pytest-benchmark JSON into the ratio table of docs/protocol.md §5 (markdown).

    pytest bench/ --benchmark-json=bench/core.json
    python bench/report.py bench/core.json

Each ratio is of two benchmarks from the same run (per pair or per value,
on the median round), so machine speed cancels out. docs/protocol.md §5 also sets two
absolute budgets (record_many throughput, snapshot time); they are shown
with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    ours: str
    baseline: str
    budget: float
    at_most: bool  # True: ratio <= budget passes; False: ratio >= budget passes


FIGURES = (
    Figure("C API pair / minimal hand-written pair", "test_c_api_pair", "test_c_minimal_pair", 1.25, True),
    Figure(
        "Python pair / minimal pair as builtins",
        "test_python_fasthost_pair",
        "test_python_minimal_pair_builtins",
        1.15,
        True,
    ),
    Figure(
        "pure-Python recorder / Python pair (speed-up)",
        "test_python_pure_python_recorder",
        "test_python_fasthost_pair",
        6.0,
        False,
    ),
)


@dataclass(frozen=True)
class Absolute:
    name: str
    bench: str
    unit: str
    scale: float  # figure = scale / (median ns per unit); 1 for "ns per unit" figures
    budget: float
    at_most: bool


ABSOLUTES = (
    Absolute("Histogram.record_many throughput", "test_histogram_record_many", "M values/s", 1e3, 100.0, False),
    Absolute("snapshot() with 64 threads", "test_snapshot_with_64_threads", "ms", 0.0, 5.0, True),
)

FIGURES += (
    Figure(
        "two native threads: aggregate pair throughput / one thread's",
        "test_native_threads_pairs[fasthost-1]",
        "test_native_threads_pairs[fasthost-2]",
        1.8,
        False,
    ),
    Figure(
        "(peer) mutex-guarded shared counter, the same",
        "test_native_threads_pairs[mutex-1]",
        "test_native_threads_pairs[mutex-2]",
        1.8,
        False,
    ),
    Figure(
        "instrumented ctypes libm cos / the same call uninstrumented",
        "test_ctypes_cos_instrumented",
        "test_ctypes_cos_uninstrumented",
        1.15,
        True,
    ),
    Figure(
        "capture_builtins slowdown / minimal C hook slowdown (same loop)",
        "test_builtins_fasthost_capture",
        "test_builtins_minimal_c_hook",
        1.1,
        True,
    ),
    Figure(
        "cProfile / capture_builtins (same loop)",
        "test_builtins_cprofile",
        "test_builtins_fasthost_capture",
        1.0,
        False,
    ),
    Figure("yappi / capture_builtins (same loop)", "test_builtins_yappi", "test_builtins_fasthost_capture", 1.0, False),
    Figure(
        "numpy.histogram (log bins) / record_many, per value",
        "test_numpy_histogram_log_bins",
        "test_histogram_record_many",
        1.0,
        False,
    ),
    Figure(
        "hdrhistogram record_value loop / record_many, per value",
        "test_hdrhistogram_record_value_loop",
        "test_histogram_record_many",
        1.0,
        False,
    ),
)


def per_unit_ns(bench: dict) -> float:
    """Median ns per unit of work (a pair, a value; one round by default)."""
    info = bench.get("extra_info", {})
    units = info.get("pairs_per_round", info.get("values_per_round", 1))
    return bench["stats"]["median"] * 1e9 / units


def render(data: dict) -> str:
    by_name = {b["name"]: b for b in data["benchmarks"]}
    lines = [
        "| figure | ns per unit | baseline ns per unit | ratio | budget | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for fig in FIGURES:
        if fig.ours not in by_name or fig.baseline not in by_name:
            lines.append(f"| {fig.name} | | | not run | | |")
            continue
        ours, base = per_unit_ns(by_name[fig.ours]), per_unit_ns(by_name[fig.baseline])
        ratio = ours / base
        passed = ratio <= fig.budget if fig.at_most else ratio >= fig.budget
        budget = f"{'≤' if fig.at_most else '≥'} {fig.budget:g}x"
        # A peer's row is context for fasthost's, not held to the budget.
        verdict = "(peer)" if fig.name.startswith("(peer)") else ("pass" if passed else "MISS")
        lines.append(f"| {fig.name} | {ours:.1f} | {base:.1f} | {ratio:.2f}x | {budget} | {verdict} |")
    lines += ["", "| absolute figure | measured | budget | |", "|---|---:|---:|---|"]
    for fig in ABSOLUTES:
        if fig.bench not in by_name:
            lines.append(f"| {fig.name} | not run | | |")
            continue
        ns = per_unit_ns(by_name[fig.bench])
        value = fig.scale / ns if fig.scale else ns / 1e6
        passed = value <= fig.budget if fig.at_most else value >= fig.budget
        budget = f"{'≤' if fig.at_most else '≥'} {fig.budget:g} {fig.unit}"
        lines.append(f"| {fig.name} | {value:.3g} {fig.unit} | {budget} | {'pass' if passed else 'MISS'} |")
    machine = data.get("machine_info", {})
    lines.append("")
    lines.append(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, Python {machine.get('python_version')}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="a file written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    try:
        with open(args.json) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"report.py: cannot read {args.json}: {exc}", file=sys.stderr)
        return 2
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
