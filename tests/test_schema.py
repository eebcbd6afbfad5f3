"""The core's record tables (core/fh_schema.h) are the one source of the data
contract: every column reaches the snapshot, its file and diff/merge, and
each column is combined by its role. The checks go over the schema, so a
column added to a core table is tested here without an edit."""

import ctypes
import threading

import numpy as np
import pytest

import fasthost
from fasthost import _core
from fasthost.export import schema
from fasthost.hresult import CALL_ORDER

libm = ctypes.CDLL("libm.so.6")
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]
COS = ctypes.cast(libm.cos, ctypes.c_void_p).value
ROLES = {"key", "counter", "gauge", "min", "max"}
SHOWN = {"heap_bytes": "memory_bytes"}  # the core's name -> the snapshot's


def activity(calls, callbacks):
    for _ in range(calls):
        with fasthost.unmanaged(COS):
            libm.cos(0.5)
    for _ in range(callbacks):
        with fasthost.unmanaged(COS):
            fasthost.reverse_enter_runtime()
            fasthost.reverse_leave_runtime()


def test_every_record_column_has_a_known_role_and_type():
    for record, columns in _core.SCHEMA.items():
        assert columns, record
        names = [name for name, _, _ in columns]
        assert len(set(names)) == len(names), record
        for name, ctype, role in columns:
            assert role in ROLES, (record, name)
            assert np.dtype(ctype).kind in "iu", (record, name)
    assert tuple(name for name, _, _ in _core.SCHEMA["thread"]) == _core.THREAD_FIELDS


def test_every_core_column_reaches_the_snapshot_dtypes():
    for name, _, _ in _core.SCHEMA["thread"]:
        if name != "folded":  # folded threads are named "<n ended threads>"
            assert SHOWN.get(name, name) in schema.THREAD_DTYPE.names, name
    assert schema.THREAD_TARGET_DTYPE.names == _core.TARGET_FIELDS
    assert schema.HIST_ROW_DTYPE.names == _core.ROW_FIELDS
    for name, _, _ in _core.SCHEMA["target"]:
        assert (name in schema.TARGET_DTYPE.names) == (name != "thread"), name


def test_a_diff_subtracts_counters_and_keeps_gauges_of_every_column(recording, tmp_path):
    # Two threads, so that thread rows are matched by identity; the later
    # snapshot goes through a file first, so the file keeps every column.
    done = threading.Event()
    worker = threading.Thread(target=lambda: (activity(3, 2), done.set()))
    worker.start()
    worker.join()
    activity(5, 4)
    earlier = fasthost.snapshot()
    fasthost.leave_runtime(COS)  # one frame left open: depth is a gauge
    activity(2, 7)
    fasthost.enter_runtime()
    path = tmp_path / "later.npz"
    fasthost.snapshot().save(path)
    later = fasthost.load(path)
    interval = later.diff(earlier)

    me = threading.get_native_id()
    (i,) = np.flatnonzero(later.threads["tid"] == me)
    (j,) = np.flatnonzero(earlier.threads["tid"] == me)
    (k,) = np.flatnonzero(interval.threads["tid"] == me)
    # Counters by the core's own roles (and the call and result totals).
    counters = {*CALL_ORDER, *schema.RESULT_FIELDS}
    counters |= {SHOWN.get(name, name) for name, _, role in _core.SCHEMA["thread"] if role == "counter"}
    assert set(schema.THREAD_COUNTERS) == counters
    for name in schema.THREAD_DTYPE.names:
        if name in counters:
            assert interval.threads[name][k] == later.threads[name][i] - earlier.threads[name][j], name
        elif name not in ("callback_min_ns", "callback_max_ns"):  # bounded by the interval's histogram
            assert interval.threads[name][k] == later.threads[name][i], name
    assert interval.threads["callback_calls"][k] == 7
    assert interval.threads["leave"][k] == 10  # 2 cos + 7 around callbacks + the open one
    # The worker made no call in between: it is not in the interval.
    assert len(interval.threads) == 1

    def pair(snap):
        return np.flatnonzero(snap.thread_targets["thread"] == np.flatnonzero(snap.threads["tid"] == me)[0])

    (p,), (q,), (r,) = pair(later), pair(earlier), pair(interval)
    for name in schema.TARGET_COUNTERS:
        assert interval.thread_targets[name][r] == later.thread_targets[name][p] - earlier.thread_targets[name][q]
    assert interval.thread_targets["calls"][r] == 10


def test_a_diff_of_snapshots_with_callbacks_and_no_targets(recording):
    # Found by the schema work: callback rows (target -1) indexed the empty
    # array of pairs.
    fasthost.reverse_enter_runtime()
    fasthost.reverse_leave_runtime()
    earlier = fasthost.snapshot()
    fasthost.reverse_enter_runtime()
    fasthost.reverse_leave_runtime()
    interval = fasthost.snapshot() - earlier
    assert interval.threads["callback_calls"].tolist() == [1]
    assert interval.histogram("callback").total == 1
    assert len(interval.thread_targets) == 0


def test_targets_over_threads_add_counters_and_keep_extremes(recording):
    worker = threading.Thread(target=activity, args=(4, 0))
    worker.start()
    worker.join()
    activity(6, 0)
    snap = fasthost.snapshot()
    (row,) = snap.targets[~snap.targets["overflow"]]
    pairs = snap.thread_targets
    for name, _, role in _core.SCHEMA["target"]:
        if role == "counter":
            assert row[name] == pairs[name].sum(), name
        elif role == "min":
            assert row[name] == pairs[name].min(), name
        elif role == "max":
            assert row[name] == pairs[name].max(), name
    assert row["calls"] == 10
    assert row["threads"] == 2


@pytest.mark.parametrize("precision", schema.PRECISIONS)
def test_the_limits_the_files_check_are_the_cores(precision):
    assert schema.bucket_rows(precision) == 65 - precision
    assert len(_core.bucket_lower_edges(precision)) - 1 == schema.bucket_rows(precision) << precision
    fasthost.start(precision=precision)
    try:
        assert _core.config()["precision"] == precision
    finally:
        fasthost.stop()
    low, high = _core.CONFIG_LIMITS["precision"]
    with pytest.raises(ValueError, match="precision"):
        fasthost.start(precision=high + 1)
    with pytest.raises(ValueError, match="precision"):
        fasthost.start(precision=low - 1)
