"""Matplotlib figures of a snapshot (the optional ``plot`` extra)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost.export.histogram import Histogram
from fasthost.export.report import format_ns, target_histogram

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["plot"]


def _figure_class() -> Any:
    # matplotlib.figure.Figure, not pyplot: no global figure registry, no
    # GUI backend, nothing for the caller to close.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "fasthost's plots need matplotlib: pip install 'fasthost[plot]' (or pip install matplotlib)"
        ) from None
    return Figure


def plot(snapshot: Snapshot, path_or_ax: Any, top: int = 10) -> Any:
    """See :meth:`Snapshot.plot`."""
    if isinstance(path_or_ax, (str, os.PathLike)):
        has_targets = len(snapshot.targets) > 0
        fig = _figure_class()(figsize=(13 if has_targets else 7, 4.5))
        axes = fig.subplots(1, 2 if has_targets else 1, squeeze=False)
        draw_histogram(axes[0][0], snapshot.histogram("inclusive"), "unmanaged calls (inclusive)")
        if has_targets:
            draw_targets(axes[0][1], snapshot, top)
        fig.suptitle(_title(snapshot))
        fig.tight_layout()
        fig.savefig(path_or_ax, dpi=100, format="png")
        return fig
    if not hasattr(path_or_ax, "bar"):
        raise TypeError(f"plot() needs a file path or a matplotlib Axes, not {type(path_or_ax).__name__}")
    draw_histogram(path_or_ax, snapshot.histogram("inclusive"), "unmanaged calls (inclusive)")
    return path_or_ax


def _title(snapshot: Snapshot) -> str:
    totals = snapshot.totals
    return (
        f"fasthost: {totals['transitions']:,} transitions, {totals['errors']:,} errors, {totals['threads']} thread(s)"
    )


def draw_histogram(ax: Any, hist: Histogram, title: str) -> None:
    """Bars of the non-empty buckets on a log-x axis, p50 and p99 marked."""
    ax.set_title(title)
    ax.set_xlabel("duration (ns, log scale)")
    ax.set_ylabel("calls")
    if not hist.total:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        return
    lower, upper, counts = hist.nonzero()
    lower = np.maximum(lower, 0.5)  # log axis: the 0-ns bucket is drawn from 0.5
    ax.bar(lower, counts, width=upper - lower, align="edge", color="#4C72B0", edgecolor="#2F4B7C", linewidth=0.3)
    ax.set_xscale("log")
    for q, colour in ((0.5, "#DD8452"), (0.99, "#C44E52")):
        value = float(hist.quantile(q))
        ax.axvline(value, color=colour, linestyle="--", linewidth=1.2, label=f"p{q * 100:g} = {format_ns(value)}")
    ax.legend(loc="upper right", fontsize="small")


def draw_targets(ax: Any, snapshot: Snapshot, top: int) -> None:
    """Per target: a horizontal bar from p50 to p99 and a dot at the mean."""
    rows = snapshot.targets[:top][::-1]
    ax.set_title(f"top {len(rows)} targets by total time: p50-p99 (bar), mean (dot)")
    ax.set_xlabel("duration (ns, log scale)")
    labels, p50s, p99s, means = [], [], [], []
    for row in rows:
        hist = target_histogram(snapshot, row)
        p50, p99 = hist.quantile([0.5, 0.99]) if hist.total else (np.nan, np.nan)
        labels.append(f"{row['symbol']} ({int(row['calls']):,})")
        p50s.append(max(p50, 0.5))
        p99s.append(max(p99, 0.5))
        means.append(max(hist.mean, 0.5) if hist.total else np.nan)
    y = np.arange(len(rows))
    ax.barh(y, np.array(p99s) - np.array(p50s) + 1e-9, left=p50s, color="#55A868", height=0.5)
    ax.plot(means, y, "o", color="#2F4B7C")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize="small")
    ax.set_xscale("log")
