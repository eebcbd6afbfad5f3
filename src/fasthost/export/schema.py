"""The layout of a snapshot's arrays, built from the core's own tables.

``fasthost._core.SCHEMA`` lists the columns of every record the core hands
over (core/fh_schema.h), each with its C type and its role. This module
turns them into the numpy dtypes of a :class:`~fasthost.Snapshot` and of
its ``.npz`` file, and tells the combining code what to do with each
column: a counter is subtracted by ``diff``, a gauge is taken from the
later snapshot, minima and maxima are bounded by the interval's histogram.
A column added to a core table appears here, in files and in ``diff``
without an edit.

Every other module of the export layer imports its layout from here, and
this module imports none of them.
"""

from __future__ import annotations

import numpy as np

from fasthost import _core
from fasthost.hresult import CALL_ORDER, RESULT_ORDER

__all__ = [
    "HIST_ROW_DTYPE",
    "KINDS",
    "PRECISIONS",
    "RESULT_FIELDS",
    "TARGET_COUNTERS",
    "TARGET_DTYPE",
    "THREAD_COUNTERS",
    "THREAD_DTYPE",
    "THREAD_TARGET_DTYPE",
    "bucket_rows",
    "sum_rows",
    "target_dtype",
]

PRECISIONS = range(_core.CONFIG_LIMITS["precision"][0], _core.CONFIG_LIMITS["precision"][1] + 1)
"""The histogram precisions (sub-bucket bits) the core records at."""

HIST_KINDS = _core.HIST_KINDS
"""The core's histogram kinds, as hist_rows["kind"] holds them."""
INCLUSIVE = _core.HIST_KINDS["inclusive"]
NESTED_INCLUSIVE = _core.HIST_KINDS["nested_inclusive"]
NESTED_EXCLUSIVE = _core.HIST_KINDS["nested_exclusive"]
CALLBACK = _core.HIST_KINDS["callback"]
KINDS = ("inclusive", "exclusive", "callback")
"""The histograms a snapshot offers (``Snapshot.histogram(kind)``)."""

CALL_INDEX = {name: i for i, name in enumerate(CALL_ORDER)}
RESULT_INDEX = {hr: i for i, hr in enumerate(RESULT_ORDER)}
RESULT_FIELDS = ("ok", "clr_not_available", "timeout", "not_owner", "abandoned", "failed", "out_of_memory")
"""The result columns of THREAD_DTYPE, in RESULT_ORDER."""
if not len(CALL_ORDER) == _core.CALLS or not len(RESULT_FIELDS) == len(RESULT_ORDER) == _core.RESULTS:
    raise ImportError("fasthost._core does not match fasthost.hresult: reinstall fasthost")


def _column(ctype: str) -> np.dtype:
    return np.dtype(ctype)


# The core's thread record, as a snapshot shows it: the identity and the
# per-call and per-result totals first, then the record's columns; the
# core's bookkeeping column "folded" becomes part of the name, and
# "heap_bytes" is shown as "memory_bytes".
THREAD_SHOWN_AS = {"heap_bytes": "memory_bytes"}
_THREAD_NOT_SHOWN = ("tid", "alive", "folded")
_THREAD_RECORD = [
    (THREAD_SHOWN_AS.get(name, name), ctype, role)
    for name, ctype, role in _core.SCHEMA["thread"]
    if name not in _THREAD_NOT_SHOWN
]

# The call columns in the order files have always held them (not CALL_ORDER,
# the order of ``results``' second axis): the order is part of the format.
CALL_COLUMNS = ("leave", "enter", "reverse_enter", "reverse_leave")
if sorted(CALL_COLUMNS) != sorted(CALL_ORDER):
    raise ImportError("fasthost.hresult.CALL_ORDER names calls THREAD_DTYPE lacks: reinstall fasthost")

THREAD_DTYPE = np.dtype(
    [("pid", np.uint32), ("tid", np.uint64), ("name", "U32"), ("alive", np.bool_)]
    + [(call, np.uint64) for call in CALL_COLUMNS]
    + [(result, np.uint64) for result in RESULT_FIELDS]
    + [(name, _column(ctype)) for name, ctype, _ in _THREAD_RECORD]
)
"""One row per thread. ``pid`` is the process that recorded it (threads of
several processes meet in a merged snapshot). Call columns (``leave`` ...) count every call of that
kind made while recording, whatever its result; result columns (``ok`` ...
``out_of_memory``) count results of all kinds, and ``abandoned`` includes
``exit_abandoned``, the frames still open when the thread ended.
``callback_min_ns`` is 2**64 - 1 while ``callback_calls`` is 0."""

THREAD_COUNTERS = (*CALL_ORDER, *RESULT_FIELDS, *(name for name, _, role in _THREAD_RECORD if role == "counter"))
"""THREAD_DTYPE columns that count things: ``diff`` subtracts them; the
others are identity or levels, taken from the later snapshot."""

THREAD_TARGET_DTYPE = np.dtype(
    [
        (name, np.int64 if name == "thread" else np.bool_ if name == "overflow" else _column(ctype))
        for name, ctype, _ in _core.SCHEMA["target"]
    ]
)
"""One row per (thread, target) pair; ``thread`` indexes ``threads``. The
``overflow`` row of a thread (target 0) folds its targets past
``max_targets``."""

TARGET_COUNTERS = tuple(name for name, _, role in _core.SCHEMA["target"] if role == "counter")
"""THREAD_TARGET_DTYPE columns that count things (summed over threads,
subtracted by ``diff``)."""

HIST_ROW_DTYPE = np.dtype([(name, _column(ctype)) for name, ctype, _ in _core.SCHEMA["row"]])
"""Which histogram a row of ``hist_counts`` belongs to: ``thread`` indexes
``threads``, ``target`` indexes ``thread_targets`` (-1 for callbacks),
``kind`` is one of the core's histogram kinds, ``row`` is the power-of-two
row, so the row's buckets are ``row * 2**precision ...``."""


def target_dtype(symbol_width: int) -> np.dtype:
    """The dtype of ``Snapshot.targets``, symbols ``symbol_width`` wide."""
    fields: list[tuple[str, object]] = [("target", np.uint64), ("symbol", f"U{max(symbol_width, 1)}")]
    for name, ctype, role in _core.SCHEMA["target"]:
        if role != "key":
            fields.append((name, _column(ctype)))
    return np.dtype([*fields, ("threads", np.uint32), ("overflow", np.bool_)])


TARGET_DTYPE = target_dtype(64)
"""One row per target over all threads (the ``symbol`` width follows the
longest name). The overflow row (``overflow`` True, target 0) folds every
thread's targets past ``max_targets``."""


def bucket_rows(precision: int) -> int:
    """The power-of-two rows of a histogram at ``precision``."""
    return int(_core.bucket_rows(precision))


def sum_rows(hist_rows: np.ndarray, hist_counts: np.ndarray, precision: int, mask: np.ndarray) -> np.ndarray:
    """The dense histogram (all buckets at ``precision``) that the rows
    selected by ``mask`` add up to."""
    dense = np.zeros((bucket_rows(precision), 1 << precision), dtype=np.uint64)
    np.add.at(dense, hist_rows["row"][mask].astype(np.intp), hist_counts[mask])
    return dense.reshape(-1)
