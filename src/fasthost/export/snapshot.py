"""Snapshot: an immutable picture of every thread's transitions."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from fasthost import _core
from fasthost.hresult import CALL_ORDER, RESULT_ORDER, HResult

__all__ = ["TARGET_DTYPE", "THREAD_DTYPE", "Snapshot", "snapshot"]

_CALL = {name: i for i, name in enumerate(CALL_ORDER)}
_RESULT = {hr: i for i, hr in enumerate(RESULT_ORDER)}

THREAD_DTYPE = np.dtype(
    [
        ("tid", np.uint64),
        ("name", "U32"),
        ("alive", np.bool_),
        ("leave", np.uint64),
        ("enter", np.uint64),
        ("reverse_enter", np.uint64),
        ("reverse_leave", np.uint64),
        ("ok", np.uint64),
        ("clr_not_available", np.uint64),
        ("timeout", np.uint64),
        ("not_owner", np.uint64),
        ("abandoned", np.uint64),
        ("failed", np.uint64),
        ("out_of_memory", np.uint64),
        ("depth", np.uint32),
        ("max_depth", np.uint32),
        ("callback_calls", np.uint64),
        ("callback_total_ns", np.uint64),
        ("memory_bytes", np.uint64),
    ]
)
"""One row per thread. Call columns count every call of that kind made
while recording, whatever its result; result columns count non-S_OK results
of all kinds (``abandoned`` includes frames open when the thread ended)."""

TARGET_DTYPE = np.dtype(
    [
        ("thread", np.int64),
        ("target", np.uint64),
        ("calls", np.uint64),
        ("total_ns", np.uint64),
        ("exclusive_ns", np.uint64),
        ("min_ns", np.uint64),
        ("max_ns", np.uint64),
        ("timeouts", np.uint64),
        ("overflow", np.bool_),
    ]
)
"""One row per (thread, target) pair; ``thread`` indexes ``threads``. The
``overflow`` row of a thread folds the targets past ``max_targets``."""


def _thread_names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


class Snapshot:
    """All threads' counters at one moment (live threads, and threads that
    ended since the last ``reset()``/``start()``).

    Attributes: ``threads`` (structured array, ``THREAD_DTYPE``),
    ``thread_targets`` (structured array, ``TARGET_DTYPE``), ``results``
    (uint64 array, threads x 4 calls x 7 results, in IDL call order and
    ``RESULT_ORDER``), ``precision``, ``config``, ``totals``.

    A thread that is recording while the snapshot is taken is read counter
    by counter, not atomically across counters; threads that are quiet or
    have ended are exact.
    """

    def __init__(self, raw: dict[str, Any]):
        self._raw = raw
        self.precision: int = int(raw["precision"])
        self.config: dict[str, Any] | None = raw["config"]
        self.results: np.ndarray = raw["results"]
        self.threads: np.ndarray = self._build_threads(raw)
        self.thread_targets: np.ndarray = self._build_targets(raw)
        for array in (self.results, self.threads, self.thread_targets):
            array.flags.writeable = False

    @staticmethod
    def _build_threads(raw: dict[str, Any]) -> np.ndarray:
        fields = {name: i for i, name in enumerate(_core.THREAD_FIELDS)}
        values, results = raw["threads"], raw["results"]
        out = np.zeros(len(values), dtype=THREAD_DTYPE)
        out["tid"] = values[:, fields["tid"]]
        names = _thread_names()
        os_names = [n.decode("utf-8", "replace") for n in raw["names"]]
        out["name"] = [names.get(int(tid), os_name) for tid, os_name in zip(out["tid"], os_names)]
        out["alive"] = values[:, fields["alive"]] != 0
        for call in CALL_ORDER:
            out[call] = results[:, _CALL[call], :].sum(axis=1)
        by_result = results.sum(axis=1)
        out["ok"] = by_result[:, _RESULT[HResult.S_OK]]
        out["clr_not_available"] = by_result[:, _RESULT[HResult.HOST_E_CLRNOTAVAILABLE]]
        out["timeout"] = by_result[:, _RESULT[HResult.HOST_E_TIMEOUT]]
        out["not_owner"] = by_result[:, _RESULT[HResult.HOST_E_NOT_OWNER]]
        out["abandoned"] = by_result[:, _RESULT[HResult.HOST_E_ABANDONED]] + values[:, fields["exit_abandoned"]]
        out["failed"] = by_result[:, _RESULT[HResult.E_FAIL]]
        out["out_of_memory"] = by_result[:, _RESULT[HResult.E_OUTOFMEMORY]]
        out["depth"] = values[:, fields["depth"]]
        out["max_depth"] = values[:, fields["max_depth"]]
        out["callback_calls"] = values[:, fields["callback_calls"]]
        out["callback_total_ns"] = values[:, fields["callback_total_ns"]]
        out["memory_bytes"] = values[:, fields["heap_bytes"]]
        return out

    @staticmethod
    def _build_targets(raw: dict[str, Any]) -> np.ndarray:
        values = raw["targets"]
        out = np.zeros(len(values), dtype=TARGET_DTYPE)
        for i, name in enumerate(_core.TARGET_FIELDS):
            out[name] = values[:, i]
        return out

    def calls(self, kind: str, result: HResult | None = None) -> int:
        """Calls of ``kind`` ("leave", "enter", "reverse_leave",
        "reverse_enter") over all threads, optionally only those that
        returned ``result``. Raises ``ValueError`` for an unknown kind."""
        if kind not in _CALL:
            raise ValueError(f"kind must be one of {', '.join(CALL_ORDER)}, got {kind!r}")
        per_result = self.results[:, _CALL[kind], :].sum(axis=0)
        if result is None:
            return int(per_result.sum())
        return int(per_result[_RESULT[HResult(result)]])

    @property
    def totals(self) -> dict[str, Any]:
        """Whole-session sums: calls by kind, results by HRESULT name,
        ``transitions`` (opening calls: leave + reverse_enter), threads, and
        ``unmanaged_ns``/``exclusive_ns``/``callback_ns`` totals."""
        per_call = self.results.sum(axis=(0, 2))
        per_result = self.results.sum(axis=(0, 1))
        results = {hr.name: int(per_result[i]) for i, hr in enumerate(RESULT_ORDER)}
        results[HResult.HOST_E_ABANDONED.name] += int(self._raw["threads"][:, 4].sum())
        results[HResult.E_OUTOFMEMORY.name] += int(self._raw["unregistered_out_of_memory"])
        calls = {name: int(per_call[i]) for i, name in enumerate(CALL_ORDER)}
        return {
            "calls": calls,
            "results": results,
            "transitions": calls["leave"] + calls["reverse_enter"],
            "errors": sum(v for k, v in results.items() if k != HResult.S_OK.name),
            "threads": len(self.threads),
            "unmanaged_ns": int(self.thread_targets["total_ns"].sum()),
            "exclusive_ns": int(self.thread_targets["exclusive_ns"].sum()),
            "callback_ns": int(self.threads["callback_total_ns"].sum()),
            "poisoned": bool(self._raw["poisoned"]),
        }

    def __repr__(self) -> str:
        t = self.totals
        return f"<fasthost.Snapshot threads={t['threads']} transitions={t['transitions']} errors={t['errors']}>"


def snapshot() -> Snapshot:
    """Takes a :class:`Snapshot` of the current (or last) session."""
    return Snapshot(_core._collect())
