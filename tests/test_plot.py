"""The PNGs: ``Snapshot.plot`` / ``fasthost plot`` and ``plot_diff`` /
``fasthost diff --plot``, drawn by real matplotlib and read back with
pillow. The recordings are real (the core's four calls on the manual clock,
so every duration is exact): a qsort-like workload of 5 slow calls around
97,020 fast ones with a callback each, and a target with 0-ns calls."""

import ctypes
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import fasthost
from fasthost import _testing

from .test_cli import fasthost_cli, one_error_line

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from fasthost.export.plot import PLOT_TARGETS, display_bins, percentile_curve, plot_diff  # noqa: E402

libc = ctypes.CDLL(None)
libm = ctypes.CDLL("libm.so.6")
QSORT = ctypes.cast(libc.qsort, ctypes.c_void_p).value
STRCMP = ctypes.cast(libc.strcmp, ctypes.c_void_p).value
COS = ctypes.cast(libm.cos, ctypes.c_void_p).value

SORTS = 5
COMPARES_PER_SORT = 19_404  # 97,020 strcmp calls in all, as the bundled example makes
SORT_NS = 20_000_000
QUICK_CALLS = 20  # libm cos: half of them 0 ns, half 40 ns


def record_qsort_like(strcmp_ns=300, callback_own_ns=200):
    """A real recording on the manual clock: SORTS qsort calls of SORT_NS
    each, every one calling back COMPARES_PER_SORT times into Python, which
    calls strcmp (strcmp_ns); then QUICK_CALLS cos calls of 0 and 40 ns."""
    advance = _testing.advance_manual_time
    _testing.set_manual_time(1_000_000)
    fasthost.start(clock="manual")
    try:
        for _ in range(SORTS):
            fasthost.leave_runtime(QSORT)
            for _ in range(COMPARES_PER_SORT):
                fasthost.reverse_enter_runtime()
                advance(callback_own_ns)
                fasthost.leave_runtime(STRCMP)
                advance(strcmp_ns)
                fasthost.enter_runtime()
                fasthost.reverse_leave_runtime()
            advance(SORT_NS - COMPARES_PER_SORT * (strcmp_ns + callback_own_ns))
            fasthost.enter_runtime()
        for i in range(QUICK_CALLS):
            fasthost.leave_runtime(COS)
            advance(0 if i % 2 else 40)
            fasthost.enter_runtime()
    finally:
        fasthost.stop()
    return fasthost.snapshot()


@pytest.fixture(scope="module")
def qsort_like():
    return record_qsort_like()


@pytest.fixture(scope="module")
def drawn(qsort_like, tmp_path_factory):
    """The plot of qsort_like: (figure, PNG path, panels by title)."""
    path = tmp_path_factory.mktemp("plot") / "run.png"
    fig = qsort_like.plot(path)
    return fig, path, panels(fig)


def panels(fig):
    """The figure's visible axes by the start of their title."""
    return {ax.get_title(loc="left").split(":")[0].split(" (")[0]: ax for ax in fig.axes if ax.get_visible()}


def png_pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def bar_pixels(fig, ax, bar, pixels):
    """The PNG's pixels inside ``bar`` (a Rectangle of ``ax``), 1 px in from
    its edges and clipped to the axes."""
    low = ax.transData.transform((bar.get_x(), max(bar.get_y(), ax.get_ylim()[0])))
    high = ax.transData.transform((bar.get_x() + bar.get_width(), bar.get_y() + bar.get_height()))
    height = pixels.shape[0]
    # Display coordinates count from the bottom, image rows from the top.
    left, right = int(np.ceil(low[0])) + 1, int(np.floor(high[0])) - 1
    top, bottom = height - int(np.floor(high[1])) + 1, height - int(np.ceil(low[1])) - 1
    assert right >= left, "the bar is less than 3 px wide"
    assert bottom >= top, "the bar is less than 3 px high"
    return pixels[top : bottom + 1, left : right + 1].reshape(-1, 3)


def share_of_colour(region, colour):
    from matplotlib.colors import to_rgb

    rgb = np.round(np.array(to_rgb(colour)) * 255)
    return float((np.abs(region.astype(int) - rgb).max(axis=1) <= 8).mean())


