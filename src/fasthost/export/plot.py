"""Matplotlib figures of a snapshot, and of two runs side by side (the
optional ``plot`` extra).

``plot`` draws four panels: the latency of the top targets as percentile
curves (HdrHistogram's convention: latency on a log axis against the
percentile on a log ``1/(1-q)`` axis), where the recorded time went, and
the histograms of unmanaged calls and of callbacks with log count axes.
``plot_diff`` draws the percentile curves of two runs, target by target.
All durations are in ns.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost.export.compare import matched_targets
from fasthost.export.histogram import Histogram
from fasthost.export.report import format_ns, target_histogram
from fasthost.export.storage import open_for_writing

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["display_bins", "percentile_curve", "plot", "plot_diff"]

# Points per decade of 1/(1-q) on a percentile curve: enough that the steps
# of a log-linear histogram show, few enough to keep the PNG small.
CURVE_POINTS_PER_DECADE = 24
# Bars per power of two in the histogram panels. The histogram's own buckets
# (32 per power of two at precision 5) are a pixel wide or less on a log axis
# spanning microseconds to seconds, so they would come out blank; these are
# unions of whole buckets, so each bar's count is exact for the range drawn.
BARS_PER_OCTAVE = 4
DIFF_PANELS = 6  # targets in plot_diff by default
# Curves and bars per target drawn by plot(): past about 20, the legend and
# the bar labels no longer fit the 950-pixel figure (at 60 the layout
# collapses to unreadable slivers); the rest are the "other targets" row.
PLOT_TARGETS = 20
LABEL_CHARS = 34  # a symbol longer than this is shortened in the middle

# matplotlib's tab10 less its grey, which is the callbacks' colour here.
TARGET_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
CALLBACKS_GREY = "#777777"
UNMANAGED_COLOUR = "#4C72B0"
CALLBACK_COLOUR = "#8172B2"
BEFORE_COLOUR = "#4C72B0"
AFTER_COLOUR = "#C44E52"
FIGURE_DPI = 100


def _figure(**kwargs: Any) -> Any:
    # matplotlib.figure.Figure, not pyplot: no global figure registry, no
    # GUI backend, nothing for the caller to close. The Agg canvas is
    # attached now so that the caller can measure what was drawn.
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "fasthost's plots need matplotlib: pip install 'fasthost[plot]' (or pip install matplotlib)"
        ) from None
    # constrained layout makes room for the suptitle, legends and tick
    # labels (tight_layout left the title clipped).
    fig = Figure(dpi=FIGURE_DPI, constrained_layout=True, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a str; raises ``ValueError`` unless it names a .png file
    (the plots are PNGs: another suffix would be a file misnamed)."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.lower().endswith(".png"):
        raise ValueError(f"the plot is a PNG: its file name must end in .png, got {text!r}")
    return text


# ---- one snapshot ------------------------------------------------------------------


def plot(snapshot: Snapshot, path_or_ax: Any, top: int = 10) -> Any:
    """See :meth:`Snapshot.plot`."""
    if isinstance(path_or_ax, (str, os.PathLike)):
        path = _png_path(path_or_ax)
        _check_top(top)
        fig = _figure(figsize=(14, 9.5))
        (curves, time), (unmanaged, callbacks) = fig.subplots(2, 2)
        rows = snapshot.targets[: min(top, PLOT_TARGETS)]
        colours = _target_styles(len(rows))
        draw_target_percentiles(curves, snapshot, rows, colours)
        draw_time(time, snapshot, rows, colours)
        unmanaged_hist, callback_hist = snapshot.histogram("inclusive"), snapshot.histogram("callback")
        draw_histogram(unmanaged, unmanaged_hist, "unmanaged calls (inclusive)", UNMANAGED_COLOUR)
        draw_histogram(callbacks, callback_hist, "callbacks (Python called from native code)", CALLBACK_COLOUR)
        _share_histogram_axes(unmanaged, callbacks, [unmanaged_hist, callback_hist])
        fig.suptitle(_title(snapshot), fontsize="large")
        _save_png(fig, path)
        return fig
    if not hasattr(path_or_ax, "bar"):
        raise TypeError(f"plot() needs a file path or a matplotlib Axes, not {type(path_or_ax).__name__}")
    hist = snapshot.histogram("inclusive")
    draw_histogram(path_or_ax, hist, "unmanaged calls (inclusive)", UNMANAGED_COLOUR)
    _share_histogram_axes(path_or_ax, None, [hist])
    return path_or_ax


def _check_top(top: Any) -> None:
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 0:
        raise ValueError(f"top must be an int >= 0, got {top!r}")


def _save_png(fig: Any, path: str | os.PathLike[str]) -> None:
    """Writes ``fig`` to ``path`` as a PNG; ``OSError`` when it cannot be
    written (a named pipe with no reader included: it fails, not waits)."""
    with open_for_writing(path) as file:
        fig.savefig(file, dpi=FIGURE_DPI, format="png")


def _title(snapshot: Snapshot) -> str:
    totals = snapshot.totals
    return (
        f"fasthost: {totals['transitions']:,} transitions, {totals['errors']:,} errors, "
        f"{totals['threads']} thread(s), {format_ns(totals['recorded_ns'])} recorded "
        f"(unmanaged {format_ns(totals['unmanaged_ns'])}, callbacks {format_ns(totals['callback_ns'])})"
    )


def _short(label: str, chars: int = LABEL_CHARS) -> str:
    """``label`` cut in the middle to ``chars`` characters (a symbol's
    library and its function name both stay readable), its dollar signs
    escaped: matplotlib reads text between two ``$`` as math, which would
    show Rust's ``<impl Foo as Bar>`` symbols (``$LT$impl$u20$...$GT$``)
    in italics without their dollars."""
    if len(label) > chars:
        keep = chars - 1
        label = label[: keep - keep // 2] + "\u2026" + label[len(label) - keep // 2 :]
    return label.replace("$", "\\$")


def _target_styles(count: int) -> list[dict[str, Any]]:
    """A colour and line style per target: the colours of TARGET_COLOURS,
    then the same colours dashed, dotted..., so no two targets look alike."""
    dashes = ["-", "--", ":", "-."]
    return [
        {
            "color": TARGET_COLOURS[i % len(TARGET_COLOURS)],
            "linestyle": dashes[(i // len(TARGET_COLOURS)) % len(dashes)],
        }
        for i in range(count)
    ]


# ---- percentile curves -------------------------------------------------------------


def percentile_curve(hist: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """The percentile curve of ``hist``, HdrHistogram-style: ``(x, y)`` with
    ``x = 1/(1-q)`` (1 at q=0, 100 at p99, 1000 at p99.9 ...) and ``y`` the
    q-quantile in ns (``Histogram.quantile``), from q=0 to the last q below
    which one call at least remains (x < total calls), then the slowest call
    (``hist.max``) drawn at x = total calls. Empty arrays when ``hist`` is
    empty."""
    calls = hist.total
    if not calls:
        return np.zeros(0), np.zeros(0)
    steps = np.arange(math.ceil(math.log10(calls) * CURVE_POINTS_PER_DECADE) + 1)
    x = 10.0 ** (steps / CURVE_POINTS_PER_DECADE)
    x = x[x < calls]
    y = np.asarray(hist.quantile(1.0 - 1.0 / x), dtype=np.float64).reshape(-1)
    return np.append(x, float(calls)), np.append(y, float(hist.max or 0))


def _percentile_label(x: float) -> str:
    """The tick label at ``x = 1/(1-q)``: ``min``, ``p50``, ``p90``, ``p99.9``."""
    if x <= 1:
        return "min"
    return f"p{100 * (1 - 1 / x):.{max(0, round(math.log10(x)) - 2)}f}"


def _percentile_axis(ax: Any, largest_x: float) -> None:
    """The x axis of percentile curves: log ``1/(1-q)`` from 1 (min) to past
    the largest curve's end, ticks labelled p50, p90, p99, p99.9 ..."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    right = max(10.0, largest_x * 1.25)
    ticks = [1.0, 2.0] + [10.0**k for k in range(1, int(math.log10(right)) + 1)]
    labels = [_percentile_label(x) for x in ticks]
    if math.log10(right) > 3:
        labels[0] = ""  # min and p50 are a third of a decade apart: on a long axis they overlap
    ax.set_xscale("log")
    ax.set_xlim(1.0, right)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter(labels))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("percentile (log scale of 1/(1-q); the left edge is the fastest call)")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)


