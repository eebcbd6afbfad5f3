"""What the metrics exporters (Prometheus, OpenTelemetry) publish, computed
once from a snapshot: transitions by kind and HRESULT, and the busiest
targets with their latency histograms, the rest folded into ``other``.

Monitoring systems keep one time series per label set, so the number of
targets exported is bounded (``top``), whatever the program calls: the
rest are added up exactly into one ``other`` row (counts, times and
histogram buckets all add).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fasthost.export.histogram import Histogram
from fasthost.hresult import CALL_ORDER, RESULT_ORDER

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["OTHER", "Labels", "Metrics", "TargetMetrics", "check_top", "metrics"]

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
    ``ValueError`` for a negative ``top``, ``TypeError`` for a non-int.
    For a series of collections, see :class:`Labels`."""
    return Labels(top)(snapshot)


@dataclass(frozen=True)
class _Baseline:
    """What a target had when it got its label: what ``other`` had counted
    of it until then, and keeps (zeros for a label given at a session's
    first collection)."""

    calls: int
    total_ns: int
    exclusive_ns: int
    counts: np.ndarray
    sum_ns: int
    min_ns: int | None
    max_ns: int | None


class Labels:
    """The labels of an exporter's collections (a Prometheus collector's
    scrapes, an OTel reader's collections): calling it with a snapshot gives
    the :class:`Metrics` to export.

    Every exported series only grows within a session, as counters must:
    re-ranking the top targets at every collection would move a target that
    climbs out of ``other`` and make ``other`` go down, which ``rate()``
    reads as a reset. So a target keeps its label for the rest of the
    session, and at most ``top`` targets get one: the busiest by inclusive
    time at the first collection, then, while fewer than ``top`` have one,
    the busiest of the rest at later collections. A target labelled after
    the session's first collection is exported from that collection on: what
    it had before stays in ``other``, which had counted it. A new session
    (``reset()``, ``start()``) starts over."""

    def __init__(self, top: int = 20):
        self.top = check_top(top)
        self._session: object = None
        self._kept: dict[str, _Baseline] = {}

    def __call__(self, snapshot: Snapshot) -> Metrics:
        per_call_result = snapshot.results.sum(axis=0, dtype=np.uint64)
        transitions = {
            (kind, result.name): int(per_call_result[k, r])
            for k, kind in enumerate(CALL_ORDER)
            for r, result in enumerate(RESULT_ORDER)
        }
        session = repr(snapshot.meta.get("session"))
        first = session != self._session
        if first:
            self._session, self._kept = session, {}
        by_symbol: dict[str, list[int]] = {}
        addresses: dict[str, list[int]] = {}
        for row in snapshot.targets:
            label = OTHER if row["overflow"] else str(row["symbol"])
            figures = by_symbol.setdefault(label, [0, 0, 0])
            figures[0] += int(row["calls"])
            figures[1] += int(row["total_ns"])
            figures[2] += int(row["exclusive_ns"])
            if not row["overflow"]:
                addresses.setdefault(label, []).append(int(row["target"]))
        by_symbol.pop(OTHER, None)

        def histogram(label: str) -> Histogram:
            # By address, not by symbol: a symbol can be any name a program
            # registers, "overflow" too, which snapshot.histogram() reads as
            # the overflow row.
            hists = [snapshot.histogram("inclusive", target=a) for a in addresses.get(label, [])]
            return functools.reduce(Histogram.merge, hists, Histogram(snapshot.precision))

        ranked = sorted(by_symbol.items(), key=lambda item: (-item[1][1], item[0]))
        for label, (calls, total_ns, exclusive_ns) in ranked:
            if len(self._kept) >= self.top:
                break
            if label in self._kept:
                continue
            hist = histogram(label)
            if first or not calls:
                self._kept[label] = _Baseline(0, 0, 0, np.zeros_like(hist.counts), 0, None, None)
            else:
                self._kept[label] = _Baseline(
                    calls, total_ns, exclusive_ns, hist.counts.copy(), hist.sum, hist.min, hist.max
                )
        rows = []
        for label in sorted(self._kept, key=lambda label: (-by_symbol.get(label, [0, 0, 0])[1], label)):
            base, hist = self._kept[label], histogram(label)
            calls, total_ns, exclusive_ns = by_symbol.get(label, [0, 0, 0])
            fresh = base.calls == 0  # exported whole: its exact extremes hold
            delta = Histogram._from_counts(
                snapshot.precision,
                hist.counts - base.counts,
                hist.min if fresh else None,
                hist.max if fresh else None,
                hist.sum - base.sum_ns,
            )
            since = (calls - base.calls, total_ns - base.total_ns, exclusive_ns - base.exclusive_ns)
            rows.append(TargetMetrics(label, *since, delta))
        targets = snapshot.targets
        folded = targets[(targets["calls"] > 0) & (targets["overflow"] | ~np.isin(targets["symbol"], list(self._kept)))]
        held = [base for base in self._kept.values() if base.calls]
        if len(folded) or held:
            # Everything minus the labelled rows: buckets and sums add exactly.
            whole = snapshot.histogram("inclusive")
            counts = whole.counts - sum((row.histogram.counts for row in rows), np.zeros_like(whole.counts))
            rest_ns = whole.sum - sum(row.histogram.sum for row in rows)
            # Its exact extremes: those of the targets it holds whole (the
            # overflow row's too), and of what labelled targets had before.
            lows = [int(v) for v in folded["min_ns"]] + [b.min_ns for b in held if b.min_ns is not None]
            highs = [int(v) for v in folded["max_ns"]] + [b.max_ns for b in held if b.max_ns is not None]
            other = TargetMetrics(
                OTHER,
                int(targets["calls"].sum()) - sum(row.calls for row in rows),
                int(targets["total_ns"].sum()) - sum(row.total_ns for row in rows),
                int(targets["exclusive_ns"].sum()) - sum(row.exclusive_ns for row in rows),
                Histogram._from_counts(
                    snapshot.precision, counts, min(lows) if lows else None, max(highs) if highs else None, rest_ns
                ),
            )
            rows.append(other)
        return Metrics(
            transitions=transitions,
            abandoned_at_exit=int(snapshot.threads["exit_abandoned"].sum()),
            targets=rows,
            precision=snapshot.precision,
            session_ns=int(snapshot.meta.get("session_ns", 0)),
        )