def bar_holding(ax, ns):
    (bar,) = [p for p in ax.patches if p.get_x() <= ns < p.get_x() + p.get_width()]
    return bar


# ---- the figure as a whole ---------------------------------------------------------


def test_plot_writes_a_png_with_four_panels(drawn):
    fig, path, by_title = drawn
    assert set(by_title) == {"latency by percentile, per target", "where the time goes", "unmanaged calls", "callbacks"}
    pixels = png_pixels(path)
    assert pixels.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    assert path.stat().st_size < 200_000


def assert_titles_inside(fig):
    """The suptitle and every panel title lie inside the figure."""
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] + [t for ax in fig.axes if ax.get_visible() for t in (ax.title, ax._left_title)]
    for text in texts:
        if not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        inside = fig.bbox.x0 <= box.x0 <= box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 <= box.y1 <= fig.bbox.y1
        assert inside, f"{text.get_text()!r} at {box} is not inside the figure {fig.bbox}"


def test_title_and_panel_titles_lie_inside_the_figure(drawn):
    fig, _, _ = drawn
    assert_titles_inside(fig)
    assert "194,065 transitions" in fig._suptitle.get_text()  # 5 + 97,020 x 2 + 20
    assert "100 ms recorded" in fig._suptitle.get_text()


def test_nothing_is_drawn_across_the_png_border(drawn):
    # A clipped title or legend leaves ink on the image's outermost pixels.
    _, path, _ = drawn
    pixels = png_pixels(path)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert (border == 255).all()
    assert (pixels[:40] < 128).any(), "no title in the top rows"


# ---- percentile curves -------------------------------------------------------------


def test_a_percentile_curve_per_top_target_with_its_symbol_in_the_legend(drawn):
    _, _, by_title = drawn
    ax = by_title["latency by percentile, per target"]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["libc.so.6!qsort (5)", "libc.so.6!strcmp (97,020)", "libm.so.6!cos (20)", "callbacks (97,020)"]
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == legend
    assert len({line.get_color() for line in lines}) == len(lines)  # each in its own colour
    assert ax.get_xscale() == "log"
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert {"p50", "p90", "p99", "p99.9", "p99.99"} <= set(labels)


def test_each_curve_is_its_targets_quantiles_on_a_1_over_1_minus_q_axis(drawn, qsort_like):
    _, _, by_title = drawn
    lines = {
        line.get_label().split(" (")[0]: line for line in by_title["latency by percentile, per target"].get_lines()
    }
    for symbol in ("libc.so.6!qsort", "libc.so.6!strcmp", "libm.so.6!cos"):
        hist = qsort_like.histogram(target=symbol)
        x, y = lines[symbol].get_xdata(), lines[symbol].get_ydata()
        np.testing.assert_array_equal(y[:-1], hist.quantile(1 - 1 / x[:-1]))
        assert (x[-1], y[-1]) == (hist.total, hist.max)  # the slowest call ends the curve
        assert x[0] == 1  # q = 0: the fastest call
    strcmp = lines["libc.so.6!strcmp"]
    assert set(strcmp.get_ydata()) == {300}
    callbacks = qsort_like.histogram("callback")
    np.testing.assert_array_equal(lines["callbacks"].get_ydata(), percentile_curve(callbacks)[1])


def test_percentile_curve_reaches_p99_9_only_with_enough_calls():
    hist = fasthost.Histogram()
    hist.record_many(np.arange(1, 1001, dtype=np.uint64))  # 1000 calls: 1 .. 1000 ns
    x, y = percentile_curve(hist)
    assert x.max() == 1000
    assert y[-1] == 1000
    assert (x[:-1] < 1000).all()  # beyond p99.9 fewer than one call remains
    assert np.all(np.diff(y) >= 0)
    single = fasthost.Histogram()
    single.record(7)
    assert [a.tolist() for a in percentile_curve(single)] == [[1.0], [7.0]]
    assert [len(a) for a in percentile_curve(fasthost.Histogram())] == [0, 0]


def test_zero_ns_calls_switch_the_latency_axis_to_symlog(drawn):
    _, _, by_title = drawn
    ax = by_title["latency by percentile, per target"]
    assert ax.get_yscale() == "symlog"  # cos's 0-ns calls are on the axis, not lost
    cos = next(line for line in ax.get_lines() if line.get_label().startswith("libm.so.6!cos"))
    assert cos.get_ydata()[0] == 0


