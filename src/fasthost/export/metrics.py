"""What the metrics exporters (Prometheus, OpenTelemetry) publish, computed
once from a snapshot: transitions by kind and HRESULT, and the busiest
targets with their latency histograms, the rest folded into ``other``.

Monitoring systems keep one time series per label set, so the number of
targets exported is bounded (``top``), whatever the program calls: the
rest are added up exactly into one ``other`` row (counts, times and
histogram buckets all add).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fasthost.export.histogram import Histogram
from fasthost.hresult import CALL_ORDER, RESULT_ORDER

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["OTHER", "Metrics", "TargetMetrics", "check_top", "metrics"]

OTHER = "other"
"""The label of the row that holds every target past the top N."""


@dataclass(frozen=True)
class TargetMetrics:
    """One exported target (or ``other``): its symbol, calls, inclusive
    and exclusive time in ns, and its inclusive latency histogram (ns)."""

    label: str
    calls: int
    total_ns: int
    exclusive_ns: int
    histogram: Histogram


@dataclass(frozen=True)
class Metrics:
    """Everything an exporter publishes about one snapshot.

    ``transitions`` maps (call kind, HRESULT name) to calls, for every kind
    in the CLR's IDL order and every HRESULT (zeros included, so that a
    series exists before its first error); ``abandoned_at_exit`` counts the
    frames still open when their thread ended (no call returned for them);
    ``targets`` holds the top targets by inclusive time, then ``other``
    when any target is left out; ``session_ns`` is how long ago the
    session began (ns) and ``precision`` the histograms' precision."""

    transitions: dict[tuple[str, str], int]
    abandoned_at_exit: int
    targets: list[TargetMetrics]
    precision: int
    session_ns: int


def check_top(top: object) -> int:
    """``top`` (how many targets get their own label) if it is an int >= 0;
    raises ``TypeError`` or ``ValueError`` otherwise."""
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool):
        raise TypeError(f"top must be an int, not {type(top).__name__}")
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    return int(top)


def metrics(snapshot: Snapshot, top: int = 20) -> Metrics:
    """The figures of ``snapshot`` to export, with the ``top`` targets by
    inclusive time (ns) and the rest in one ``other`` row. Targets that
    share a symbol are one row (a label must be unique). Raises
    ``ValueError`` for a negative ``top``, ``TypeError`` for a non-int."""
    top = check_top(top)
    per_call_result = snapshot.results.sum(axis=0, dtype=np.uint64)
    transitions = {
        (kind, result.name): int(per_call_result[k, r])
        for k, kind in enumerate(CALL_ORDER)
        for r, result in enumerate(RESULT_ORDER)
    }
    by_symbol: dict[str, list[int]] = {}
    for row in snapshot.targets:
        label = OTHER if row["overflow"] else str(row["symbol"])
        figures = by_symbol.setdefault(label, [0, 0, 0])
        figures[0] += int(row["calls"])
        figures[1] += int(row["total_ns"])
        figures[2] += int(row["exclusive_ns"])
    overflow = by_symbol.pop(OTHER, None)
    ranked = sorted(by_symbol.items(), key=lambda item: (-item[1][1], item[0]))
    kept, rest = ranked[:top], ranked[top:]
    rows = [
        TargetMetrics(label, calls, total_ns, exclusive_ns, snapshot.histogram("inclusive", target=label))
        for label, (calls, total_ns, exclusive_ns) in kept
    ]
    if overflow is not None:
        rest.append((OTHER, overflow))
    if rest:
        # The rest's histogram is everything minus the kept ones': buckets add exactly.
        whole = snapshot.histogram("inclusive")
        counts = whole.counts - sum((row.histogram.counts for row in rows), np.zeros_like(whole.counts))
        other = [sum(figures[i] for _, figures in rest) for i in range(3)]
        # The rest's exact extremes are not kept apart: the buckets bound them.
        rest_ns = whole.sum - sum(row.histogram.sum for row in rows)
        histogram = Histogram._from_counts(snapshot.precision, counts, None, None, rest_ns)
        rows.append(TargetMetrics(OTHER, other[0], other[1], other[2], histogram))
    return Metrics(
        transitions=transitions,
        abandoned_at_exit=int(snapshot.threads["exit_abandoned"].sum()),
        targets=rows,
        precision=snapshot.precision,
        session_ns=int(snapshot.meta.get("session_ns", 0)),
    )
