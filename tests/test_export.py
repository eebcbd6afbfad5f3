"""The export layer on real recordings: targets and symbols, exclusive time
on a real qsort, diff/merge, save/load, report, plot, memory."""

import ctypes
import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

import fasthost
from fasthost import HResult, _testing
from fasthost.export import storage

libc = ctypes.CDLL(None)
libm = ctypes.CDLL("libm.so.6")
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]
COS = ctypes.cast(libm.cos, ctypes.c_void_p).value
QSORT = ctypes.cast(libc.qsort, ctypes.c_void_p).value
INT_COMPARATOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))


def cos_calls(n):
    for _ in range(n):
        with fasthost.unmanaged(COS):
            libm.cos(0.5)


def qsort_with(comparator, n=20):
    values = (ctypes.c_int * n)(*range(n, 0, -1))
    with fasthost.unmanaged(QSORT):
        libc.qsort(values, n, ctypes.sizeof(ctypes.c_int), INT_COMPARATOR(comparator))
    assert list(values) == list(range(1, n + 1))


def test_targets_are_named_by_dladdr(recording):
    cos_calls(3)
    snap = fasthost.snapshot()
    (row,) = snap.targets
    assert row["symbol"] == "libm.so.6!cos"
    assert row["target"] == COS
    assert row["calls"] == 3
    assert snap.symbol(COS) == "libm.so.6!cos"


def test_registered_label_beats_dladdr_and_stays_in_the_snapshot(recording):
    fasthost.register_target(COS, "my cosine")
    try:
        cos_calls(1)
        labelled = fasthost.snapshot()
    finally:
        fasthost.unregister_target(COS)
    assert labelled.targets["symbol"].tolist() == ["my cosine"]
    assert fasthost.snapshot().targets["symbol"].tolist() == ["libm.so.6!cos"]
    assert labelled.targets["symbol"].tolist() == ["my cosine"]  # names are fixed when taken


def test_targets_sum_over_threads(recording):
    cos_calls(5)
    worker = threading.Thread(target=cos_calls, args=(7,))
    worker.start()
    worker.join()
    snap = fasthost.snapshot()
    (row,) = snap.targets
    assert row["calls"] == 12
    assert row["threads"] == 2
    per_thread = snap.thread_targets
    assert sorted(per_thread["calls"].tolist()) == [5, 7]
    assert row["total_ns"] == per_thread["total_ns"].sum()
    assert row["min_ns"] == per_thread["min_ns"].min()
    assert row["max_ns"] == per_thread["max_ns"].max()
    assert snap.histogram(target=COS).total == 12
    assert snap.histogram(target="libm.so.6!cos", thread=worker.native_id).total == 7
    assert snap.histogram(thread="MainThread").total == 5


def test_exclusive_time_is_inclusive_minus_the_sleeping_comparator(recording):
    sleep_s = 0.002

    def compare(a, b):
        with fasthost.callback():
            time.sleep(sleep_s)
            return a[0] - b[0]

    qsort_with(compare, n=6)
    snap = fasthost.snapshot()
    (row,) = snap.targets
    callbacks = int(snap.threads["callback_calls"].sum())
    callback_ns = snap.totals["callback_ns"]
    assert callbacks >= 5
    assert callback_ns >= callbacks * sleep_s * 1e9
    # Every callback was made directly inside qsort, so its time is exactly
    # what separates inclusive from exclusive (each ns conversion may round
    # down by one).
    assert abs(int(row["total_ns"]) - int(row["exclusive_ns"]) - callback_ns) <= callbacks + 1
    assert row["exclusive_ns"] < row["total_ns"]
    exclusive, inclusive = snap.histogram("exclusive"), snap.histogram("inclusive")
    assert exclusive.total == inclusive.total == 1
    assert exclusive.quantile(0.5) <= row["exclusive_ns"] * (1 + 2**-5)
    assert snap.histogram("callback").total == callbacks


