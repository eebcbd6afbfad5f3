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

# The core's raw columns this module reads.
_SITE_COLUMN = {name: i for i, name in enumerate(_core.SITE_FIELDS)}
_SITE_ROW_COLUMN = {name: i for i, name in enumerate(_core.SITE_ROW_FIELDS)}
_SITE_KEY_COLUMNS = [_SITE_COLUMN[name] for name in ("code", "where", "target")]
_SITE_SUMS = ("calls", "total_ns", "exclusive_ns")
_SITE_SUM_COLUMNS = [_SITE_COLUMN[name] for name in _SITE_SUMS]
_SITE_WIDTH = 1 << SITE_PRECISION  # counts in a histogram row
_SITE_ROWS = SITE_BUCKETS // _SITE_WIDTH

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


def build(sites: np.ndarray, site_rows: np.ndarray, site_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and histogram counts from the core's raw records, naming each
    code object while it is alive.

    ``sites`` has one row of ``_core.SITE_FIELDS`` per thread and site;
    ``site_rows`` (``_core.SITE_ROW_FIELDS``: the index of a ``sites`` row
    and a power-of-two row of its histogram) says where each row of
    ``site_counts`` (2**SITE_PRECISION uint64 counts) goes: the core copies
    only the rows a site has (one or two, of SITE_BUCKETS / 8). Only the
    result is dense: one row of SITE_BUCKETS counts per (file, line,
    function, target), ordered as :func:`combine` orders them."""
    codes = _core._site_code_objects()
    # Name each distinct (code, offset, target) once: the same sites come
    # from every thread that called them.
    distinct, of_distinct = np.unique(sites[:, _SITE_KEY_COLUMNS], axis=0, return_inverse=True)
    slots: dict[tuple[str, int, str, int], int] = {}
    slot_of_distinct = np.zeros(len(distinct), dtype=np.intp)
    for i, (code, offset, target) in enumerate(distinct.tolist()):
        key = (*_where(codes.get(code), offset), target)
        slot_of_distinct[i] = slots.setdefault(key, len(slots))
    slot_of = slot_of_distinct[np.reshape(of_distinct, -1)]  # 1-D, as some numpy 2 releases do not give it
    # uint64 sums wrap as the core's counters do: times add modulo 2**64.
    sums = np.zeros((len(slots), len(_SITE_SUMS)), dtype=np.uint64)
    _add_rows(sums, slot_of, sites[:, _SITE_SUM_COLUMNS])
    rows, kept = _ordered(list(slots), sums.tolist())
    position = np.full(len(slots), -1, dtype=np.intp)  # -1: a site not kept
    position[kept] = np.arange(len(kept))
    home = position[slot_of[site_rows[:, _SITE_ROW_COLUMN["site"]]]]
    placed = np.flatnonzero(home >= 0)
    counts = np.zeros((len(kept), SITE_BUCKETS), dtype=np.uint64)
    # `counts` seen as rows of one power of two each.
    _add_rows(
        counts.reshape(-1, _SITE_WIDTH),
        home[placed] * _SITE_ROWS + site_rows[placed, _SITE_ROW_COLUMN["row"]],
        site_counts[placed],
    )
    return rows, counts


def _add_rows(out: np.ndarray, where: np.ndarray, values: np.ndarray) -> None:
    """Adds row i of ``values`` to row ``where[i]`` of ``out`` (uint64:
    exact, modulo 2**64), several rows to one place summed first: sorted by
    place, runs added with reduceat (np.add.at would do, but is slow before
    numpy 1.25)."""
    order = np.argsort(where, kind="stable")
    if len(order):
        places, starts = np.unique(where[order], return_index=True)
        out[places] += np.add.reduceat(values[order], starts, axis=0)


def _add(entry: list[int], calls: int, total_ns: int, exclusive_ns: int) -> None:
    """Adds a row's calls and times to a site's sums; times add modulo
    2**64, as the core's uint64 counters and a target's sums over threads
    do, so that the sites of a target still add up to its times past 2**64
    ns (584 years: the manual clock gets there)."""
    entry[0] += calls
    entry[1] = (entry[1] + total_ns) % 2**64
    entry[2] = (entry[2] + exclusive_ns) % 2**64


def _ordered(keys: list[tuple[str, int, str, int]], sums: list[list[int]]) -> tuple[np.ndarray, list[int]]:
    """The rows of the sites whose calls stay above zero, by total time,
    longest first, and which of ``keys`` each row is."""
    kept = sorted((i for i, entry in enumerate(sums) if entry[0] > 0), key=lambda i: (-sums[i][1], keys[i]))
    rows = np.zeros(len(kept), dtype=CALLSITE_DTYPE)
    for row, i in enumerate(kept):
        rows[row] = (*keys[i], *sums[i])
    return rows, kept


def combine(parts: list[tuple[np.ndarray, np.ndarray]], sign: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums rows with the same (file, line, function, target) over
    ``parts``; with ``sign`` (+1/-1 per part) subtracts too, keeping rows
    whose calls stay above zero. Times add modulo 2**64 (see ``_add``).
    Sorted by total time, longest first."""
    slots: dict[tuple[str, int, str, int], int] = {}
    sums: list[list[int]] = []
    hists: list[np.ndarray] = []
    for index, (rows, counts) in enumerate(parts):
        factor = 1 if sign is None else sign[index]
        for row, hist in zip(rows.tolist(), counts):
            key = (row[0], row[1], row[2], row[3])
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = len(sums)
                sums.append([0, 0, 0])
                hists.append(np.zeros(counts.shape[1], dtype=np.int64))
            _add(sums[slot], factor * row[4], factor * row[5], factor * row[6])
            hists[slot] += factor * hist.astype(np.int64)
    rows, kept = _ordered(list(slots), sums)
    total = np.zeros((len(kept), SITE_BUCKETS), dtype=np.uint64)
    for row, slot in enumerate(kept):
        total[row] = np.clip(hists[slot], 0, None)
    return rows, total


def quantiles(
    counts: np.ndarray, total_ns: int, qs: tuple[float, ...] = (0.5, 0.99), bounds: tuple[int, int] | None = None
) -> list[float]:
    """The quantiles (ns) of one call site's histogram row, within
    ``bounds`` (its target's exact min and max) when given."""
    low, high = bounds if bounds is not None else (None, None)
    hist = Histogram._from_counts(SITE_PRECISION, counts, low, high, int(total_ns))
    return [float(v) for v in np.atleast_1d(hist.quantile(np.asarray(qs)))]
