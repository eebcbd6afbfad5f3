"""Call sites: which Python code called each native target.

The captures record, for every U frame they close, the caller's code
object and the call's instruction offset; the core keeps per thread and per
(code, offset, target) the calls, the inclusive and exclusive time and a
coarse histogram (``SITE_PRECISION`` sub-bucket bits: quantiles within
12.5 %). Here those records become one row per (file, line, function,
target), summed over threads and over the instructions of one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fasthost import _core
from fasthost.export.histogram import Histogram

__all__ = ["CALLSITE_DTYPE", "SITE_BUCKETS", "SITE_PRECISION", "build", "combine", "empty", "quantiles"]

SITE_PRECISION: int = _core.SITE_PRECISION
SITE_BUCKETS: int = _core.SITE_BUCKETS

_FILE_WIDTH, _FUNCTION_WIDTH = 256, 128

CALLSITE_DTYPE = np.dtype(
    [
        ("file", f"U{_FILE_WIDTH}"),
        ("line", np.int64),
        ("function", f"U{_FUNCTION_WIDTH}"),
        ("target", np.uint64),
        ("calls", np.uint64),
        ("total_ns", np.uint64),
        ("exclusive_ns", np.uint64),
    ]
)
"""One row per (file, line, function, target), by total time, longest
first. A longer file or function name keeps its end after a leading "…".
``line`` is -1 where the code object had no line for the call (or
was not kept); the symbol of ``target`` is :meth:`Snapshot.symbol`."""

_UNKNOWN = ("<unknown>", -1, "<unknown>")


def empty() -> tuple[np.ndarray, np.ndarray]:
    """No call sites: the rows and their (0 x buckets) histogram counts."""
    return np.zeros(0, dtype=CALLSITE_DTYPE), np.zeros((0, SITE_BUCKETS), dtype=np.uint64)


def _fit(text: str, width: int) -> str:
    """``text``, or its end after an ellipsis when it is wider than the
    column (a path's file name and a qualname's innermost part matter most)."""
    return text if len(text) <= width else "\u2026" + text[len(text) - width + 1 :]


def _where(code: Any, offset: int) -> tuple[str, int, str]:
    if code is None:
        return _UNKNOWN
    line = _core._code_line(code, offset)
    function = getattr(code, "co_qualname", code.co_name)  # co_qualname: 3.11+
    return (
        _fit(code.co_filename, _FILE_WIDTH),
        line if line is not None else -1,
        _fit(function, _FUNCTION_WIDTH),
    )


def build(sites: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and histogram counts from the core's raw site records
    (``_core.SITE_FIELDS``), naming each code object while it is alive."""
    codes = _core._site_code_objects()
    places: dict[tuple[int, int], tuple[str, int, str]] = {}
    keys = []
    for code, offset in zip(sites[:, 1].tolist(), sites[:, 2].tolist()):
        place = places.get((code, offset))
        if place is None:
            place = places[(code, offset)] = _where(codes.get(code), offset)
        keys.append(place)
    rows = np.zeros(len(sites), dtype=CALLSITE_DTYPE)
    if len(sites):
        rows["file"] = [k[0] for k in keys]
        rows["line"] = [k[1] for k in keys]
        rows["function"] = [k[2] for k in keys]
        rows["target"] = sites[:, 3]
        rows["calls"] = sites[:, 4]
        rows["total_ns"] = sites[:, 5]
        rows["exclusive_ns"] = sites[:, 6]
    # The core's counts are uint64 already: no second copy (3.9 KiB a site).
    return combine([(rows, counts.astype(np.uint64, copy=False))])


def combine(parts: list[tuple[np.ndarray, np.ndarray]], sign: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums rows with the same (file, line, function, target) over
    ``parts``; with ``sign`` (+1/-1 per part) subtracts too, keeping rows
    whose calls stay above zero. Times add modulo 2**64, as the core's
    uint64 counters and a target's sums over threads do, so that the sites
    of a target still add up to its times past 2**64 ns (584 years: the
    manual clock gets there). Sorted by total time, longest first."""
    sums: dict[tuple[str, int, str, int], list[Any]] = {}
    for index, (rows, counts) in enumerate(parts):
        factor = 1 if sign is None else sign[index]
        for row, hist in zip(rows.tolist(), counts):
            key = (row[0], row[1], row[2], row[3])
            entry = sums.get(key)
            if entry is None:
                entry = sums[key] = [0, 0, 0, np.zeros(counts.shape[1], dtype=np.int64)]
            entry[0] += factor * row[4]
            entry[1] = (entry[1] + factor * row[5]) % 2**64
            entry[2] = (entry[2] + factor * row[6]) % 2**64
            entry[3] += factor * hist.astype(np.int64)
    kept = [(key, value) for key, value in sums.items() if value[0] > 0]
    kept.sort(key=lambda item: (-item[1][1], item[0]))
    rows = np.zeros(len(kept), dtype=CALLSITE_DTYPE)
    counts = np.zeros((len(kept), SITE_BUCKETS), dtype=np.uint64)
    for i, (key, value) in enumerate(kept):
        rows[i] = (*key, value[0], value[1], value[2])
        counts[i] = np.clip(value[3], 0, None)
    return rows, counts


def quantiles(
    counts: np.ndarray, total_ns: int, qs: tuple[float, ...] = (0.5, 0.99), bounds: tuple[int, int] | None = None
) -> list[float]:
    """The quantiles (ns) of one call site's histogram row, within
    ``bounds`` (its target's exact min and max) when given."""
    low, high = bounds if bounds is not None else (None, None)
    hist = Histogram._from_counts(SITE_PRECISION, counts, low, high, int(total_ns))
    return [float(v) for v in np.atleast_1d(hist.quantile(np.asarray(qs)))]
