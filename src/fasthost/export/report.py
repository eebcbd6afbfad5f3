"""Summaries of a snapshot for people: ``to_dict`` (JSON-ready) and
``report`` (text)."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost.export import callsites as _callsites
from fasthost.export.histogram import Histogram
from fasthost.export.schema import KINDS, RESULT_FIELDS

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = [
    "QUANTILES",
    "called_from",
    "format_ns",
    "header_lines",
    "latency_summary",
    "report",
    "target_histogram",
    "to_dict",
]

QUANTILES = {"p50_ns": 0.5, "p90_ns": 0.9, "p99_ns": 0.99, "p999_ns": 0.999}


def format_ns(ns: float | None) -> str:
    """A duration in ns for people: ``315 ns``, ``14.2 us``, ``3.10 ms``, ``2.00 s``."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    if round(ns) < 1000:
        return f"{ns:.0f} ns"
    # The smallest unit whose rounded figure stays below 1000 (999.6 us is
    # "1 ms", not "1e+03 us").
    for unit, scale in (("us", 1e3), ("ms", 1e6)):
        text = _figure(ns / scale)
        if float(text) < 1000:
            return f"{text} {unit}"
    return f"{_figure(ns / 1e9)} s"


def _figure(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def latency_summary(hist: Histogram) -> dict[str, Any]:
    """count, min, mean, p50/p90/p99/p99.9 and max of a histogram, in ns
    (None where empty)."""
    empty = hist.total == 0
    quantiles = hist.quantile(list(QUANTILES.values())) if not empty else [None] * len(QUANTILES)
    summary: dict[str, Any] = {"count": hist.total, "min_ns": hist.min, "mean_ns": None if empty else hist.mean}
    summary.update({k: None if v is None else float(v) for k, v in zip(QUANTILES, quantiles)})
    summary["max_ns"] = hist.max
    return summary


CALLED_FROM_IN_DICT = 10  # call sites per target in to_dict()
CALLED_FROM_IN_REPORT = 3  # and in the text report


def called_from(snapshot: Snapshot, target: int, top: int = CALLED_FROM_IN_DICT) -> list[dict[str, Any]]:
    """The call sites of ``target``, longest total first, at most ``top``:
    file, line, function, calls, total/exclusive ns and p50/p99 (within
    12.5 %). Empty when no capture recorded call sites."""
    sites = snapshot.callsites
    picked = np.flatnonzero(sites["target"] == target)[:top]
    rows = snapshot.targets[snapshot.targets["target"] == target] if len(picked) else snapshot.targets[:0]
    # A site's quantiles stay within its target's exact extremes.
    bounds = (int(rows["min_ns"].min()), int(rows["max_ns"].max())) if len(rows) else None
    found = []
    for i in picked.tolist():
        site = sites[i]
        p50, p99 = _callsites.quantiles(snapshot.callsite_counts[i], int(site["total_ns"]), bounds=bounds)
        found.append(
            {
                "file": str(site["file"]),
                "line": int(site["line"]),
                "function": str(site["function"]),
                "calls": int(site["calls"]),
                "total_ns": int(site["total_ns"]),
                "exclusive_ns": int(site["exclusive_ns"]),
                "p50_ns": p50,
                "p99_ns": p99,
            }
        )
    return found


def target_histogram(snapshot: Snapshot, row: np.void, kind: str = "inclusive") -> Histogram:
    """The histogram of one row of ``snapshot.targets``."""
    return snapshot.histogram(kind, target="overflow" if row["overflow"] else int(row["target"]))


def to_dict(snapshot: Snapshot, top: int = 20) -> dict[str, Any]:
    """See :meth:`Snapshot.to_dict`."""
    _check_top(top)
    totals = snapshot.totals
    targets = []
    for row in snapshot.targets[:top]:
        entry = {name: _plain(row[name]) for name in snapshot.targets.dtype.names or ()}
        if not row["calls"]:
            entry["min_ns"] = None
        entry.update({k: v for k, v in latency_summary(target_histogram(snapshot, row)).items() if k in QUANTILES})
        if not row["overflow"]:
            entry["called_from"] = called_from(snapshot, int(row["target"]), top=CALLED_FROM_IN_DICT)
        targets.append(entry)
    threads = [
        {
            "pid": int(t["pid"]),
            "tid": int(t["tid"]),
            "name": str(t["name"]),
            "alive": bool(t["alive"]),
            "transitions": int(t["leave"] + t["reverse_enter"]),
            "errors": int(sum(t[name] for name in RESULT_FIELDS[1:])),  # all but "ok"
            "max_depth": int(t["max_depth"]),
            "memory_bytes": int(t["memory_bytes"]),
        }
        for t in snapshot.threads
    ]
    summary = {
        "precision": snapshot.precision,
        "config": snapshot.config,
        "totals": totals,
        "errors": {name: n for name, n in totals["results"].items() if name != "S_OK" and n},
        "latency": {kind: latency_summary(snapshot.histogram(kind)) for kind in KINDS},
        "targets": targets,
        "threads": threads,
    }
    if totals["processes"] > 1:
        summary["processes"] = [
            {
                "pid": pid,
                "transitions": sum(t["transitions"] for t in own),
                "errors": sum(t["errors"] for t in own),
                "unmanaged_ns": _unmanaged_ns(snapshot, pid),
                "threads": own,
            }
            for pid, own in _by_process(snapshot, threads)
        ]
    summary["children_without_data"] = list(snapshot.meta.get("children_without_data", []))
    return summary


def _by_process(snapshot: Snapshot, rows: list[Any]) -> list[tuple[int, list[Any]]]:
    """(pid, the items of ``rows`` that belong to its threads) for every
    process of ``snapshot``; ``rows`` runs parallel to ``snapshot.threads``."""
    pids = snapshot.threads["pid"].tolist()
    return [(pid, [row for row, p in zip(rows, pids) if p == pid]) for pid in snapshot.pids]


def _unmanaged_ns(snapshot: Snapshot, pid: int) -> int:
    """Inclusive time of the unmanaged calls process ``pid`` recorded."""
    pairs = snapshot.thread_targets
    of_pid = snapshot.threads["pid"][pairs["thread"]] == pid
    return int(pairs["total_ns"][of_pid].sum(dtype=np.uint64))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_top(top: Any) -> None:
    if not isinstance(top, int) or isinstance(top, bool) or top < 0:
        raise ValueError(f"top must be an int >= 0, got {top!r}")


def report(snapshot: Snapshot, top: int = 20) -> str:
    """See :meth:`Snapshot.report`."""
    _check_top(top)
    lines = header_lines(snapshot)
    lines.append("")
    lines += _target_table(snapshot, top)
    if snapshot.totals["processes"] > 1:
        lines.append("")
        lines += _process_table(snapshot)
    for kind in ("inclusive", "callback"):
        hist = snapshot.histogram(kind)
        if hist.total:
            lines.append("")
            lines += _text_histogram(hist, "unmanaged calls (inclusive)" if kind == "inclusive" else "callbacks")
    return "\n".join(lines) + "\n"


def header_lines(snapshot: Snapshot) -> list[str]:
    """The report's first lines: threads, transitions, errors by HRESULT
    name, calls by kind, and the time in unmanaged calls and callbacks."""
    totals = snapshot.totals
    calls = totals["calls"]
    processes = f"{totals['processes']} processes, " if totals["processes"] > 1 else ""
    lines = [
        f"fasthost: {processes}{totals['threads']} thread(s), {totals['transitions']:,} transitions, "
        f"{totals['errors']:,} errors" + ("  [POISONED by E_FAIL]" if totals["poisoned"] else ""),
        "calls:  " + "  ".join(f"{name} {n:,}" for name, n in calls.items()),
    ]
    errors = {name: n for name, n in totals["results"].items() if name != "S_OK" and n}
    lines.append("errors: " + ("  ".join(f"{name} {n:,}" for name, n in errors.items()) if errors else "none"))
    # The recorded time first: each nanosecond once. The inclusive sums
    # count a nested call at every level (strcmp inside qsort's callback is
    # in both), so they are no share of anything and say so.
    lines.append(
        f"time:   {format_ns(totals['recorded_ns'])} recorded: {format_ns(totals['exclusive_ns'])} in unmanaged "
        f"code, {format_ns(totals['callback_exclusive_ns'])} in callbacks (each ns counted once)"
    )
    lines.append(
        f"        inclusive sums, nested calls counted at each level: unmanaged {format_ns(totals['unmanaged_ns'])}, "
        f"callbacks {format_ns(totals['callback_ns'])}"
    )
    if totals["dropped_samples"]:
        lines.append(f"        {totals['dropped_samples']:,} samples not binned (out of memory)")
    dropped_sites = int(snapshot.meta.get("callsites_dropped", 0))
    if dropped_sites:
        lines.append(f"        {dropped_sites:,} calls without a call site (past max_targets call sites per thread)")
    silent = snapshot.meta.get("children_without_data", [])
    if silent:
        lines.append(_silent_children(silent))
    return lines


def _target_table(snapshot: Snapshot, top: int) -> list[str]:
    targets = snapshot.targets
    if not len(targets):
        return ["no unmanaged calls recorded"]
    shown = targets[:top]
    sites = {int(r["target"]): called_from(snapshot, int(r["target"]), CALLED_FROM_IN_REPORT) for r in shown}
    places = [len(_place(site)) for found in sites.values() for site in found]
    width = max(12, *(len(str(s)) for s in shown["symbol"]), min(max(places, default=0), 60))
    header = f"{'target':<{width}} {'calls':>10} {'total':>9} {'mean':>9} {'p50':>9} {'p99':>9} {'max':>9} {'excl':>6}"
    lines = [f"top {len(shown)} of {len(targets)} targets by total time", header]
    for row in shown:
        hist = target_histogram(snapshot, row)
        calls = int(row["calls"])
        p50, p99 = hist.quantile([0.5, 0.99]) if hist.total else (None, None)
        share = row["exclusive_ns"] / row["total_ns"] if row["total_ns"] else 1.0
        lines.append(
            f"{row['symbol']:<{width}} {calls:>10,} {format_ns(int(row['total_ns'])):>9} "
            f"{format_ns(row['total_ns'] / calls if calls else None):>9} {format_ns(p50):>9} {format_ns(p99):>9} "
            f"{format_ns(int(row['max_ns']) if calls else None):>9} {share:>6.1%}"
        )
        if not row["overflow"]:
            lines += _called_from_lines(snapshot, int(row["target"]), sites[int(row["target"])], width)
    return lines


def _silent_children(pids: list[int]) -> str:
    """The line that says which child processes wrote no data."""
    shown = ", ".join(str(pid) for pid in pids[:10]) + (", ..." if len(pids) > 10 else "")
    return f"        {len(pids)} child process{'es' if len(pids) > 1 else ''} wrote no data: pid {shown}"


THREADS_PER_PROCESS = 8  # threads listed under a process in the text report


def _process_table(snapshot: Snapshot) -> list[str]:
    """One row per process (its threads, transitions, errors and unmanaged
    time), its busiest threads under it."""
    transitions = (snapshot.threads["leave"] + snapshot.threads["reverse_enter"]).tolist()
    errors = [int(sum(t[name] for name in RESULT_FIELDS[1:])) for t in snapshot.threads]
    rows = list(zip(range(len(snapshot.threads)), transitions, errors))
    lines = [f"{'process':<24} {'threads':>8} {'transitions':>12} {'errors':>8} {'unmanaged':>10}"]
    for pid, own in _by_process(snapshot, rows):
        lines.append(
            f"{'pid ' + str(pid):<24} {len(own):>8,} {sum(r[1] for r in own):>12,} {sum(r[2] for r in own):>8,} "
            f"{format_ns(_unmanaged_ns(snapshot, pid)):>10}"
        )
        own.sort(key=lambda r: -r[1])
        for index, n, errs in own[:THREADS_PER_PROCESS]:
            thread = snapshot.threads[index]
            label = f"  {str(thread['name'])[:14]} ({int(thread['tid'])})"
            lines.append(f"{label:<24} {'':>8} {n:>12,} {errs:>8,}")
        if len(own) > THREADS_PER_PROCESS:
            lines.append(f"  ... and {len(own) - THREADS_PER_PROCESS} more thread(s)")
    return lines


def _place(site: dict[str, Any]) -> str:
    return f"  from {os.path.basename(site['file'])}:{site['line']} {site['function']}"


def _called_from_lines(snapshot: Snapshot, target: int, sites: list[dict[str, Any]], width: int) -> list[str]:
    """Under a target's row: where it was called from (when known)."""
    lines = []
    for site in sites:
        place = _place(site)
        if len(place) > width:
            place = place[: width - 1] + "~"
        lines.append(
            f"{place:<{width}} {site['calls']:>10,} {format_ns(site['total_ns']):>9} {'':>9} "
            f"{format_ns(site['p50_ns']):>9} {format_ns(site['p99_ns']):>9}"
        )
    more = int((snapshot.callsites["target"] == target).sum()) - len(sites)
    if more > 0:
        lines.append(f"  ... and {more} more call site(s)")
    return lines


def _text_histogram(hist: Histogram, title: str, width: int = 40) -> list[str]:
    """One bar per power-of-two range of durations that holds samples."""
    p50, p90, p99, p999 = hist.quantile([0.5, 0.9, 0.99, 0.999])
    lines = [
        f"{title}: n={hist.total:,}  min {format_ns(hist.min)}  p50 {format_ns(p50)}  p90 {format_ns(p90)}  "
        f"p99 {format_ns(p99)}  p99.9 {format_ns(p999)}  max {format_ns(hist.max)}"
    ]
    # Fold buckets into power-of-two ranges: [2**k, 2**(k+1)).
    lowers = hist.edges[:-1]
    octave = np.floor(np.log2(np.maximum(lowers, 1))).astype(int)
    per_octave = np.bincount(octave, weights=hist.counts.astype(np.float64), minlength=65)
    used = np.flatnonzero(per_octave)
    peak = per_octave.max()
    empty_run = 0
    for k in range(used[0], used[-1] + 1):
        n = per_octave[k]
        if not n:
            empty_run += 1
            continue
        if empty_run:
            # A gap of empty ranges is one line, so long tails stay short.
            lines.append(
                f"  {'...':>20} |{'':<{width}}| {0:>12,} {'':>6}" if empty_run > 1 else _empty_line(k - 1, width)
            )
            empty_run = 0
        bar = "#" * max(1, round(width * n / peak))
        lines.append(f"  {_octave_label(k):>20} |{bar:<{width}}| {int(n):>12,} {n / hist.total:6.1%}")
    return lines


def _octave_label(k: int) -> str:
    return f"{format_ns(2.0**k)} - {format_ns(2.0 ** (k + 1))}"


def _empty_line(k: int, width: int) -> str:
    return f"  {_octave_label(k):>20} |{'':<{width}}| {0:>12,} {0:6.1%}"
