"""Histogram: log-linear latency histograms in nanoseconds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fasthost import _core
from fasthost.export.schema import PRECISIONS

__all__ = ["Histogram"]


def _check_precision(precision: Any) -> int:
    if not isinstance(precision, (int, np.integer)) or isinstance(precision, bool):
        raise TypeError(f"precision must be an int, not {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be between {PRECISIONS[0]} and {PRECISIONS[-1]}, got {precision}")
    return int(precision)


class Histogram:
    """A log-linear histogram of durations in ns (HdrHistogram's layout).

    With ``precision`` p, values below 2**(p+1) ns get exact 1-ns buckets and
    every later power of two is split into 2**p equal buckets, so a quantile
    read from the histogram is within 2**-p of the exact value (p=5: about
    3 %). The buckets cover 0 to 2**64 - 1 ns.

    ``counts`` (uint64, one per bucket) and ``edges`` (float64 ns, one more
    than ``counts``) describe the buckets; ``total``, ``min``, ``max``,
    ``sum`` and ``mean`` are exact for values that were recorded here.
    """

    __slots__ = ("_max", "_min", "_sum", "counts", "precision")

    def __init__(self, precision: int = 5):
        self.precision = _check_precision(precision)
        self.counts = np.zeros(len(_edges(self.precision)) - 1, dtype=np.uint64)
        self._min: int | None = None
        self._max: int | None = None
        self._sum = 0

    @classmethod
    def _from_counts(
        cls, precision: int, counts: np.ndarray, minimum: int | None, maximum: int | None, total_ns: int
    ) -> Histogram:
        """A histogram over existing counts (the snapshot builds these)."""
        hist = cls(precision)
        hist.counts = np.ascontiguousarray(counts, dtype=np.uint64)
        if hist.counts.shape != (len(_edges(precision)) - 1,):
            raise ValueError(f"counts has shape {counts.shape}, precision {precision} needs {hist.counts.shape}")
        nonzero = np.flatnonzero(hist.counts)
        if len(nonzero):
            lowers = _lower_edges(precision)
            # Where the exact extremes are unknown, the buckets bound them.
            hist._min = int(lowers[nonzero[0]]) if minimum is None else int(minimum)
            hist._max = int(lowers[nonzero[-1] + 1]) - 1 if maximum is None else int(maximum)
        hist._sum = int(total_ns)
        return hist

    # ---- recording --------------------------------------------------------
    def record(self, ns: int) -> None:
        """Records one duration in ns (an int, 0 <= ns < 2**64).

        Raises ``TypeError`` for a non-int and ``ValueError`` out of range."""
        if not isinstance(ns, (int, np.integer)) or isinstance(ns, bool):
            raise TypeError(f"a duration must be an int number of ns, not {type(ns).__name__}")
        if not 0 <= ns < 2**64:
            raise ValueError(f"a duration must be between 0 and 2**64 - 1 ns, got {ns}")
        self.record_many(np.array([ns], dtype=np.uint64))

    def record_many(self, values: Any) -> None:
        """Records every duration (ns) of an integer array (any shape).

        Raises ``TypeError`` for a non-integer array (float durations are not
        silently truncated) and ``ValueError`` for negative values; nothing
        is recorded then."""
        array = np.asarray(values)
        if array.dtype.kind not in "ui":
            raise TypeError(f"durations must be an integer array of ns, not dtype {array.dtype}")
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            raise ValueError(f"durations must be >= 0 ns, got {array.min()}")
        flat = np.ascontiguousarray(array.reshape(-1)).astype(np.uint64, copy=False)
        _, lowest, highest, total = _core.histogram_add(self.counts, flat, self.precision)
        if lowest is not None and highest is not None:  # None when `values` was empty
            self._min = lowest if self._min is None else min(self._min, lowest)
            self._max = highest if self._max is None else max(self._max, highest)
            self._sum += total

    # ---- reading -----------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        """Bucket edges in ns (float64): bucket i holds [edges[i], edges[i+1])."""
        return _edges(self.precision)

    @property
    def total(self) -> int:
        """Number of recorded durations."""
        return int(self.counts.sum())

    @property
    def min(self) -> int | None:
        """Smallest duration (ns), or None when empty."""
        return self._min if self.total else None

    @property
    def max(self) -> int | None:
        """Largest duration (ns), or None when empty."""
        return self._max if self.total else None

    @property
    def sum(self) -> int:
        """Sum of the durations (ns)."""
        return self._sum

    @property
    def mean(self) -> float:
        """Mean duration (ns); NaN when empty."""
        total = self.total
        return self._sum / total if total else math.nan

    def quantile(self, q: Any) -> Any:
        """The q-quantile(s) in ns, for q a number or an array in [0, 1].

        Follows numpy's ``method="inverted_cdf"`` (the smallest recorded
        value with at least q of the values at or below it), located to its
        bucket: the result is within 2**-precision of the exact value. NaN
        when empty. Raises ``ValueError`` for q outside [0, 1] or NaN."""
        qs = np.asarray(q, dtype=np.float64)
        if np.isnan(qs).any() or (qs < 0).any() or (qs > 1).any():
            raise ValueError(f"quantiles must be in [0, 1], got {q!r}")
        total = self.total
        if total == 0:
            out = np.full(qs.shape, math.nan)
            return float(out) if out.ndim == 0 else out
        # The same float arithmetic as numpy's inverted_cdf: index ceil(n*q - 1).
        index = np.clip(np.ceil(total * qs - 1), 0, total - 1)
        cumulative = np.cumsum(self.counts)
        buckets = np.searchsorted(cumulative, index + 1, side="left")
        lowers = _lower_edges(self.precision)
        low = lowers[buckets].astype(np.float64)
        width = (lowers[buckets + 1] - lowers[buckets]).astype(np.float64)
        middle = low + (width - 1) / 2  # the bucket holds the integers low .. low + width - 1
        out = np.clip(middle, self._min, self._max)
        return float(out) if out.ndim == 0 else out

    def nonzero(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower edges, upper edges, counts) of the buckets that are not
        empty, for plots and text renderings."""
        index = np.flatnonzero(self.counts)
        edges = self.edges
        return edges[index], edges[index + 1], self.counts[index]

    # ---- combining ---------------------------------------------------------
    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both. Raises ``ValueError`` when the
        precisions differ and ``TypeError`` for a non-Histogram."""
        if not isinstance(other, Histogram):
            raise TypeError(f"can only merge a Histogram, not {type(other).__name__}")
        if other.precision != self.precision:
            raise ValueError(f"cannot merge histograms of precision {self.precision} and {other.precision}")
        merged = Histogram(self.precision)
        merged.counts = self.counts + other.counts
        mins = [m for m in (self.min, other.min) if m is not None]
        maxs = [m for m in (self.max, other.max) if m is not None]
        merged._min = min(mins) if mins else None
        merged._max = max(maxs) if maxs else None
        merged._sum = self._sum + other._sum
        return merged

    __add__ = merge

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.precision == other.precision
            and np.array_equal(self.counts, other.counts)
            and (self.min, self.max, self.sum) == (other.min, other.max, other.sum)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        if not self.total:
            return f"<Histogram precision={self.precision} empty>"
        p50, p99 = self.quantile([0.5, 0.99])
        return (
            f"<Histogram precision={self.precision} total={self.total} min={self.min} "
            f"p50={p50:.0f} p99={p99:.0f} max={self.max} ns>"
        )


_LOWER_CACHE: dict[int, np.ndarray] = {}
_EDGE_CACHE: dict[int, np.ndarray] = {}


def _lower_edges(precision: int) -> np.ndarray:
    """uint64 lower edges, plus the last bucket's upper bound (2**64 - 1):
    from the C core's own bucket arithmetic."""
    if precision not in _LOWER_CACHE:
        lowers = _core.bucket_lower_edges(precision)
        lowers.flags.writeable = False
        _LOWER_CACHE[precision] = lowers
    return _LOWER_CACHE[precision]


def _edges(precision: int) -> np.ndarray:
    if precision not in _EDGE_CACHE:
        edges = _lower_edges(precision).astype(np.float64)
        edges[-1] = 2.0**64
        edges.flags.writeable = False
        _EDGE_CACHE[precision] = edges
    return _EDGE_CACHE[precision]