def _duration_axis(axis: Any, low: float, high: float) -> None:
    """Makes ``axis`` (an x or y axis) a log duration axis from ``low`` to
    ``high`` ns (with a margin), labelled in human units. When ``low`` is 0
    the axis is symmetric-log, linear between 0 and 1 ns, so that
    zero-length durations (the 0-ns bucket) are drawn rather than lost."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    is_x = axis is axis.axes.xaxis
    set_scale, set_limits = (
        (axis.axes.set_xscale, axis.axes.set_xlim) if is_x else (axis.axes.set_yscale, axis.axes.set_ylim)
    )
    # Within two decades the powers of ten alone leave the axis unlabelled.
    span = math.log10(max(high, 1.0) / max(low, 1.0))
    subs = (1.0, 2.0, 5.0) if span < 2 else (1.0,)
    if low <= 0:
        set_scale("symlog", linthresh=1.0, linscale=0.6)
        # A LogLocator would clamp the limits to positive values.
        axis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0, subs=subs))
    else:
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda value, _: format_ns(value)))
    axis.set_minor_formatter(NullFormatter())
    set_limits(0 if low <= 0 else low / 1.6, max(high, 1.0) * 1.6)


def _draw_curve(ax: Any, hist: Histogram, label: str, **style: Any) -> Any:
    """One percentile curve of ``hist`` on ``ax``, its slowest call marked
    with a dot; the Line2D, or None when ``hist`` is empty."""
    x, y = percentile_curve(hist)
    if not len(x):
        return None
    style = {"linewidth": 1.6, **style}
    (line,) = ax.plot(x, y, label=label, marker="o", markevery=[len(x) - 1], markersize=4, **style)
    return line


def draw_target_percentiles(ax: Any, snapshot: Snapshot, rows: np.ndarray, styles: list[dict[str, Any]]) -> None:
    """Percentile curves (latency in ns, inclusive) of the target ``rows``
    of ``snapshot`` in ``styles``, and of all callbacks (grey, dashed)."""
    ax.set_title("latency by percentile, per target (dot: slowest call)", loc="left", fontsize="medium")
    ax.set_ylabel("call duration (inclusive)")
    hists = [target_histogram(snapshot, row) for row in rows]
    labelled = [
        (hist, f"{_short(str(row['symbol']))} ({int(row['calls']):,})", style)
        for row, hist, style in zip(rows, hists, styles)
    ]
    callbacks = snapshot.histogram("callback")
    if callbacks.total:
        labelled.append((callbacks, f"callbacks ({callbacks.total:,})", {"color": CALLBACKS_GREY, "linestyle": "--"}))
    drawn = [hist for hist, label, style in labelled if _draw_curve(ax, hist, label, **style) is not None]
    if not drawn:
        _nothing(ax, "no unmanaged calls recorded")
        return
    _percentile_axis(ax, max(hist.total for hist in drawn))
    _duration_axis(ax.yaxis, min(hist.min or 0 for hist in drawn), max(hist.max or 0 for hist in drawn))
    # "best": the slow targets' short curves sit top left, the long tails top right.
    ax.legend(loc="best", fontsize="small", title="target (calls)", title_fontsize="small")


def _nothing(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


# ---- where the time goes -----------------------------------------------------------


def draw_time(ax: Any, snapshot: Snapshot, rows: np.ndarray, styles: list[dict[str, Any]]) -> None:
    """Where the recorded time went: per target of ``rows``, its exclusive
    time (ns in native code, callbacks taken out; filled) inside its
    inclusive time (outline), then the other targets and the callbacks' own
    Python time. The exclusive times add up to the recorded time, so the
    shares printed beside the bars add up to 100 %."""
    totals = snapshot.totals
    recorded = totals["recorded_ns"]
    ax.set_title("where the time goes: own time (filled), with callbacks (outline)", loc="left", fontsize="medium")
    if not recorded:
        _nothing(ax, "no time recorded")
        return
    labels = [_short(str(row["symbol"])) for row in rows]
    own = [int(row["exclusive_ns"]) for row in rows]
    inclusive = [int(row["total_ns"]) for row in rows]
    calls = [int(row["calls"]) for row in rows]
    colours = [style["color"] for style in styles]
    rest = snapshot.targets[len(rows) :]
    if len(rest):
        labels.append(f"{len(rest):,} other targets")
        own.append(int(rest["exclusive_ns"].sum(dtype=np.uint64)))
        inclusive.append(int(rest["total_ns"].sum(dtype=np.uint64)))
        calls.append(int(rest["calls"].sum(dtype=np.uint64)))
        colours.append("#bbbbbb")
    if totals["callback_ns"]:
        labels.append("callbacks (Python)")
        own.append(totals["callback_exclusive_ns"])
        inclusive.append(totals["callback_ns"])
        calls.append(int(snapshot.threads["callback_calls"].sum(dtype=np.uint64)))
        colours.append(CALLBACKS_GREY)
    y = np.arange(len(labels))[::-1]  # the busiest at the top
    ax.barh(y, inclusive, height=0.7, color="none", edgecolor=colours, linewidth=1.2)
    ax.barh(y, own, height=0.7, color=colours)
    widest = max(inclusive)
    for row_y, own_ns, inclusive_ns, n in zip(y, own, inclusive, calls):
        ax.text(
            max(own_ns, inclusive_ns) + widest * 0.01,
            row_y,
            f"{own_ns / recorded:.1%}  {format_ns(own_ns)} own, {_calls(n)}",
            va="center",
            fontsize="small",
        )
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize="small")
    ax.set_xlim(0, widest * 1.45)  # room for the figures beside the widest bar
    ax.set_xlabel(f"time (share of the {format_ns(totals['recorded_ns'])} recorded)")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_ns(value)))


# ---- histograms --------------------------------------------------------------------


def display_bins(hist: Histogram, per_octave: int = BARS_PER_OCTAVE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty buckets of ``hist`` gathered into at most ``per_octave``
    equal ranges per power of two (each range a union of whole buckets, so
    its count is exact): ``(lower ns, upper ns, counts)``. The 0-ns bucket
    is its own range, [0, 1). Raises ``ValueError`` unless ``per_octave``
    is a power of two >= 1."""
    if per_octave < 1 or per_octave & (per_octave - 1):
        raise ValueError(f"per_octave must be a power of two >= 1, got {per_octave}")
    lower, upper, counts = hist.nonzero()
    if not len(lower):
        return lower, upper, counts
    # Each bucket lies inside one range: bucket widths are powers of two
    # aligned on multiples of their width, so a bucket no wider than a range
    # never straddles two; a wider one (precision < log2(per_octave)) is a
    # range of its own, from its lower to its upper edge.
    octave = np.floor(np.log2(np.maximum(lower, 1.0)))
    width = np.maximum(2.0**octave / per_octave, 1.0)
    start = np.where(lower < 1, 0.0, 2.0**octave + np.floor((lower - 2.0**octave) / width) * width)
    end = np.where(lower < 1, 1.0, np.maximum(start + width, upper))
    starts, first = np.unique(start, return_index=True)
    sums = np.add.reduceat(counts, first)
    return starts, end[first], sums


