"""A self-contained HTML report of a snapshot: one file, no network.

The page is ``report.html`` (plain JavaScript drawing inline SVG) with the
snapshot's figures embedded as JSON. Every figure a person reads as a
number (p50, totals) is formatted here, by the same ``format_ns`` as the
text report; the page only formats axis ticks. Everything taken from the
recording (symbols, thread names, file paths) reaches the page as JSON
strings inside a ``<script type="application/json">`` element, with ``<``,
``>`` and ``&`` escaped, and the page writes them with ``textContent``:
a symbol such as ``</script><script>`` stays text.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost.export.histogram import Histogram
from fasthost.export.report import (
    QUANTILES,
    _check_top,
    called_from,
    format_ns,
    header_lines,
    target_histogram,
)
from fasthost.export.schema import CALLBACK, NESTED_EXCLUSIVE, NESTED_INCLUSIVE, RESULT_FIELDS
from fasthost.export.storage import open_for_writing
from fasthost.hresult import RESULT_ORDER

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["html_data", "render_html", "write_html"]

CURVE_POINTS = 48
"""Points of a percentile curve, evenly spread on the log 1/(1-q) axis."""
DISPLAY_PRECISION = 3
"""Sub-bucket bits of the page's histogram bars: 8 bars per power of two
(the recorded buckets, at precision 5 by default, nest in them exactly)."""
CALLERS_SHOWN = 20
"""Call sites listed per target."""

_DATA_MARK = "/*FASTHOST_DATA*/"
# JSON inside <script>: these must not be able to end the element or open a
# comment; JSON.parse reads the escapes back as the same characters.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def write_html(snapshot: Snapshot, path: str | os.PathLike[str], top: int = 50) -> int:
    """Writes the HTML report of ``snapshot`` to ``path``: header figures,
    the ``top`` targets (by total time) in a sortable table, each target's
    latency distribution, callers and callbacks, the whole run's
    distributions, and the threads with their errors by HRESULT. Durations
    are ns in the data, shown in human units. Returns the file's size in
    bytes. Raises ``ValueError`` for a ``top`` that is not an int >= 0 and
    ``OSError`` when the file cannot be written."""
    text = render_html(snapshot, top)
    data = text.encode("utf-8")
    with open_for_writing(path) as file:
        file.write(data)
    return len(data)


def render_html(snapshot: Snapshot, top: int = 50) -> str:
    """The HTML report of ``snapshot`` as a string (see :func:`write_html`)."""
    payload = json.dumps(html_data(snapshot, top), separators=(",", ":"), allow_nan=False)
    for char, escape in _SCRIPT_ESCAPES.items():
        payload = payload.replace(char, escape)
    template = resources.files("fasthost.export").joinpath("report.html").read_text(encoding="utf-8")
    before, after = template.split(_DATA_MARK)
    return before + payload + after


def html_data(snapshot: Snapshot, top: int = 50) -> dict[str, Any]:
    """The figures the page shows, JSON-ready (durations in ns, plus their
    ``format_ns`` text): ``header`` (the text report's first lines),
    ``totals``, ``whole`` (the distributions of all unmanaged calls and of
    all callbacks), ``targets`` (the ``top`` busiest, each with its
    distribution, ``callers`` and ``callbacks``), ``targets_total`` and
    ``threads``. Raises ``ValueError`` for a bad ``top``."""
    _check_top(top)
    targets = snapshot.targets
    return {
        "header": header_lines(snapshot),
        "totals": snapshot.totals,
        "whole": {
            "inclusive": distribution(snapshot.histogram("inclusive")),
            "callback": distribution(snapshot.histogram("callback")),
        },
        "targets": [_target(snapshot, row) for row in targets[:top]],
        "targets_total": len(targets),
        "threads": [_thread(snapshot, i) for i in range(len(snapshot.threads))],
    }


def distribution(hist: Histogram) -> dict[str, Any]:
    """One latency distribution for the page: ``n``, ``summary`` (min,
    mean, p50 ... p99.9, max; ns and text), ``curve`` ([1/(1-q), ns]
    pairs up to 1/(1-q) = n, the last one the max) and ``bins`` ([lower,
    upper, count] of the non-empty bars, ns)."""
    n = hist.total
    if not n:
        return {"n": 0, "summary": {}, "curve": [], "bins": []}
    values: dict[str, float] = {"min": float(hist.min or 0), "mean": float(hist.mean)}
    values.update(
        zip((k[: -len("_ns")] for k in QUANTILES), (float(v) for v in hist.quantile(list(QUANTILES.values()))))
    )
    values["max"] = float(hist.max or 0)
    summary = {name: {"ns": round(ns, 1), "text": format_ns(ns)} for name, ns in values.items()}
    return {"n": n, "summary": summary, "curve": _curve(hist), "bins": _bins(hist)}


def _curve(hist: Histogram) -> list[list[float]]:
    """HdrHistogram's percentile plot: latency at q for 1/(1-q) spread
    evenly on a log axis from 1 (the minimum) to n, where the last rank is
    the maximum."""
    n = hist.total
    if n < 2:
        return [[1.0, float(hist.max or 0)]]
    spans = np.logspace(0.0, math.log10(n), CURVE_POINTS)[:-1]
    latencies = np.atleast_1d(hist.quantile(1.0 - 1.0 / spans))
    points = [[round(float(x), 4), round(float(ns), 1)] for x, ns in zip(spans, latencies)]
    return [*points, [float(n), float(hist.max or 0)]]


def _bins(hist: Histogram) -> list[list[int]]:
    """The non-empty buckets folded to DISPLAY_PRECISION: the same
    log-linear layout with fewer sub-buckets per power of two, so each
    recorded bucket lies inside one bar."""
    lower, _, counts = hist.nonzero()
    bits = min(hist.precision, DISPLAY_PRECISION)
    folded: dict[int, list[int]] = {}
    for low, count in zip(lower.astype(np.uint64).tolist(), counts.tolist()):
        width = 1 if low < (2 << bits) else 1 << (low.bit_length() - 1 - bits)
        start = low - low % width
        folded.setdefault(start, [start, start + width, 0])[2] += int(count)
    return [folded[key] for key in sorted(folded)]


def _target(snapshot: Snapshot, row: np.void) -> dict[str, Any]:
    hist = target_histogram(snapshot, row)
    calls, total, exclusive = int(row["calls"]), int(row["total_ns"]), int(row["exclusive_ns"])
    overflow = bool(row["overflow"])
    target = int(row["target"])
    entry: dict[str, Any] = {
        "symbol": str(row["symbol"]),
        "address": None if overflow else f"0x{target:x}",
        "calls": calls,
        "total_ns": total,
        "total_text": format_ns(total),
        "exclusive_ns": exclusive,
        "exclusive_share": exclusive / total if total else 1.0,
        "timeouts": int(row["timeouts"]),
        "threads": int(row["threads"]),
        "dist": distribution(hist),
    }
    entry["callers"] = [] if overflow else [_with_texts(site) for site in called_from(snapshot, target, CALLERS_SHOWN)]
    entry["callers_total"] = 0 if overflow else int((snapshot.callsites["target"] == target).sum())
    entry["callbacks"] = _callbacks(snapshot, "overflow" if overflow else target, row)
    return entry


def _with_texts(site: dict[str, Any]) -> dict[str, Any]:
    """A call site with its durations also as text."""
    texts = {
        f"{key[: -len('_ns')]}_text": format_ns(site[key]) for key in ("total_ns", "exclusive_ns", "p50_ns", "p99_ns")
    }
    return {**site, **texts}


def _callbacks(snapshot: Snapshot, target: int | str, row: np.void) -> dict[str, Any]:
    """What the core keeps of the callbacks made under one target: the
    calls that had frames nested inside (their inclusive and own-time
    distributions), the time in those frames (total - exclusive), and the
    callback distribution of the threads that called it, which the core
    keeps per thread, not per target."""
    pair_mask = snapshot._target_mask(target)
    threads = np.zeros(len(snapshot.threads), dtype=bool)
    threads[snapshot.thread_targets["thread"][pair_mask]] = True
    nested = {
        name: snapshot._sum_rows(snapshot._row_mask(kind, threads, pair_mask))
        for name, kind in (("inclusive", NESTED_INCLUSIVE), ("exclusive", NESTED_EXCLUSIVE))
    }
    with_callbacks = int(nested["inclusive"].sum())
    # The calls with callbacks are some of the target's calls: their
    # quantiles stay within its exact extremes, as a call site's do.
    low = int(row["min_ns"]) if row["calls"] else None
    high = int(row["max_ns"]) if row["calls"] else None
    nested_hists = {
        name: Histogram._from_counts(snapshot.precision, counts, low if name == "inclusive" else None, high, 0)
        for name, counts in nested.items()
    }
    total_ns, exclusive_ns = int(row["total_ns"]), int(row["exclusive_ns"])
    thread_rows = snapshot.threads[threads & (snapshot.threads["callback_calls"] > 0)]
    thread_callbacks = Histogram._from_counts(
        snapshot.precision,
        snapshot._sum_rows(snapshot._row_mask(CALLBACK, threads, None)),
        int(thread_rows["callback_min_ns"].min()) if len(thread_rows) else None,
        int(thread_rows["callback_max_ns"].max()) if len(thread_rows) else None,
        int(thread_rows["callback_total_ns"].sum(dtype=np.uint64)),
    )
    return {
        "calls_with_callbacks": with_callbacks,
        "nested_ns": total_ns - exclusive_ns,
        "nested_text": format_ns(total_ns - exclusive_ns),
        "inclusive": _quantiles(nested_hists["inclusive"]),
        "own": _quantiles(nested_hists["exclusive"]),
        "threads": int(threads.sum()),
        "thread_callbacks": distribution(thread_callbacks),
    }


def _quantiles(hist: Histogram) -> dict[str, dict[str, Any]]:
    """p50 ... p99.9 of ``hist`` in ns and as text; empty for no samples."""
    if not hist.total:
        return {}
    values = hist.quantile(list(QUANTILES.values()))
    return {name[: -len("_ns")]: {"ns": float(v), "text": format_ns(float(v))} for name, v in zip(QUANTILES, values)}


def _thread(snapshot: Snapshot, index: int) -> dict[str, Any]:
    row = snapshot.threads[index]
    errors = {
        result.name: int(row[field])
        for field, result in zip(RESULT_FIELDS, RESULT_ORDER)
        if field != "ok" and row[field]
    }
    return {
        "tid": int(row["tid"]),
        "name": str(row["name"]),
        "alive": bool(row["alive"]),
        "unmanaged_calls": int(row["leave"]),
        "callbacks": int(row["reverse_enter"]),
        "callback_total_ns": int(row["callback_total_ns"]),
        "callback_total_text": format_ns(int(row["callback_total_ns"])),
        "max_depth": int(row["max_depth"]),
        "errors": errors,
        "errors_total": sum(errors.values()),
    }