# ---- where the time goes -----------------------------------------------------------


def test_time_panel_shows_own_time_per_target_and_the_callbacks(drawn, qsort_like):
    _, _, by_title = drawn
    ax = by_title["where the time goes"]
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert labels == ["libc.so.6!qsort", "libc.so.6!strcmp", "libm.so.6!cos", "callbacks (Python)"]
    filled = [p for p in ax.patches if p.get_fill() and p.get_facecolor()[3] > 0]
    own = {label: bar.get_width() for label, bar in zip(labels, sorted(filled, key=lambda b: -b.get_y()))}
    targets = {str(row["symbol"]): int(row["exclusive_ns"]) for row in qsort_like.targets}
    totals = qsort_like.totals
    assert own == {**targets, "callbacks (Python)": totals["callback_exclusive_ns"]}
    # qsort: 5 calls, 20 ms each, of which 97,020 x 500 ns were callbacks.
    assert own["libc.so.6!qsort"] == SORTS * SORT_NS - SORTS * COMPARES_PER_SORT * 500
    shares = [float(text.get_text().split("%")[0]) for text in ax.texts]
    assert sum(shares) == pytest.approx(100, abs=0.2)  # own times partition the recorded time
    assert shares[0] == pytest.approx(100 * own["libc.so.6!qsort"] / (SORTS * SORT_NS), abs=0.05)


def test_targets_past_top_are_one_row_of_other_targets(qsort_like, tmp_path):
    fig = qsort_like.plot(tmp_path / "top1.png", top=1)
    by_title = panels(fig)
    labels = [tick.get_text() for tick in by_title["where the time goes"].get_yticklabels()]
    assert labels == ["libc.so.6!qsort", "2 other targets", "callbacks (Python)"]
    legend = [t.get_text() for t in by_title["latency by percentile, per target"].get_legend().get_texts()]
    assert legend == ["libc.so.6!qsort (5)", "callbacks (97,020)"]


MANY_TARGETS = 60


def test_sixty_targets_with_top_60_draw_20_and_fold_the_rest_into_one_row(tmp_path):
    # Sixty curves in one legend collapsed the figure's layout to slivers.
    _testing.set_manual_time(1_000_000)
    fasthost.start(clock="manual")
    try:
        for i in range(MANY_TARGETS):
            for _ in range(i + 1):
                fasthost.leave_runtime(0x10000 + 16 * i)
                _testing.advance_manual_time(10 * (i + 1))
                fasthost.enter_runtime()
    finally:
        fasthost.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when the layout collapses
        fig = fasthost.snapshot().plot(tmp_path / "many.png", top=MANY_TARGETS)
    by_title = panels(fig)
    legend = by_title["latency by percentile, per target"].get_legend().get_texts()
    assert len(legend) == PLOT_TARGETS
    labels = [tick.get_text() for tick in by_title["where the time goes"].get_yticklabels()]
    assert labels[-1] == f"{MANY_TARGETS - PLOT_TARGETS} other targets"
    assert len(labels) == PLOT_TARGETS + 1
    assert_titles_inside(fig)
    # Every panel keeps a readable size (a collapsed one is a few pixels tall).
    assert all(ax.get_window_extent().height > 200 for ax in by_title.values())


# ---- histograms --------------------------------------------------------------------


def test_histograms_have_log_count_axes_and_share_their_ranges(drawn):
    _, _, by_title = drawn
    unmanaged, callbacks = by_title["unmanaged calls"], by_title["callbacks"]
    for ax in (unmanaged, callbacks):
        assert ax.get_yscale() == "log"
        assert ax.get_xscale() == "symlog"  # the 0-ns bucket is on the axis
        assert ax.get_ylim()[0] < 1  # a bar of one call rises above the axis
    assert unmanaged.get_xlim() == callbacks.get_xlim()
    assert unmanaged.get_ylim() == callbacks.get_ylim()
    assert sum(p.get_height() for p in callbacks.patches) == SORTS * COMPARES_PER_SORT