def test_exclusive_histogram_is_exact_on_the_manual_clock(manual_clock):
    # Each comparison: 7 ns of native qsort work, then a 1000 ns callback.
    def compare(a, b):
        manual_clock.advance_manual_time(7)
        with fasthost.callback():
            manual_clock.advance_manual_time(1000)
            return a[0] - b[0]

    for _ in range(3):
        qsort_with(compare, n=10)
    cos_calls(2)  # frames without callbacks: exclusive == inclusive == 0
    snap = fasthost.snapshot()
    callbacks = snap.calls("reverse_enter") // 3
    qsort_row = snap.targets[snap.targets["target"] == QSORT][0]
    assert qsort_row["exclusive_ns"] == 3 * 7 * callbacks
    assert qsort_row["total_ns"] == 3 * 1007 * callbacks
    exclusive = snap.histogram("exclusive", target=QSORT)
    assert exclusive.total == 3
    assert exclusive.quantile(0.5) == pytest.approx(7 * callbacks, rel=2**-5)
    everything = snap.histogram("exclusive")
    assert everything.total == 5
    assert everything.quantile(0) == 0
    callback = snap.histogram("callback")
    assert callback.total == 3 * callbacks
    assert callback.min == callback.max == 1000


def test_diff_counts_exactly_the_calls_in_between(recording):
    cos_calls(10)
    qsort_with(lambda a, b: a[0] - b[0])
    before = fasthost.snapshot()
    cos_calls(25)
    after = fasthost.snapshot()
    delta = after.diff(before)
    assert delta.totals["calls"] == {"leave": 25, "enter": 25, "reverse_leave": 0, "reverse_enter": 0}
    (row,) = delta.targets  # qsort made no call in between, so it is gone
    assert row["target"] == COS
    assert row["calls"] == 25
    assert delta.histogram().total == 25
    assert delta.histogram("callback").total == 0
    cos_before = before.targets[before.targets["target"] == COS][0]
    cos_after = after.targets[after.targets["target"] == COS][0]
    assert row["total_ns"] == cos_after["total_ns"] - cos_before["total_ns"]
    assert (after - before) == delta


def test_diff_refuses_other_sessions_and_reversed_order(recording):
    cos_calls(2)
    first = fasthost.snapshot()
    cos_calls(2)
    second = fasthost.snapshot()
    with pytest.raises(ValueError, match="other way round"):
        first.diff(second)
    fasthost.reset()
    cos_calls(1)
    with pytest.raises(ValueError, match="one session"):
        fasthost.snapshot().diff(first)
    with pytest.raises(TypeError):
        first.diff("snapshot")


def test_merge_sums_counts_and_histograms_exactly(recording):
    cos_calls(4)
    first = fasthost.snapshot()
    fasthost.reset()
    cos_calls(6)
    qsort_with(lambda a, b: a[0] - b[0])
    second = fasthost.snapshot()
    merged = fasthost.merge([first, second])
    assert merged.totals["calls"]["leave"] == first.totals["calls"]["leave"] + second.totals["calls"]["leave"]
    assert len(merged.threads) == 2
    (cos_row,) = merged.targets[merged.targets["target"] == COS]
    assert cos_row["calls"] == 10
    assert merged.histogram(target=COS) == first.histogram(target=COS).merge(second.histogram(target=COS))
    assert merged.histogram("callback") == second.histogram("callback")
    with pytest.raises(ValueError, match="one session"):
        merged.diff(first)


def test_merge_refuses_different_precisions_and_empty_lists(recording):
    cos_calls(1)
    five = fasthost.snapshot()
    fasthost.stop()
    fasthost.start(clock="monotonic", precision=6)
    cos_calls(1)
    six = fasthost.snapshot()
    with pytest.raises(ValueError, match="different precisions"):
        fasthost.merge([five, six])
    with pytest.raises(ValueError, match="at least one"):
        fasthost.merge([])


def test_save_and_load_round_trip_is_equal(recording, tmp_path):
    cos_calls(3)
    qsort_with(lambda a, b: a[0] - b[0])
    fasthost.leave_runtime(0xDEAD)  # a frame left open, and an error
    fasthost.reverse_leave_runtime()
    snap = fasthost.snapshot()
    fasthost.enter_runtime()
    path = tmp_path / "run.npz"
    snap.save(path)
    loaded = fasthost.load(path)
    assert loaded == snap
    assert loaded.targets.tolist() == snap.targets.tolist()
    assert loaded.histogram("exclusive") == snap.histogram("exclusive")
    assert loaded.report() == snap.report()
    assert loaded.totals["results"]["HOST_E_NOT_OWNER"] == 1


