"""Combining snapshots: ``diff`` (an interval of one session) and ``merge``
(several sessions or processes side by side). Both return the parts of a
new snapshot (``Snapshot``'s keyword arguments); what each column does
comes from its role in the core's tables (``fasthost.export.schema``)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost.export import callsites as _callsites
from fasthost.export.histogram import Histogram
from fasthost.export.schema import CALLBACK, INCLUSIVE, TARGET_COUNTERS, THREAD_COUNTERS, sum_rows

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["diff", "merge"]


def _thread_keys(threads: np.ndarray) -> list[tuple[int, int]]:
    """(tid, n): n tells apart threads of one session that had the same OS
    id (an id reused after a thread ended). The core lists the newest
    thread first, so counting from the end keeps n stable over time."""
    seen: Counter[int] = Counter()
    keys: list[tuple[int, int]] = [(0, 0)] * len(threads)
    for i in range(len(threads) - 1, -1, -1):
        tid = int(threads["tid"][i])
        keys[i] = (tid, seen[tid])
        seen[tid] += 1
    return keys


# The key of the row of threads folded after the session kept its share of
# ended threads (the core's `ended` state: no OS thread has id 0).
_ENDED = (0, 0)


def _group(keys: list[Any]) -> dict[Any, list[int]]:
    """Key -> the indexes that have it (several once ended threads fold)."""
    at: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        at.setdefault(key, []).append(i)
    return at


def diff(later: Snapshot, earlier: Snapshot) -> dict[str, Any]:
    """The parts of the snapshot of what happened between ``earlier`` and
    ``later`` (see :meth:`Snapshot.diff`)."""
    session = later.meta.get("session")
    if session is None or session != earlier.meta.get("session"):
        raise ValueError(
            f"can only diff two snapshots of one session (got sessions {earlier.meta.get('session')} "
            f"and {session}); a start() or reset() in between begins a new one"
        )
    if later.precision != earlier.precision:
        raise ValueError(f"snapshots of precision {earlier.precision} and {later.precision} cannot be diffed")

    later_keys, earlier_keys = _thread_keys(later.threads), _thread_keys(earlier.threads)
    missing = set(earlier_keys) - set(later_keys)
    if missing and _ENDED in later_keys:
        # Threads that ended in between, past the ended threads the session
        # keeps, were folded into the later snapshot's ended-threads row:
        # fold their earlier rows into the earlier one's alike.
        earlier_keys = [_ENDED if key in missing else key for key in earlier_keys]
        missing.clear()
    if missing:
        raise ValueError(f"the later snapshot lacks threads of the earlier one (tids {sorted(t for t, _ in missing)})")
    earlier_at = _group(earlier_keys)

    threads = later.threads.copy()
    results = later.results.astype(np.int64)
    for i, key in enumerate(later_keys):
        js = earlier_at.get(key)
        if js is None:
            continue
        for name in THREAD_COUNTERS:
            threads[name][i] = _minus(threads[name][i], earlier.threads[name][js].sum(), name)
        results[i] -= earlier.results[js].astype(np.int64).sum(axis=0)
    if (results < 0).any():
        raise ValueError("the 'earlier' snapshot has more calls than the later one: pass them the other way round")

    # Targets: by (thread, address, overflow).
    def pair_key(snap: Snapshot, keys: list[tuple[int, int]], i: int) -> tuple[Any, ...]:
        row = snap.thread_targets[i]
        return keys[int(row["thread"])], int(row["target"]), bool(row["overflow"])

    earlier_pairs = _group([pair_key(earlier, earlier_keys, i) for i in range(len(earlier.thread_targets))])
    pairs = later.thread_targets.copy()
    had_calls = np.zeros(len(pairs), dtype=bool)
    for i in range(len(pairs)):
        js = earlier_pairs.get(pair_key(later, later_keys, i))
        if js is None:
            continue
        before = earlier.thread_targets[js]
        had_calls[i] = before["calls"].sum() > 0
        for name in TARGET_COUNTERS:
            pairs[name][i] = _minus(pairs[name][i], before[name].sum(), name)

    # Histogram rows: by (thread, pair or callback, kind, row).
    def row_key(snap: Snapshot, keys: list[tuple[int, int]], i: int) -> tuple[Any, ...]:
        row = snap.hist_rows[i]
        target = int(row["target"])
        pair = None if target < 0 else pair_key(snap, keys, target)
        return keys[int(row["thread"])], pair, int(row["kind"]), int(row["row"])

    earlier_rows = _group([row_key(earlier, earlier_keys, i) for i in range(len(earlier.hist_rows))])
    counts = later.hist_counts.copy()
    for i in range(len(counts)):
        js = earlier_rows.get(row_key(later, later_keys, i))
        if js is not None:
            before = earlier.hist_counts[js].sum(axis=0)
            if (before > counts[i]).any():
                raise ValueError("the 'earlier' snapshot has more samples than the later one")
            counts[i] -= before

    # Keep what the interval touched: threads that made calls, pairs with
    # calls, rows with samples; then renumber the references.
    keep_threads = results.sum(axis=(1, 2)) > 0
    keep_pairs = (pairs["calls"] > 0) & keep_threads[pairs["thread"]]
    keep_rows = counts.any(axis=1) & keep_threads[later.hist_rows["thread"]]
    of_pair = later.hist_rows["target"] >= 0  # callback rows (-1) belong to no pair
    keep_rows[of_pair] &= keep_pairs[later.hist_rows["target"][of_pair]]
    thread_index = np.cumsum(keep_threads) - 1
    pair_index = np.cumsum(keep_pairs) - 1

    hist_rows = later.hist_rows[keep_rows].copy()
    hist_counts = counts[keep_rows]
    is_pair = hist_rows["target"] >= 0
    hist_rows["target"][is_pair] = pair_index[hist_rows["target"][is_pair]]
    hist_rows["thread"] = thread_index[hist_rows["thread"]]
    pairs_kept = pairs[keep_pairs].copy()
    pairs_kept["thread"] = thread_index[pairs_kept["thread"]]
    threads_kept = threads[keep_threads].copy()
    earlier_callbacks = {key: int(earlier.threads["callback_calls"][js].sum()) for key, js in earlier_at.items()}
    callbacks_before = np.array([earlier_callbacks.get(k, 0) > 0 for k in later_keys], dtype=bool)[keep_threads]

    callsites, callsite_counts = _callsites.combine(
        [(later.callsites, later.callsite_counts), (earlier.callsites, earlier.callsite_counts)], sign=[1, -1]
    )
    parts = {
        "callsites": callsites,
        "callsite_counts": callsite_counts,
        "threads": threads_kept,
        "results": results[keep_threads].astype(np.uint64),
        "thread_targets": pairs_kept,
        "hist_rows": hist_rows,
        "hist_counts": hist_counts,
        "symbols": later.symbols,
        "meta": {
            **later.meta,
            "interval_ns": int(later.meta.get("session_ns", 0)) - int(earlier.meta.get("session_ns", 0)),
            "callsites_dropped": max(
                int(later.meta.get("callsites_dropped", 0)) - int(earlier.meta.get("callsites_dropped", 0)), 0
            ),
        },
    }
    _bound_extremes(parts, later.precision, had_calls[keep_pairs], callbacks_before)
    return parts


def _minus(later: Any, earlier: Any, name: str) -> Any:
    if earlier > later:
        raise ValueError(
            f"the 'earlier' snapshot has a larger {name} ({earlier} > {later}): pass them the other way round"
        )
    return later - earlier


def _bound_extremes(
    parts: dict[str, Any], precision: int, pair_had_calls: np.ndarray, thread_had_callbacks: np.ndarray
) -> None:
    """Min/max of an interval are exact only for what began in it; elsewhere
    the interval's own histogram bounds them."""
    threads, pairs, rows = parts["threads"], parts["thread_targets"], parts["hist_rows"]

    def bounds(mask: np.ndarray) -> Histogram:
        return Histogram._from_counts(precision, sum_rows(rows, parts["hist_counts"], precision, mask), None, None, 0)

    for i in np.flatnonzero(pair_had_calls):
        hist = bounds((rows["kind"] == INCLUSIVE) & (rows["target"] == i))
        pairs["min_ns"][i] = hist.min
        pairs["max_ns"][i] = hist.max
    for i in np.flatnonzero(thread_had_callbacks):
        if threads["callback_calls"][i] == 0:
            threads["callback_min_ns"][i] = 2**64 - 1
            threads["callback_max_ns"][i] = 0
            continue
        hist = bounds((rows["kind"] == CALLBACK) & (rows["thread"] == i))
        threads["callback_min_ns"][i] = hist.min
        threads["callback_max_ns"][i] = hist.max