def test_five_slow_calls_are_a_visible_bar_beside_97020_fast_ones(drawn):
    fig, path, by_title = drawn
    ax = by_title["unmanaged calls"]
    pixels = png_pixels(path)
    slow, fast = bar_holding(ax, SORT_NS), bar_holding(ax, 300)
    assert (slow.get_height(), fast.get_height()) == (SORTS, SORTS * COMPARES_PER_SORT)
    for bar in (slow, fast):
        # Mostly the bar's colour in the PNG: drawn, not a hairline (the
        # p50 and max lines may cross it).
        assert share_of_colour(bar_pixels(fig, ax, bar, pixels), bar.get_facecolor()) > 0.6


def test_zero_ns_calls_are_a_visible_bar(drawn):
    fig, path, by_title = drawn
    ax = by_title["unmanaged calls"]
    zero = bar_holding(ax, 0)
    assert (zero.get_x(), zero.get_width(), zero.get_height()) == (0, 1, QUICK_CALLS // 2)
    assert share_of_colour(bar_pixels(fig, ax, zero, png_pixels(path)), zero.get_facecolor()) > 0.6


def test_display_bins_add_whole_buckets_exactly():
    hist = fasthost.Histogram(precision=5)
    values = np.array([0, 0, 1, 7, 63, 64, 65, 300, 301, 1000, 20_000_000, 2**40], dtype=np.uint64)
    hist.record_many(values)
    lower, upper, counts = display_bins(hist, per_octave=8)
    assert counts.sum() == len(values)
    assert (lower[1:] >= upper[:-1]).all()  # no two bars overlap
    for low, high, count in zip(lower, upper, counts):
        assert count == ((values >= low) & (values < high)).sum()
        octave = 2.0 ** np.floor(np.log2(max(low, 1)))
        assert high - low == max(1.0, octave / 8) or low == 0
    # Coarse histograms: a bucket wider than a bar's range is its own bar.
    coarse = fasthost.Histogram(precision=1)
    coarse.record_many(values)
    assert display_bins(coarse)[2].sum() == len(values)
    with pytest.raises(ValueError, match="power of two"):
        display_bins(hist, per_octave=6)


def test_plot_on_an_axes_draws_the_log_count_histogram(qsort_like):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert qsort_like.plot(ax) is ax
    assert ax.get_yscale() == "log"
    assert sum(p.get_height() for p in ax.patches) == qsort_like.histogram("inclusive").total
    with pytest.raises(TypeError, match="file path or a matplotlib Axes"):
        qsort_like.plot(42)


def test_an_empty_snapshot_draws_panels_that_say_so(tmp_path):
    fasthost.start(clock="manual")
    fasthost.stop()
    fig = fasthost.snapshot().plot(tmp_path / "empty.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no unmanaged calls recorded", "no time recorded", "none recorded", "none recorded"]
    assert png_pixels(tmp_path / "empty.png").shape[2] == 3


@pytest.mark.parametrize("name", ["run.jpg", "run.svg", "run"])
def test_plot_refuses_a_path_that_is_not_a_png(qsort_like, tmp_path, name):
    with pytest.raises(ValueError, match=r"must end in \.png"):
        qsort_like.plot(tmp_path / name)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("top", [-1, 1.5, True])
def test_plot_refuses_a_bad_top(qsort_like, tmp_path, top):
    with pytest.raises(ValueError, match="top must be an int >= 0"):
        qsort_like.plot(tmp_path / "x.png", top=top)


# ---- two runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slower_strcmp():
    return record_qsort_like(strcmp_ns=600)


def test_diff_plot_has_before_and_after_curves_of_the_changed_target(qsort_like, slower_strcmp, tmp_path):
    path = tmp_path / "diff.png"
    fig = plot_diff(qsort_like, slower_strcmp, path, labels=("a.npz", "b.npz"))
    assert png_pixels(path).shape[2] == 3
    by_symbol = {ax.get_title(loc="left").split("\n")[0].split(" (")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert list(by_symbol) == ["libc.so.6!qsort", "libc.so.6!strcmp", "libm.so.6!cos", "callbacks"]
    ax = by_symbol["libc.so.6!strcmp"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"before", "after"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert set(lines["before"].get_ydata()) == {300}
    assert set(lines["after"].get_ydata()) == {600}
    np.testing.assert_array_equal(
        lines["after"].get_ydata(), percentile_curve(slower_strcmp.histogram(target="libc.so.6!strcmp"))[1]
    )
    assert "p50 300 ns \u2192 600 ns" in ax.get_title(loc="left")
    assert "before: a.npz" in fig._suptitle.get_text()
    assert "after: b.npz" in fig._suptitle.get_text()
    assert_titles_inside(fig)


def test_diff_plot_marks_targets_only_in_one_run(qsort_like, tmp_path):
    fasthost.start(clock="manual")
    fasthost.leave_runtime(STRCMP)
    fasthost.enter_runtime()
    fasthost.stop()
    only_strcmp = fasthost.snapshot()
    fig = plot_diff(qsort_like, only_strcmp, tmp_path / "gone.png", top=2)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert titles[0].startswith("libc.so.6!qsort\ngone in after")
    (qsort,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("libc.so.6!qsort")]
    assert [line.get_label() for line in qsort.get_lines()] == ["before"]
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plot_diff(qsort_like, only_strcmp, tmp_path / "diff.pdf")


def test_diff_plot_of_one_panel_keeps_long_run_names_inside_the_figure(qsort_like, tmp_path):
    names = ("a-run-with-a-long-file-name-before-the-change.npz", "another-long-name-after-the-change.npz")
    fig = plot_diff(qsort_like, qsort_like, tmp_path / "one.png", top=0, labels=names)
    assert [ax.get_title(loc="left").split("\n")[0] for ax in fig.axes if ax.get_visible()] == [
        "callbacks (Python called from native code)"
    ]
    assert_titles_inside(fig)
    pixels = png_pixels(tmp_path / "one.png")
    assert (np.concatenate([pixels[0], pixels[:, 0], pixels[:, -1]]) == 255).all()


# ---- the README's pictures ---------------------------------------------------------


def test_readme_shows_both_plots_as_small_pngs():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    for name in ("docs/plot.png", "docs/diff.png"):
        assert f"]({name})" in readme
        pixels = png_pixels(root / name)
        assert pixels.shape[0] > 400
        assert (root / name).stat().st_size < 200_000


# ---- the command line --------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(qsort_like, slower_strcmp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    qsort_like.save(folder / "a.npz")
    slower_strcmp.save(folder / "b.npz")
    return folder


def test_cli_plot_and_diff_plot_write_pngs(saved, tmp_path):
    proc = fasthost_cli("plot", saved / "a.npz", "-o", tmp_path / "a.png")
    assert proc.returncode == 0, proc.stderr
    assert png_pixels(tmp_path / "a.png").shape[:2] == (950, 1400)
    proc = fasthost_cli("diff", saved / "a.npz", saved / "b.npz", "--plot", tmp_path / "d.png")
    assert proc.returncode == 0, proc.stderr
    assert "libc.so.6!strcmp" in proc.stdout  # the text table still comes first
    assert f"fasthost: wrote {tmp_path / 'd.png'}" in proc.stderr
    assert png_pixels(tmp_path / "d.png").shape[2] == 3


def test_cli_diff_plot_of_the_bundled_example_sorting_more_words(tmp_path):
    # The README's commands on a smaller workload: a real ctypes qsort, its
    # Python comparator and strcmp.
    example = Path(__file__).resolve().parent.parent / "examples" / "qsort_callbacks.py"
    for name, words in (("before", 300), ("after", 600)):
        proc = fasthost_cli("run", "-o", tmp_path / f"{name}.npz", example, words, 2)
        assert proc.returncode == 0, proc.stderr
        assert f"sorted {words} words 2 times" in proc.stdout
    proc = fasthost_cli("diff", tmp_path / "before.npz", tmp_path / "after.npz", "--plot", tmp_path / "diff.png")
    assert proc.returncode == 0, proc.stderr
    before, after = fasthost.load(tmp_path / "before.npz"), fasthost.load(tmp_path / "after.npz")
    fig = plot_diff(before, after, tmp_path / "again.png")
    titles = [ax.get_title(loc="left").split("\n")[0] for ax in fig.axes if ax.get_visible()]
    assert titles == ["libc.so.6!qsort", "libc.so.6!strcmp", "callbacks (Python called from native code)"]
    assert png_pixels(tmp_path / "diff.png").shape == png_pixels(tmp_path / "again.png").shape


@pytest.mark.parametrize("command", [["plot", "{a}", "-o", "{out}"], ["diff", "{a}", "{a}", "--plot", "{out}"]])
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("run.jpg", "the plot is a PNG: its file name must end in .png, got "),
        ("missing/run.png", "cannot write missing/run.png: no such directory"),
    ],
)
def test_cli_refuses_an_output_that_is_not_a_writable_png(saved, tmp_path, command, out, message):
    args = [arg.format(a=saved / "a.npz", out=out) for arg in command]
    proc = fasthost_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("command", [["plot", "{bad}", "-o", "x.png"], ["diff", "{a}", "{bad}", "--plot", "x.png"]])
@pytest.mark.parametrize("bad", ["missing.npz", "corrupt.npz"])
def test_cli_plots_refuse_a_missing_or_corrupt_snapshot_in_one_line(saved, tmp_path, command, bad):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    args = [arg.format(a=saved / "a.npz", bad=tmp_path / bad) for arg in command]
    proc = fasthost_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert ("no such file" if bad == "missing.npz" else "not a fasthost snapshot") in one_error_line(proc)
    assert not (tmp_path / "x.png").exists()
    assert proc.stdout == ""


def test_plot_to_a_named_pipe_with_no_reader_fails_at_once(qsort_like, tmp_path):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="a named pipe with no reader"):
        qsort_like.plot(pipe)
    with pytest.raises(OSError, match="a named pipe with no reader"):
        plot_diff(qsort_like, qsort_like, pipe)