def draw_histogram(ax: Any, hist: Histogram, title: str, colour: str = UNMANAGED_COLOUR) -> None:
    """A histogram of ``hist`` on ``ax``: calls on a log count axis (a
    handful of slow calls stays visible beside 100,000 fast ones) against
    the duration on a log axis (symmetric-log when there are 0-ns calls),
    bars of ``display_bins``; p50, p99 and max marked."""
    ax.set_title(f"{title}: {_calls(hist.total)}" if hist.total else title, loc="left", fontsize="medium")
    ax.set_xlabel("duration")
    ax.set_ylabel("calls (log scale)")
    if not hist.total:
        _nothing(ax, "none recorded")
        return
    lower, upper, counts = display_bins(hist)
    ax.bar(lower, counts, width=upper - lower, align="edge", color=colour, edgecolor=colour, linewidth=0.4)
    _count_axis(ax.yaxis)
    for q, name, colour_q in ((0.5, "p50", "#DD8452"), (0.99, "p99", "#C44E52"), (1.0, "max", "#222222")):
        value = float(hist.quantile(q))
        # Under the bars (zorder 1): the bar of a few slow calls stays whole.
        ax.axvline(value, color=colour_q, linestyle="--", linewidth=1.0, zorder=0.9, label=f"{name} {format_ns(value)}")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_axisbelow(True)
    ax.grid(True, axis="y", which="major", color="#eeeeee", linewidth=0.6)


