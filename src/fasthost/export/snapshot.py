"""Snapshot: an immutable picture of every thread's transitions.

A snapshot is a handful of flat numpy arrays (the same ones ``save()``
writes): ``threads``, ``results``, ``thread_targets``, and the histogram
rows the core keeps (``hist_rows`` says which histogram each row of
``hist_counts`` belongs to). Everything else (``targets``, ``histogram()``,
``totals``, reports) is computed from them on demand.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Union, cast

import numpy as np

from fasthost import _core
from fasthost.export import callsites as _callsites
from fasthost.export import combine, report, storage, symbols
from fasthost.export.histogram import Histogram
from fasthost.export.schema import (
    CALL_INDEX,
    CALLBACK,
    HIST_ROW_DTYPE,
    INCLUSIVE,
    KINDS,
    NESTED_EXCLUSIVE,
    NESTED_INCLUSIVE,
    RESULT_FIELDS,
    RESULT_INDEX,
    TARGET_DTYPE,
    THREAD_DTYPE,
    THREAD_SHOWN_AS,
    THREAD_TARGET_DTYPE,
    sum_rows,
    target_dtype,
)
from fasthost.hresult import CALL_ORDER, RESULT_ORDER, HResult

__all__ = [
    "HIST_ROW_DTYPE",
    "KINDS",
    "TARGET_DTYPE",
    "THREAD_DTYPE",
    "THREAD_TARGET_DTYPE",
    "Snapshot",
    "load",
    "merge",
    "snapshot",
]

_UINT64_MAX = 2**64 - 1

F = TypeVar("F", bound=Callable[..., Any])


def _unrecorded(function: F) -> F:
    """fasthost's own work in ``function`` (a snapshot, a report) is not
    recorded as the program's by a capture that is on."""

    @functools.wraps(function)
    def unrecorded(*args: Any, **kwargs: Any) -> Any:
        outer = _core._pause()
        try:
            return function(*args, **kwargs)
        finally:
            _core._resume(outer)

    return cast(F, unrecorded)


_THREAD_COLUMNS = frozenset(THREAD_DTYPE.fields or ())


class _ProcessId:
    """64 random bits naming this process for its lifetime (a new value in
    a forked child): with the pid and the core's epoch it names a session
    uniquely, so combining files can tell two sessions apart even when a
    pid was reused, and the same session saved twice from a copy."""

    value = os.urandom(8).hex()

    @classmethod
    def renew(cls) -> None:
        cls.value = os.urandom(8).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ProcessId.renew)
# How the columns of a (thread, target) pair add up over threads, by role.
_OVER_THREADS = {"counter": np.add, "min": np.minimum, "max": np.maximum}

ThreadKey = Union[int, str]
TargetKey = Union[int, str]


# The name of the row a session folds its ended threads into, past the ones
# it keeps: written by the snapshot, read back to count the threads.
_ENDED_ROW_NAME = re.compile(r"<([0-9]+) ended threads>")


def _ended_row_name(count: int) -> str:
    return f"<{count} ended threads>"


def threads_represented(threads: np.ndarray) -> int:
    """How many threads the rows of ``threads`` stand for: one each, but
    the row into which a session folds its ended threads past the ones it
    keeps (tid 0, named ``<N ended threads>`` when the snapshot is taken)
    stands for N."""
    count = 0
    for tid, name in zip(threads["tid"].tolist(), threads["name"].tolist()):
        match = _ENDED_ROW_NAME.fullmatch(str(name)) if tid == 0 else None
        count += int(match.group(1)) if match else 1
    return count