@pytest.mark.parametrize("command", [["plot", "a.npz", "-o", "a.png"], ["diff", "b.npz", "a.npz", "--plot", "a.png"]])
def test_cli_plot_onto_a_hard_link_of_its_snapshot_is_refused_and_keeps_it(saved, tmp_path, command):
    for name in ("a.npz", "b.npz"):
        (tmp_path / name).write_bytes((saved / name).read_bytes())
    os.link(tmp_path / "a.npz", tmp_path / "a.png")
    proc = fasthost_cli(*command, cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        one_error_line(proc)
        == "fasthost: error: cannot write a.png: it is the snapshot a.npz (writing it would destroy it)"
    )
    assert fasthost.load(tmp_path / "a.npz").totals == fasthost.load(saved / "a.npz").totals


DOLLAR_SYMBOLS = ("fmt::$LT$impl$u20$Debug$GT$::fmt", "a$\\frac{1}{2}$b", "odd$one")  # Rust's legacy mangling


def test_symbols_with_dollar_signs_are_drawn_as_written_not_as_math(tmp_path):
    addresses = [0x5000 + 16 * i for i in range(len(DOLLAR_SYMBOLS))]
    for address, symbol in zip(addresses, DOLLAR_SYMBOLS):
        fasthost.register_target(address, symbol)
    _testing.set_manual_time(1_000)
    fasthost.start(clock="manual")
    try:
        for i, address in enumerate(addresses):
            fasthost.leave_runtime(address)
            _testing.advance_manual_time(100 * (i + 1))
            fasthost.enter_runtime()
    finally:
        fasthost.stop()
        snap = fasthost.snapshot()  # names the targets: before they are unregistered
        for address in addresses:
            fasthost.unregister_target(address)
    by_title = panels(snap.plot(tmp_path / "dollars.png"))
    # What matplotlib draws: the text after its math pass ($...$ is TeX).
    legend = by_title["latency by percentile, per target"].get_legend().get_texts()
    assert sorted(text._preprocess_math(text.get_text()) for text in legend) == sorted(
        (f"{symbol} (1)", False) for symbol in DOLLAR_SYMBOLS
    )
    bars = by_title["where the time goes"].get_yticklabels()
    assert sorted(text._preprocess_math(text.get_text())[0] for text in bars) == sorted(DOLLAR_SYMBOLS)
    fig = plot_diff(snap, snap, tmp_path / "dollars-diff.png")
    titles = [ax._left_title for ax in fig.axes if ax.get_visible()]
    assert sorted(t._preprocess_math(t.get_text())[0].split("\n")[0] for t in titles) == sorted(DOLLAR_SYMBOLS)