def _calls(count: int) -> str:
    return f"{count:,} call" + ("" if count == 1 else "s")


def _count_axis(axis: Any) -> None:
    """A log count axis labelled 1, 10, 100, 1,000 ..."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else ""))
    axis.set_minor_formatter(NullFormatter())


def _share_histogram_axes(ax: Any, other: Any, hists: list[Histogram]) -> None:
    """One duration range and one count range for the histogram panels, so
    that unmanaged calls and callbacks compare by eye."""
    shown = [hist for hist in hists if hist.total]
    if not shown:
        return
    low = min(int(hist.min or 0) for hist in shown)
    high = max(int(hist.max or 0) for hist in shown)
    peak = max(float(display_bins(hist)[2].max()) for hist in shown)
    for axes in (ax, other):
        if axes is None or not len(axes.patches):
            continue
        _duration_axis(axes.xaxis, low, high)
        # From half a call: a bar of one call is a visible half decade.
        axes.set_ylim(0.5, peak * 3)


# ---- two runs ----------------------------------------------------------------------


def plot_diff(
    before: Snapshot,
    after: Snapshot,
    path: str | os.PathLike[str],
    top: int = DIFF_PANELS,
    labels: tuple[str, str] = ("before", "after"),
) -> Any:
    """Writes a PNG to ``path`` of the before/after percentile curves
    (latency in ns against the percentile, as in :func:`plot`) of the
    ``top`` targets that had the most time in either run, one panel per
    target, targets matched by symbol (as ``fasthost diff``), then a panel
    of the callbacks when either run has any. ``labels`` name the two runs
    in the title. Returns the matplotlib Figure.

    Raises ``ValueError`` when ``path`` does not end in .png or ``top`` is
    not an int >= 0, ``ImportError`` without matplotlib, ``OSError`` when
    the file cannot be written."""
    path = _png_path(path)
    _check_top(top)
    panels: list[tuple[str, Histogram | None, Histogram | None]] = [
        (symbol, _row_histogram(before, row_before), _row_histogram(after, row_after))
        for symbol, row_before, row_after in matched_targets(before, after)[:top]
    ]
    callbacks = before.histogram("callback"), after.histogram("callback")
    if any(hist.total for hist in callbacks):
        panels.append(("callbacks (Python called from native code)", *callbacks))
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    # Wide enough for the title's two lines even with one panel.
    fig = _figure(figsize=(max(5.2 * columns, 8.0), 3.6 * rows + 1.0))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, hist_before, hist_after) in zip(axes, panels):
        _draw_diff_panel(ax, name, hist_before, hist_after)
    if not panels:
        _nothing(axes[0], "no unmanaged calls or callbacks in either run")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"fasthost diff, before: {_short(labels[0], 40)} ({before.totals['transitions']:,} transitions)\n"
        f"after: {_short(labels[1], 40)} ({after.totals['transitions']:,} transitions)",
        fontsize="medium",
    )
    _save_png(fig, path)
    return fig


def _row_histogram(snapshot: Snapshot, row: np.void | None) -> Histogram | None:
    return None if row is None else target_histogram(snapshot, row)


def _change(before: Histogram | None, after: Histogram | None) -> str:
    """``p50 a -> b, p99 a -> b, calls a -> b`` (or ``new`` / ``gone``)."""
    if before is None or not before.total:
        return "new in after"
    if after is None or not after.total:
        return "gone in after"
    p50a, p99a = before.quantile([0.5, 0.99])
    p50b, p99b = after.quantile([0.5, 0.99])
    return (
        f"p50 {format_ns(p50a)} \u2192 {format_ns(p50b)}, p99 {format_ns(p99a)} \u2192 {format_ns(p99b)}\n"
        f"calls {before.total:,} \u2192 {after.total:,}"
    )


def _draw_diff_panel(ax: Any, name: str, before: Histogram | None, after: Histogram | None) -> None:
    ax.set_title(f"{_short(name, 48)}\n{_change(before, after)}", loc="left", fontsize="small")
    drawn = []
    # Before: a wide pale band; after: a thin line over it, so that a curve
    # that did not move shows as a line inside its band, not as one line.
    styles = (
        (before, "before", {"color": BEFORE_COLOUR, "alpha": 0.5, "linewidth": 4.0}),
        (after, "after", {"color": AFTER_COLOUR}),
    )
    for hist, label, style in styles:
        if hist is not None and _draw_curve(ax, hist, label, **style) is not None:
            drawn.append(hist)
    if not drawn:
        _nothing(ax, "no calls")
        return
    _percentile_axis(ax, max(hist.total for hist in drawn))
    _duration_axis(ax.yaxis, min(hist.min or 0 for hist in drawn), max(hist.max or 0 for hist in drawn))
    ax.set_xlabel("percentile (left edge: fastest call)", fontsize="small")
    ax.tick_params(labelsize="small")
    ax.legend(loc="best", fontsize="small")
