"""Two snapshots side by side, target by target (``fasthost diff``).

Unlike ``Snapshot.diff`` (one session, later minus earlier) this compares
any two runs, e.g. before and after a change. Targets are matched by
symbol, since addresses move between processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fasthost.export.report import format_ns, target_histogram

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["compare_targets"]


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "new" if before is None else "gone"
    if before == 0:
        return "" if after == 0 else "+inf"
    return f"{(after - before) / before:+.1%}"


def _figures(snap: Snapshot) -> dict[str, tuple[int, float, float, int]]:
    """symbol -> (calls, p50 ns, p99 ns, total ns)."""
    figures = {}
    for row in snap.targets:
        hist = target_histogram(snap, row)
        p50, p99 = hist.quantile([0.5, 0.99]) if hist.total else (float("nan"), float("nan"))
        figures[str(row["symbol"])] = (int(row["calls"]), float(p50), float(p99), int(row["total_ns"]))
    return figures


def compare_targets(before: Snapshot, after: Snapshot, top: int = 20) -> str:
    """A text table: per target, calls and p50/p99 (ns) in both snapshots
    and their relative change; the ``top`` targets by total time in either."""
    a, b = _figures(before), _figures(after)
    symbols = sorted(set(a) | set(b), key=lambda s: -max(a.get(s, (0, 0, 0, 0))[3], b.get(s, (0, 0, 0, 0))[3]))
    ta, tb = before.totals, after.totals
    lines = [
        f"transitions: {ta['transitions']:,} -> {tb['transitions']:,} ({_change(ta['transitions'], tb['transitions'])})"
        f"   errors: {ta['errors']:,} -> {tb['errors']:,}",
        f"unmanaged time: {format_ns(ta['unmanaged_ns'])} -> {format_ns(tb['unmanaged_ns'])} "
        f"({_change(ta['unmanaged_ns'], tb['unmanaged_ns'])})",
        "",
    ]
    if not symbols:
        return "\n".join([*lines, "no unmanaged calls in either snapshot"]) + "\n"
    width = max([12, *(len(s) for s in symbols[:top])])
    lines.append(
        f"{'target':<{width}} {'calls':>21} {'change':>8}  {'p50':>19} {'change':>8}  {'p99':>19} {'change':>8}"
    )
    for symbol in symbols[:top]:
        ca, p50a, p99a, _ = a.get(symbol, (None, None, None, 0))
        cb, p50b, p99b, _ = b.get(symbol, (None, None, None, 0))
        calls = f"{'-' if ca is None else f'{ca:,}'} -> {'-' if cb is None else f'{cb:,}'}"
        p50 = f"{format_ns(p50a)} -> {format_ns(p50b)}"
        p99 = f"{format_ns(p99a)} -> {format_ns(p99b)}"
        lines.append(
            f"{symbol:<{width}} {calls:>21} {_change(ca, cb):>8}  {p50:>19} {_change(p50a, p50b):>8}  "
            f"{p99:>19} {_change(p99a, p99b):>8}"
        )
    if len(symbols) > top:
        lines.append(f"... {len(symbols) - top} more targets (--top)")
    return "\n".join(lines) + "\n"
