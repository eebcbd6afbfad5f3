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

__all__ = ["diff", "distinct", "merge", "sources"]


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
    remaps, symbols = _unify_targets(snapshots)
    pairs, rows, site_parts = [], [], []
    for snap, thread_offset, pair_offset, remap in zip(snapshots, thread_offsets, pair_offsets, remaps):
        p = snap.thread_targets.copy()
        p["thread"] += thread_offset
        named = ~p["overflow"]
        p["target"][named] = _remapped(p["target"][named], remap)
        pairs.append(p)
        r = snap.hist_rows.copy()
        r["thread"] += thread_offset
        r["target"][r["target"] >= 0] += pair_offset
        rows.append(r)
        sites = snap.callsites.copy()
        sites["target"] = _remapped(sites["target"], remap)
        site_parts.append((sites, snap.callsite_counts))

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
        "sources": [source for s in snapshots for source in sources(s)],
    }
    silent = sorted({pid for s in snapshots for pid in s.meta.get("children_without_data", ())})
    if silent:
        meta["children_without_data"] = silent
    callsites, callsite_counts = _callsites.combine(site_parts)
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


def _unify_targets(snapshots: list[Snapshot]) -> tuple[list[dict[int, int]], dict[int, str]]:
    """Per snapshot, the target addresses to rewrite so that one name is
    one target over all of them, and the merged symbol table.

    An address means something only in the process that recorded it:
    ``libm.so.6!cos`` sits at another address in every process that loaded
    libm after exec (address space randomisation), and one address can be
    ``cos`` in one process and ``sin`` in another. A name keeps the
    address it had in the first snapshot that has it; later snapshots'
    addresses of that name are rewritten to it, and an address another
    name already holds is given a free one from the top of the range. A
    snapshot's own addresses are never folded into each other."""
    by_name: dict[str, int] = {}
    names: dict[int, str] = {}
    taken = {int(a) for s in snapshots for a in s.thread_targets["target"]} | {a for s in snapshots for a in s.symbols}
    free = 2**64 - 1
    remaps = []
    for snap in snapshots:
        remap: dict[int, int] = {}
        claims: dict[str, int] = {}
        for address, name in sorted(snap.symbols.items()):
            canonical = by_name.get(name)  # from an earlier snapshot
            if canonical is None:
                canonical = address
                if names.get(address, name) != name:  # another name holds it
                    while free in taken:
                        free -= 1
                    canonical = free
                    taken.add(free)
                claims.setdefault(name, canonical)
            if canonical != address:
                remap[address] = canonical
            names[canonical] = name
        for name, address in claims.items():
            by_name.setdefault(name, address)
        remaps.append(remap)
    return remaps, names


def _remapped(addresses: np.ndarray, remap: dict[int, int]) -> np.ndarray:
    """``addresses`` (uint64) with those in ``remap`` replaced."""
    if not remap:
        return addresses
    return np.array([remap.get(a, a) for a in addresses.tolist()], dtype=np.uint64)


def sources(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The recording sessions ``snapshot`` holds, each as its identity
    (``pid``, ``epoch``, ``id``) and how long it had run (``session_ns``)
    when saved. Empty for a snapshot whose sessions are unknown: a file
    written before sessions had an id, or an interval (``diff``), which is
    not a whole session."""
    listed = snapshot.meta.get("sources")
    if listed is not None:
        return list(listed)
    session = snapshot.meta.get("session")
    if session is None or "id" not in session or "interval_ns" in snapshot.meta:
        return []
    return [{**session, "session_ns": int(snapshot.meta.get("session_ns", 0))}]


def distinct(snapshots: list[Snapshot], names: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Which of ``snapshots`` to merge so that no session counts twice:
    (the indexes kept, in order; (dropped, kept instead) pairs).

    Two saves of one session (same pid, epoch and id) hold the same
    counters at two moments: the later one (longer ``session_ns``) holds
    all of the earlier one's, which is dropped; an identical copy is
    dropped too. A merged snapshot is dropped when every session it holds
    is also, as late or later, in one that is kept. Raises ``ValueError``
    naming both files (``names``) when two overlap only in part: merging
    them would count the shared sessions twice, and leaving either out
    would lose the others."""

    def key(source: dict[str, Any]) -> tuple[int, int, str]:
        return int(source["pid"]), int(source["epoch"]), str(source["id"])

    held = [{key(source): int(source["session_ns"]) for source in sources(s)} for s in snapshots]
    # The widest and latest first, so that what they hold is seen before its parts and earlier saves.
    order = sorted(range(len(snapshots)), key=lambda i: (-len(held[i]), -sum(held[i].values()), i))
    covered: dict[tuple[int, int, str], tuple[int, int]] = {}  # session -> (session_ns, index kept)
    kept, dropped = [], []
    for i in order:
        inside = [k for k in held[i] if k in covered]
        if not inside:
            kept.append(i)
            covered.update({k: (ns, i) for k, ns in held[i].items()})
            continue
        holders = {covered[k][1] for k in inside}
        if len(inside) == len(held[i]) and all(covered[k][0] >= held[i][k] for k in inside) and len(holders) == 1:
            dropped.append((i, holders.pop()))
            continue
        other = min(holders)
        raise ValueError(
            f"{names[i]} and {names[other]} share {len(inside)} recording session(s) but not all: "
            "combining them would count those twice; combine the files they were made from instead"
        )
    return sorted(kept), dropped