def test_load_rejects_a_truncated_file(recording, tmp_path):
    cos_calls(3)
    path = tmp_path / "run.npz"
    fasthost.snapshot().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a fasthost snapshot"):
        fasthost.load(path)


def test_load_rejects_a_file_from_another_program(tmp_path):
    foreign = tmp_path / "other.npz"
    np.savez(foreign, x=np.arange(3))
    with pytest.raises(ValueError, match="no header"):
        fasthost.load(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        fasthost.load(text)
    with pytest.raises(FileNotFoundError):
        fasthost.load(tmp_path / "missing.npz")


def rewrite(path, **changes):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_load_rejects_a_newer_format_version(recording, tmp_path):
    cos_calls(1)
    path = tmp_path / "run.npz"
    fasthost.snapshot().save(path)
    with np.load(path) as npz:
        header = json.loads(str(npz["header"]))
    header["version"] = 99
    rewrite(path, header=np.array(json.dumps(header)))
    with pytest.raises(ValueError, match="newer fasthost"):
        fasthost.load(path)


def test_load_reads_files_written_before_callbacks_had_self_time(recording, tmp_path):
    qsort_with(lambda a, b: a[0] - b[0])
    snap = fasthost.snapshot()
    path = tmp_path / "old.npz"
    snap.save(path)
    # Those files had no pid column either (format 1).
    old_fields = [name for name in snap.threads.dtype.names if name not in ("callback_exclusive_ns", "pid")]
    old = np.zeros(len(snap.threads), dtype=[(n, snap.threads.dtype[n]) for n in old_fields])
    for name in old_fields:
        old[name] = snap.threads[name]
    rewrite(path, threads=old)
    loaded = fasthost.load(path)
    assert loaded.threads["callback_calls"].tolist() == snap.threads["callback_calls"].tolist()
    # All that an older file can say: its callbacks' inclusive time.
    assert loaded.threads["callback_exclusive_ns"].tolist() == snap.threads["callback_total_ns"].tolist()
    assert loaded.threads["pid"].tolist() == [os.getpid()] * len(snap.threads)  # the session's
    assert loaded.targets.tolist() == snap.targets.tolist()


def test_load_rejects_inconsistent_arrays(recording, tmp_path):
    cos_calls(1)
    path = tmp_path / "run.npz"
    snap = fasthost.snapshot()
    snap.save(path)
    rows = snap.hist_rows.copy()
    rows["thread"] = 5
    rewrite(path, hist_rows=rows)
    with pytest.raises(ValueError, match="corrupt snapshot"):
        fasthost.load(path)
    snap.save(path)
    with zipfile.ZipFile(path) as original:
        members = {name: original.read(name) for name in original.namelist()}
    members["threads.npy"] = b"garbage"
    with zipfile.ZipFile(path, "w") as broken:
        for name, data in members.items():
            broken.writestr(name, data)
    with pytest.raises(ValueError, match="'threads' member is not a numpy array"):
        fasthost.load(path)


def test_report_names_targets_errors_and_percentiles(recording):
    cos_calls(50)
    qsort_with(lambda a, b: a[0] - b[0])
    fasthost.enter_runtime()  # HOST_E_NOT_OWNER
    text = fasthost.snapshot().report()
    assert "libm.so.6!cos" in text
    assert "libc.so.6!qsort" in text
    assert "HOST_E_NOT_OWNER 1" in text
    assert "p99" in text
    assert "|#" in text
    lines = text.splitlines()
    assert lines[0].startswith("fasthost: 1 thread(s), ")


def test_to_dict_is_json_ready_with_percentiles(recording):
    cos_calls(100)
    summary = fasthost.snapshot().to_dict(top=5)
    encoded = json.loads(json.dumps(summary))
    latency = encoded["latency"]["inclusive"]
    assert latency["count"] == 100
    assert latency["min_ns"] <= latency["p50_ns"] <= latency["p90_ns"] <= latency["p99_ns"] <= latency["max_ns"]
    assert set(latency) >= {"p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"}
    (target,) = encoded["targets"]
    assert target["symbol"] == "libm.so.6!cos"
    assert target["calls"] == 100
    assert target["p99_ns"] > 0
    assert encoded["latency"]["callback"]["p50_ns"] is None  # no callbacks: None, not NaN
    assert encoded["errors"] == {}


def test_plot_writes_a_valid_png(recording, tmp_path):
    pytest.importorskip("matplotlib")
    cos_calls(200)
    qsort_with(lambda a, b: a[0] - b[0])
    path = tmp_path / "latency.png"
    fasthost.snapshot().plot(path)
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 600
        assert image.size[1] > 300
        image.verify()


def test_plot_draws_on_a_given_axes(recording):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    cos_calls(10)
    ax = Figure().subplots()
    assert fasthost.snapshot().plot(ax) is ax
    assert len(ax.patches) >= 1
    assert ax.get_xscale() == "log"
    with pytest.raises(TypeError, match="file path or a matplotlib Axes"):
        fasthost.snapshot().plot(42)


def test_overflow_row_folds_targets_past_max_targets():
    fasthost.start(clock="monotonic", max_targets=4)
    try:
        for address in range(0x1000, 0x1000 + 10):
            fasthost.leave_runtime(address)
            fasthost.enter_runtime()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert len(snap.targets) == 5
    overflow = snap.targets[snap.targets["overflow"]]
    assert overflow["calls"].tolist() == [6]
    assert overflow["symbol"].tolist() == ["overflow"]
    assert snap.targets[-1]["overflow"]  # listed last
    assert snap.histogram(target="overflow").total == 6
    assert snap.totals["targets"] == 4


def test_histogram_rejects_unknown_kind_target_and_thread(recording):
    cos_calls(1)
    snap = fasthost.snapshot()
    with pytest.raises(ValueError, match="kind must be one of"):
        snap.histogram("total")
    with pytest.raises(ValueError, match="no target"):
        snap.histogram(target=0x1234)
    with pytest.raises(ValueError, match="no thread"):
        snap.histogram(thread="nobody")
    with pytest.raises(ValueError, match="per thread"):
        snap.histogram("callback", target=COS)
    with pytest.raises(TypeError):
        snap.histogram(target=1.5)


def test_snapshot_arrays_are_read_only(recording):
    cos_calls(1)
    snap = fasthost.snapshot()
    with pytest.raises(ValueError):
        snap.threads["leave"][0] = 5
    with pytest.raises(ValueError):
        snap.targets["calls"][0] = 5


def test_memory_usage_is_within_budget_per_thread_and_target():
    fasthost.start(clock="monotonic")
    try:
        _testing.run_native_threads(1, 10, 0x5000, "targets", 1)
        _testing.run_native_threads(1, 200, 0x9000, "targets", 100)
        usage = fasthost.memory_usage()
    finally:
        fasthost.stop()
    rows = usage["threads"]
    assert usage["total_bytes"] == rows["bytes"].sum()
    one, hundred = sorted(rows[rows["in_session"]], key=lambda r: r["targets"])[-2:]
    assert one["targets"] == 1
    assert hundred["targets"] == 100
    # docs/protocol.md §5: at most 64 KiB per thread plus 4 KiB per active target.
    assert one["bytes"] <= 64 * 1024 + 4 * 1024
    assert hundred["bytes"] <= 64 * 1024 + 100 * 4 * 1024
    assert hundred["bytes"] > one["bytes"]


def test_snapshot_threads_have_the_spec_fields(recording):
    fasthost.leave_runtime(1)
    fasthost.enter_runtime()
    assert fasthost.enter_runtime() is HResult.HOST_E_NOT_OWNER
    (row,) = fasthost.snapshot().threads
    spec = ("tid", "name", "alive", "leave", "enter", "reverse_enter", "reverse_leave", "timeout", "not_owner")
    spec += ("abandoned", "failed", "out_of_memory", "depth", "max_depth")
    assert set(spec) <= set(row.dtype.names)
    assert (row["leave"], row["enter"], row["not_owner"], row["max_depth"]) == (1, 2, 1, 1)


def test_a_recording_of_callbacks_only_reports(recording):
    """A native thread calling into Python, with no unmanaged call at all."""
    assert fasthost.reverse_enter_runtime() is fasthost.HResult.S_OK
    assert fasthost.reverse_leave_runtime() is fasthost.HResult.S_OK
    snap = fasthost.snapshot()
    assert snap.histogram("inclusive").total == 0
    assert snap.histogram("callback").total == 1
    assert "callbacks: n=1" in snap.report()


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0 ns"), (999.4, "999 ns"), (999.6, "1 us"), (1500, "1.5 us"), (99_950, "100 us"), (999_600, "1 ms"),
     (999_600_000, "1 s"), (3.1e9, "3.1 s"), (None, "-")],
)  # fmt: skip
def test_durations_read_in_the_unit_that_keeps_them_below_1000(ns, text):
    from fasthost.export.report import format_ns

    assert format_ns(ns) == text