def merge(snapshots: list[Snapshot]) -> dict[str, Any]:
    """The parts of one snapshot holding every thread of ``snapshots`` (see
    :func:`fasthost.merge`)."""
    if not snapshots:
        raise ValueError("merge() needs at least one snapshot")
    precisions = {s.precision for s in snapshots}
    if len(precisions) > 1:
        raise ValueError(f"cannot merge snapshots of different precisions {sorted(precisions)}")

    thread_offsets = np.cumsum([0] + [len(s.threads) for s in snapshots])
    pair_offsets = np.cumsum([0] + [len(s.thread_targets) for s in snapshots])
    pairs, rows = [], []
    for snap, thread_offset, pair_offset in zip(snapshots, thread_offsets, pair_offsets):
        p = snap.thread_targets.copy()
        p["thread"] += thread_offset
        pairs.append(p)
        r = snap.hist_rows.copy()
        r["thread"] += thread_offset
        r["target"][r["target"] >= 0] += pair_offset
        rows.append(r)

    symbols: dict[int, str] = {}
    for snap in snapshots:
        symbols.update(snap.symbols)
    configs = [s.config for s in snapshots]
    sessions = [s.meta.get("session") for s in snapshots]
    meta = {
        "precision": precisions.pop(),
        "config": configs[0] if all(c == configs[0] for c in configs) else None,
        "session": sessions[0] if all(s == sessions[0] for s in sessions) and len(snapshots) == 1 else None,
        "running": any(s.meta.get("running", False) for s in snapshots),
        "poisoned": any(s.meta.get("poisoned", False) for s in snapshots),
        "session_ns": max(int(s.meta.get("session_ns", 0)) for s in snapshots),
        "unregistered_out_of_memory": sum(int(s.meta.get("unregistered_out_of_memory", 0)) for s in snapshots),
        "merged": len(snapshots),
        "callsites_dropped": sum(int(s.meta.get("callsites_dropped", 0)) for s in snapshots),
    }
    callsites, callsite_counts = _callsites.combine([(s.callsites, s.callsite_counts) for s in snapshots])
    return {
        "callsites": callsites,
        "callsite_counts": callsite_counts,
        "threads": np.concatenate([s.threads for s in snapshots]),
        "results": np.concatenate([s.results for s in snapshots]),
        "thread_targets": np.concatenate(pairs),
        "hist_rows": np.concatenate(rows),
        "hist_counts": np.concatenate([s.hist_counts for s in snapshots]),
        "symbols": symbols,
        "meta": meta,
    }