class Snapshot:
    """All threads' counters and histograms at one moment: live threads,
    and threads that ended since the last ``reset()``/``start()``.

    Attributes (read-only numpy arrays): ``threads`` (``THREAD_DTYPE``),
    ``thread_targets`` (``THREAD_TARGET_DTYPE``), ``targets`` (per target
    over all threads, ``TARGET_DTYPE``, busiest first), ``results`` (uint64,
    threads x 4 calls x 7 results, in the CLR's IDL call order and
    ``RESULT_ORDER``), ``hist_rows``/``hist_counts`` (the raw histogram
    rows). Also ``precision``, ``config`` and ``meta``. All durations in ns.

    A thread that is recording while the snapshot is taken is read counter
    by counter, not atomically across counters; threads that are quiet or
    have ended are exact.
    """

    def __init__(
        self,
        *,
        threads: np.ndarray,
        results: np.ndarray,
        thread_targets: np.ndarray,
        hist_rows: np.ndarray,
        hist_counts: np.ndarray,
        symbols: dict[int, str],
        meta: dict[str, Any],
        callsites: np.ndarray | None = None,
        callsite_counts: np.ndarray | None = None,
    ):
        if callsites is None or callsite_counts is None:
            callsites, callsite_counts = _callsites.empty()
        self.callsites = callsites
        """Who called each target: one row per (file, line, function,
        target), ``CALLSITE_DTYPE``, longest total first (empty without a
        capture that records call sites)."""
        self.callsite_counts = callsite_counts
        self.threads = threads
        self.results = results
        self.thread_targets = thread_targets
        self.hist_rows = hist_rows
        self.hist_counts = hist_counts
        self.meta = meta
        self.precision: int = int(meta["precision"])
        self.config: dict[str, Any] | None = meta.get("config")
        self._symbols = dict(symbols)
        for array in (threads, results, thread_targets, hist_rows, hist_counts, callsites, callsite_counts):
            array.flags.writeable = False
        self._targets: np.ndarray | None = None

    # ---- building -------------------------------------------------------
    @classmethod
    def _from_core(cls, raw: dict[str, Any]) -> Snapshot:
        fields = {name: i for i, name in enumerate(_core.THREAD_FIELDS)}
        values, results = raw["threads"], raw["results"]
        threads = np.zeros(len(values), dtype=THREAD_DTYPE)
        threads["pid"] = os.getpid()
        for name, i in fields.items():
            shown = THREAD_SHOWN_AS.get(name, name)
            if shown in _THREAD_COLUMNS:
                threads[shown] = values[:, i]
        live_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        # Threads past the number kept per session are folded into one row.
        folded = values[:, fields["folded"]]
        os_names = [
            _ended_row_name(int(n)) if n else name.decode("utf-8", "replace") for name, n in zip(raw["names"], folded)
        ]
        threads["name"] = [
            live_names.get(int(tid), os_name) if alive else os_name
            for tid, os_name, alive in zip(threads["tid"], os_names, threads["alive"])
        ]
        for call in CALL_ORDER:
            threads[call] = results[:, CALL_INDEX[call], :].sum(axis=1)
        by_result = results.sum(axis=1)
        for i, name in enumerate(RESULT_FIELDS):
            threads[name] = by_result[:, i]
        threads["abandoned"] += threads["exit_abandoned"]

        thread_targets = np.zeros(len(raw["targets"]), dtype=THREAD_TARGET_DTYPE)
        for i, name in enumerate(_core.TARGET_FIELDS):
            thread_targets[name] = raw["targets"][:, i]

        hist_rows = np.zeros(len(raw["rows"]), dtype=HIST_ROW_DTYPE)
        for i, name in enumerate(_core.ROW_FIELDS):
            hist_rows[name] = raw["rows"][:, i]

        addresses = np.unique(thread_targets["target"][~thread_targets["overflow"]])
        sites, site_counts = _callsites.build(raw["sites"], raw["site_rows"], raw["site_counts"])
        meta = {
            "precision": int(raw["precision"]),
            "config": raw["config"],
            "session": {"pid": os.getpid(), "epoch": int(raw["session"]), "id": _ProcessId.value},
            "running": raw["running"],
            "poisoned": raw["poisoned"],
            "session_ns": int(raw["session_ns"]),
            "unregistered_out_of_memory": int(raw["unregistered_out_of_memory"]),
            "callsites_dropped": int(raw["sites_dropped"]),
        }
        return cls(
            threads=threads,
            results=np.ascontiguousarray(results, dtype=np.uint64),
            thread_targets=thread_targets,
            hist_rows=hist_rows,
            hist_counts=np.ascontiguousarray(raw["counts"], dtype=np.uint64),
            callsites=sites,
            callsite_counts=site_counts,
            symbols=symbols.resolve_all(int(a) for a in addresses),
            meta=meta,
        )

    # ---- per-target view ------------------------------------------------
    def symbol(self, target: int) -> str:
        """The name of a target address in this snapshot (``libm.so.6!cos``,
        a registered label, or hex when nothing names it)."""
        return self._symbols.get(int(target), f"0x{int(target):x}")

    @property
    def symbols(self) -> dict[int, str]:
        """Target address -> name, as resolved when the snapshot was taken."""
        return dict(self._symbols)

    @property
    def targets(self) -> np.ndarray:
        """One row per target over all threads (``TARGET_DTYPE``), busiest
        (largest ``total_ns``) first; the overflow row, if any, last."""
        if self._targets is None:
            self._targets = self._aggregate_targets()
            self._targets.flags.writeable = False
        return self._targets

    def _aggregate_targets(self) -> np.ndarray:
        tt = self.thread_targets
        order = np.lexsort((tt["target"], tt["overflow"]))
        keys = np.stack([tt["overflow"][order].astype(np.uint64), tt["target"][order]], axis=1)
        if len(order):
            starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
        else:
            starts = np.zeros(0, dtype=np.intp)
        sorted_tt = tt[order]
        names = [
            "overflow" if over else self.symbol(int(t))
            for t, over in zip(sorted_tt["target"][starts], sorted_tt["overflow"][starts])
        ]
        out = np.zeros(len(starts), dtype=target_dtype(max((len(n) for n in names), default=1)))
        if len(starts):
            out["target"] = sorted_tt["target"][starts]
            out["overflow"] = sorted_tt["overflow"][starts]
            out["symbol"] = names
            for name, _, role in _core.SCHEMA["target"]:
                if role in _OVER_THREADS:
                    out[name] = _OVER_THREADS[role].reduceat(sorted_tt[name], starts)
            out["threads"] = np.diff(np.r_[starts, len(order)])
        busiest = np.lexsort((out["target"], -out["total_ns"].astype(np.float64), out["overflow"]))
        return out[busiest]

    # ---- histograms -----------------------------------------------------
    def histogram(self, kind: str = "inclusive", target: TargetKey | None = None, thread: ThreadKey | None = None):
        """The latency histogram (ns) of ``kind`` over all threads and targets,
        or only ``target`` (an address, or a symbol as in ``targets``) and/or
        ``thread`` (an OS thread id, or a thread name).

        kind: "inclusive" (unmanaged calls, leave -> enter), "exclusive"
        (the same minus the callbacks made directly inside them), or
        "callback" (managed frames; per thread, so ``target`` must be None).
        Raises ``ValueError`` for an unknown kind, target or thread.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        thread_mask = self._thread_mask(thread)
        if kind == "callback":
            if target is not None:
                raise ValueError("callback histograms are per thread: pass thread=, not target=")
            counts = self._sum_rows(self._row_mask(CALLBACK, thread_mask, None))
            rows = self.threads[thread_mask & (self.threads["callback_calls"] > 0)]
            low, high, total = _extremes(rows["callback_min_ns"], rows["callback_max_ns"], rows["callback_total_ns"])
            return Histogram._from_counts(self.precision, counts, low, high, total)

        pair_mask = thread_mask[self.thread_targets["thread"]] & self._target_mask(target)
        counts = self._sum_rows(self._row_mask(INCLUSIVE, thread_mask, pair_mask))
        pairs = self.thread_targets[pair_mask & (self.thread_targets["calls"] > 0)]
        if kind == "inclusive":
            low, high, total = _extremes(pairs["min_ns"], pairs["max_ns"], pairs["total_ns"])
            return Histogram._from_counts(self.precision, counts, low, high, total)
        # exclusive = INCLUSIVE - NESTED_INCLUSIVE + NESTED_EXCLUSIVE (see core/fh_protocol.h)
        nested_inclusive = self._sum_rows(self._row_mask(NESTED_INCLUSIVE, thread_mask, pair_mask))
        nested_exclusive = self._sum_rows(self._row_mask(NESTED_EXCLUSIVE, thread_mask, pair_mask))
        counts = counts - np.minimum(counts, nested_inclusive) + nested_exclusive
        # The exact extremes of exclusive durations are not kept: the
        # buckets bound them, and no exclusive duration exceeds the largest
        # inclusive one.
        _, high, total = _extremes(pairs["min_ns"], pairs["max_ns"], pairs["exclusive_ns"])
        bounded = Histogram._from_counts(self.precision, counts, None, None, total)
        if bounded._max is not None and high is not None:
            bounded._max = min(bounded._max, high)
        return bounded

    def _thread_mask(self, thread: ThreadKey | None) -> np.ndarray:
        if thread is None:
            return np.ones(len(self.threads), dtype=bool)
        if isinstance(thread, str):
            mask = self.threads["name"] == thread
        elif isinstance(thread, (int, np.integer)) and not isinstance(thread, bool):
            mask = self.threads["tid"] == np.uint64(thread) if 0 <= thread < 2**64 else np.zeros(0, bool)
        else:
            raise TypeError(f"thread must be an OS thread id (int) or a thread name (str), not {type(thread).__name__}")
        if not mask.any():
            raise ValueError(f"no thread {thread!r} in this snapshot")
        return mask

    def _target_mask(self, target: TargetKey | None) -> np.ndarray:
        tt = self.thread_targets
        if target is None:
            return np.ones(len(tt), dtype=bool)
        if isinstance(target, str):
            if target == "overflow":
                mask = tt["overflow"].copy()
            else:
                addresses = [a for a, name in self._symbols.items() if name == target]
                mask = np.isin(tt["target"], np.array(addresses, dtype=np.uint64)) & ~tt["overflow"]
        elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if not 0 <= target < 2**64:
                raise ValueError(f"no target {target!r} in this snapshot")
            mask = (tt["target"] == np.uint64(target)) & ~tt["overflow"]
        else:
            raise TypeError(f"target must be an address (int) or a symbol (str), not {type(target).__name__}")
        if not mask.any():
            raise ValueError(f"no target {target!r} in this snapshot")
        return mask

    def _row_mask(self, kind: int, thread_mask: np.ndarray, pair_mask: np.ndarray | None) -> np.ndarray:
        rows = self.hist_rows
        mask = (rows["kind"] == kind) & thread_mask[rows["thread"]]
        if pair_mask is not None:
            # Callback rows (target -1) belong to no pair; index only real ones.
            is_pair = rows["target"] >= 0
            mask &= is_pair
            mask[is_pair] &= pair_mask[rows["target"][is_pair]]
        return mask

    def _sum_rows(self, mask: np.ndarray) -> np.ndarray:
        return sum_rows(self.hist_rows, self.hist_counts, self.precision, mask)

    # ---- summaries ------------------------------------------------------
    def calls(self, kind: str, result: HResult | None = None) -> int:
        """Calls of ``kind`` ("leave", "enter", "reverse_leave",
        "reverse_enter") over all threads, optionally only those that
        returned ``result``. Raises ``ValueError`` for an unknown kind."""
        if kind not in CALL_INDEX:
            raise ValueError(f"kind must be one of {', '.join(CALL_ORDER)}, got {kind!r}")
        per_result = self.results[:, CALL_INDEX[kind], :].sum(axis=0)
        if result is None:
            return int(per_result.sum())
        return int(per_result[RESULT_INDEX[HResult(result)]])

    @property
    def totals(self) -> dict[str, Any]:
        """Whole-snapshot sums: ``calls`` by kind, ``results`` by HRESULT name
        (abandoned includes frames open at thread exit), ``transitions``
        (opening calls: leave + reverse_enter), ``errors`` (non-S_OK
        results), ``threads`` (the threads its rows stand for: the row of
        ended threads folded together counts as the N it holds, which in a
        diff is N over the whole session, so at most that many made the
        interval's calls), ``processes`` (that recorded: the pids of
        its threads and of its sessions), ``targets``, and ``unmanaged_ns`` /
        ``exclusive_ns`` / ``callback_ns`` / ``callback_exclusive_ns`` totals
        in ns, and ``recorded_ns`` = ``exclusive_ns + callback_exclusive_ns``:
        the time spent in recorded frames, each nanosecond counted once (the
        inclusive sums count a nested call at every level)."""
        per_call = self.results.sum(axis=(0, 2))
        per_result = self.results.sum(axis=(0, 1))
        results = {hr.name: int(per_result[i]) for i, hr in enumerate(RESULT_ORDER)}
        results[HResult.HOST_E_ABANDONED.name] += int(self.threads["exit_abandoned"].sum())
        results[HResult.E_OUTOFMEMORY.name] += int(self.meta.get("unregistered_out_of_memory", 0))
        calls = {name: int(per_call[i]) for i, name in enumerate(CALL_ORDER)}
        exclusive = int(self.thread_targets["exclusive_ns"].sum(dtype=np.uint64))
        callback_exclusive = int(self.threads["callback_exclusive_ns"].sum(dtype=np.uint64))
        return {
            "calls": calls,
            "results": results,
            "transitions": calls["leave"] + calls["reverse_enter"],
            "errors": sum(v for k, v in results.items() if k != HResult.S_OK.name),
            "threads": threads_represented(self.threads),
            "processes": len(self.pids),
            "targets": int((~self.targets["overflow"]).sum()),
            "unmanaged_ns": int(self.thread_targets["total_ns"].sum(dtype=np.uint64)),
            "exclusive_ns": exclusive,
            "callback_ns": int(self.threads["callback_total_ns"].sum(dtype=np.uint64)),
            "callback_exclusive_ns": callback_exclusive,
            "recorded_ns": exclusive + callback_exclusive,
            "dropped_samples": int(self.threads["dropped_samples"].sum()),
            "callsites_dropped": int(self.meta.get("callsites_dropped", 0)),
            "poisoned": bool(self.meta.get("poisoned", False)),
        }

    @property
    def pids(self) -> list[int]:
        """The processes this snapshot holds recordings of, in pid order:
        those of its threads, and those whose session recorded no thread."""
        pids = {int(p) for p in np.unique(self.threads["pid"])}
        pids.update(int(source["pid"]) for source in combine.sources(self))
        return sorted(pids)

    # ---- combining ------------------------------------------------------
    @_unrecorded
    def diff(self, earlier: Snapshot) -> Snapshot:
        """What happened between ``earlier`` and this snapshot (the later
        one) of the same session: counters and histograms subtracted; gauges
        (``depth``, ``alive``, ``memory_bytes``) as they are now.

        Exact minima and maxima of the interval are not known where a
        target (or a thread's callbacks) had calls before it: those are
        bounded by the histogram's buckets. Raises ``ValueError`` when the
        snapshots come from different sessions or the earlier one is not
        earlier, ``TypeError`` for a non-Snapshot."""
        return Snapshot(**combine.diff(self, _checked(earlier)))

    def __sub__(self, earlier: Snapshot) -> Snapshot:
        return self.diff(earlier)

    # ---- output ---------------------------------------------------------
    @_unrecorded
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the snapshot to ``path`` as ``.npz`` (read it back with
        ``fasthost.load``). Raises ``OSError`` when the file cannot be
        written."""
        storage.save(self, path)

    @_unrecorded
    def to_dict(self, top: int = 20) -> dict[str, Any]:
        """A JSON-serialisable summary: totals, errors by HRESULT name,
        p50/p90/p99/p99.9/max (ns) per kind, and the ``top`` targets with
        their own percentiles."""
        return report.to_dict(self, top)

    @_unrecorded
    def report(self, top: int = 20) -> str:
        """A readable text report: totals, errors, the ``top`` targets
        (calls, total, mean, p50, p99, max, exclusive share) and a text
        rendering of the inclusive histogram."""
        return report.report(self, top)

    @_unrecorded
    def plot(self, path_or_ax: Any, top: int = 10) -> Any:
        """Draws the snapshot with matplotlib (durations in ns, shown in
        human units).

        ``path_or_ax``: a ``.png`` file path, to which four panels are
        written (the figure is returned): percentile curves of the ``top``
        targets by total time (at most 20, the rest one "other targets"
        row of the time panel) and of the callbacks (latency against
        ``1/(1-q)``, HdrHistogram's convention); where the recorded time
        went, per target (exclusive time inside inclusive time); and the
        histograms of unmanaged calls and of callbacks on log count axes.
        Or a matplotlib ``Axes``, on which only the unmanaged calls'
        histogram is drawn (the Axes is returned). Raises ``ValueError`` for
        a path not ending in .png or a ``top`` that is not an int >= 0,
        ``TypeError`` for anything else than a path or an Axes,
        ``ImportError`` naming the ``plot`` extra without matplotlib and
        ``OSError`` when the file cannot be written."""
        from fasthost.export.plot import plot

        return plot(self, path_or_ax, top)

    @_unrecorded
    def html(self, path: str | os.PathLike[str], top: int = 50) -> int:
        """Writes a self-contained HTML report to ``path`` (one file, no
        network): header figures, a sortable table of the ``top`` targets,
        each target's latency distribution (percentile curve and log-count
        histogram), callers and callbacks, and the threads with their
        errors by HRESULT. Returns the file's size in bytes. Raises
        ``ValueError`` for a bad ``top``, ``OSError`` when the file cannot
        be written."""
        from fasthost.export.html import write_html

        return write_html(self, path, top)

    # ---- comparison -----------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.meta == other.meta
            and self._symbols == other._symbols
            and all(
                np.array_equal(a, b)
                for a, b in (
                    (self.threads, other.threads),
                    (self.results, other.results),
                    (self.thread_targets, other.thread_targets),
                    (self.hist_rows, other.hist_rows),
                    (self.hist_counts, other.hist_counts),
                    (self.callsites, other.callsites),
                    (self.callsite_counts, other.callsite_counts),
                )
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        t = self.totals
        return (
            f"<fasthost.Snapshot threads={t['threads']} targets={t['targets']} "
            f"transitions={t['transitions']} errors={t['errors']}>"
        )


def _extremes(minima: np.ndarray, maxima: np.ndarray, totals: np.ndarray) -> tuple[int | None, int | None, int]:
    """(min, max, sum) over rows that had calls; None for no rows."""
    total = int(totals.sum(dtype=np.uint64)) if len(totals) else 0
    if not len(minima):
        return None, None, total
    return int(minima.min()), int(maxima.max()), total


@_unrecorded
def snapshot() -> Snapshot:
    """Takes a :class:`Snapshot` of the current (or last) session: every
    thread that made a call while recording since the last ``start()`` /
    ``reset()``, live or ended."""
    return Snapshot._from_core(_core._collect())


@_unrecorded
def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """One snapshot holding every thread of ``snapshots`` (e.g. from several
    processes or pytest-xdist workers): counts and histograms are exact sums.

    Raises ``ValueError`` for an empty list or differing precisions,
    ``TypeError`` for a non-Snapshot."""
    return Snapshot(**combine.merge([_checked(s) for s in snapshots]))


def load(path: str | os.PathLike[str]) -> Snapshot:
    """Reads a snapshot written by :meth:`Snapshot.save`.

    Raises ``FileNotFoundError``/``PermissionError``/``OSError`` when the
    file cannot be opened, and ``ValueError``, one line naming the file and
    saying what is wrong, for anything but a regular file (a FIFO, a
    directory, a device), and for a file that is truncated, damaged, not a
    fasthost snapshot, from a newer fasthost, inconsistent, or larger than a
    snapshot can be (1 GiB of arrays). What it reads and allocates is
    bounded by that limit and by the sizes the zip directory states, all
    checked before any member is inflated; every value of a loaded snapshot
    (indexes, histogram rows, meta) is one fasthost itself writes."""
    return Snapshot(**storage.read(path))


def _checked(snapshot: Any) -> Snapshot:
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"expected a fasthost.Snapshot, not {type(snapshot).__name__}")
    return snapshot