def test_recorded_time_counts_each_nanosecond_once_where_inclusive_sums_count_nesting(tmp_path):
    # The bundled example nests U (qsort) -> M (comparator) -> U (strcmp):
    # qsort's frames hold everything recorded, so the recorded time is
    # exactly their inclusive total; the inclusive sum adds strcmp again.
    import subprocess
    import sys
    from pathlib import Path

    from fasthost.export.report import format_ns

    example = Path(__file__).resolve().parent.parent / "examples" / "qsort_callbacks.py"
    out = tmp_path / "run.npz"
    subprocess.run(
        [sys.executable, "-m", "fasthost", "run", "-o", str(out), str(example), "300", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    snap = fasthost.load(out)
    totals = snap.totals
    by_symbol = {str(row["symbol"]): row for row in snap.targets}
    qsort, strcmp = by_symbol["libc.so.6!qsort"], by_symbol["libc.so.6!strcmp"]
    assert totals["recorded_ns"] == int(qsort["total_ns"])
    assert totals["recorded_ns"] == totals["exclusive_ns"] + totals["callback_exclusive_ns"]
    assert totals["unmanaged_ns"] == int(qsort["total_ns"]) + int(strcmp["total_ns"])
    assert f"time:   {format_ns(totals['recorded_ns'])} recorded:" in snap.report()


# ---- a write that fails loses nothing -----------------------------------------------


def _pairs_on(targets: range) -> fasthost.Snapshot:
    """A snapshot of one leave/enter pair on each of ``targets``."""
    for target in targets:
        fasthost.leave_runtime(target)
        fasthost.enter_runtime()
    return fasthost.snapshot()


def test_a_save_that_fails_midway_leaves_the_old_file_as_it_was(recording, tmp_path):
    old = tmp_path / "run.npz"
    _pairs_on(range(0x1000, 0x1003)).save(old)
    fasthost.reset()
    _pairs_on(range(0x10000, 0x10000 + 16 * 900, 16)).save(tmp_path / "bigger.npz")
    limit = old.stat().st_size // 2
    # A real failure midway: a file-size limit smaller than either file,
    # so the write of the bigger snapshot stops with EFBIG.
    script = (
        "import resource, signal, sys, fasthost\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"bigger = fasthost.load({str(tmp_path / 'bigger.npz')!r})\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "try:\n"
        f"    bigger.save({str(old)!r})\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["refused", str(errno.EFBIG)]
    kept = fasthost.load(old)
    assert kept.totals["transitions"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bigger.npz", "run.npz"]  # nothing left over


def test_a_save_interrupted_by_an_exception_leaves_the_old_file_as_it_was(recording, tmp_path):
    old = tmp_path / "run.npz"
    _pairs_on(range(0x1000, 0x1003)).save(old)
    before = old.read_bytes()

    def write_half_and_fail():
        with storage.open_for_writing(old) as f:
            f.write(b"half a snapshot")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_half_and_fail()
    assert old.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_saving_over_a_file_keeps_its_permissions(recording, tmp_path):
    path = tmp_path / "run.npz"
    _pairs_on(range(0x1000, 0x1002)).save(path)
    path.chmod(0o640)
    _pairs_on(range(0x2000, 0x2003)).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert fasthost.load(path).totals["transitions"] == 2 + 3


def test_saving_through_a_symbolic_link_replaces_the_file_it_points_to(recording, tmp_path):
    real = tmp_path / "runs" / "latest.npz"
    real.parent.mkdir()
    _pairs_on(range(0x1000, 0x1002)).save(real)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    _pairs_on(range(0x2000, 0x2003)).save(link)
    assert link.is_symlink()
    assert link.resolve() == real
    assert fasthost.load(real).totals["transitions"] == 2 + 3


def test_saving_to_a_device_writes_into_it_and_leaves_the_device_alone(recording):
    before = os.stat("/dev/null")
    _pairs_on(range(0x1000, 0x1002)).save("/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
