"""Two snapshots side by side, target by target (``fasthost diff``).

Unlike ``Snapshot.diff`` (one session, later minus earlier) this compares
any two runs, e.g. before and after a change. Targets are matched by
symbol, since addresses move between processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fasthost.export.report import format_ns, target_histogram

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["compare_targets", "matched_targets"]


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "new" if before is None else "gone"
    if before == 0:
        return "" if after == 0 else "+inf"
    return f"{(after - before) / before:+.1%}"


def matched_targets(before: Snapshot, after: Snapshot) -> list[tuple[str, np.void | None, np.void | None]]:
    """The targets of both snapshots matched by symbol: ``(symbol, row of
    before.targets or None, row of after.targets or None)``, the one with
    the most total time (ns) in either run first."""
    rows_before = {str(row["symbol"]): row for row in before.targets}
    rows_after = {str(row["symbol"]): row for row in after.targets}

    def most_time(symbol: str) -> int:
        return max(int(rows[symbol]["total_ns"]) for rows in (rows_before, rows_after) if symbol in rows)

    symbols = sorted(set(rows_before) | set(rows_after), key=lambda s: (-most_time(s), s))
    return [(symbol, rows_before.get(symbol), rows_after.get(symbol)) for symbol in symbols]


def _figures(snap: Snapshot, row: np.void | None) -> tuple[int | None, float | None, float | None]:
    """(calls, p50 ns, p99 ns) of one target row, Nones without a row."""
    if row is None:
        return None, None, None
    hist = target_histogram(snap, row)
    p50, p99 = hist.quantile([0.5, 0.99]) if hist.total else (float("nan"), float("nan"))
    return int(row["calls"]), float(p50), float(p99)


def compare_targets(before: Snapshot, after: Snapshot, top: int = 20) -> str:
    """A text table: per target, calls and p50/p99 (ns) in both snapshots
    and their relative change; the ``top`` targets by total time in either."""
    matched = matched_targets(before, after)
    ta, tb = before.totals, after.totals
    lines = [
        f"transitions: {ta['transitions']:,} -> {tb['transitions']:,} ({_change(ta['transitions'], tb['transitions'])})"
        f"   errors: {ta['errors']:,} -> {tb['errors']:,}",
        f"recorded time: {format_ns(ta['recorded_ns'])} -> {format_ns(tb['recorded_ns'])} "
        f"({_change(ta['recorded_ns'], tb['recorded_ns'])}; each ns counted once)",
        "",
    ]
    if not matched:
        return "\n".join([*lines, "no unmanaged calls in either snapshot"]) + "\n"
    width = max([12, *(len(symbol) for symbol, _, _ in matched[:top])])
    lines.append(
        f"{'target':<{width}} {'calls':>21} {'change':>8}  {'p50':>19} {'change':>8}  {'p99':>19} {'change':>8}"
    )
    for symbol, row_before, row_after in matched[:top]:
        ca, p50a, p99a = _figures(before, row_before)
        cb, p50b, p99b = _figures(after, row_after)
        calls = f"{'-' if ca is None else f'{ca:,}'} -> {'-' if cb is None else f'{cb:,}'}"
        p50 = f"{format_ns(p50a)} -> {format_ns(p50b)}"
        p99 = f"{format_ns(p99a)} -> {format_ns(p99b)}"
        lines.append(
            f"{symbol:<{width}} {calls:>21} {_change(ca, cb):>8}  {p50:>19} {_change(p50a, p50b):>8}  "
            f"{p99:>19} {_change(p99a, p99b):>8}"
        )
    if len(matched) > top:
        lines.append(f"... {len(matched) - top} more targets (--top)")
    return "\n".join(lines) + "\n"
