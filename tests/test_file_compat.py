"""Files written before the schema refactor (format 1) load, column for column.

tests/data/snapshot-040d183.npz was written by fasthost at commit 040d183
(the last commit before the C->Python contract moved to core/fh_schema.h)
by this recording, with real libm calls and a second, ended thread:

    fasthost.start(precision=3, max_targets=1)
    3 x cos; a reverse enter/leave pair inside sin (past max_targets: the
    overflow row); one more reverse_enter (reverse_enter 2, reverse_leave 1);
    a thread making 2 x cos, joined; stop; snapshot().save(...)
"""

import ctypes
import ctypes.util
import pathlib
import threading

import fasthost
from fasthost.export import schema
from fasthost.hresult import CALL_ORDER

DATA = pathlib.Path(__file__).parent / "data"
OLD_FILE = DATA / "snapshot-040d183.npz"

libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.cos.argtypes = [ctypes.c_double]
libm.cos.restype = ctypes.c_double
COS = ctypes.cast(libm.cos, ctypes.c_void_p).value

# THREAD_DTYPE as 040d183 wrote it: the file format.
FORMAT_1_THREADS = [
    ("tid", "<u8"), ("name", "<U32"), ("alive", "|b1"),
    ("leave", "<u8"), ("enter", "<u8"), ("reverse_enter", "<u8"), ("reverse_leave", "<u8"),
    ("ok", "<u8"), ("clr_not_available", "<u8"), ("timeout", "<u8"), ("not_owner", "<u8"),
    ("abandoned", "<u8"), ("failed", "<u8"), ("out_of_memory", "<u8"), ("exit_abandoned", "<u8"),
    ("depth", "<u4"), ("max_depth", "<u4"), ("callback_calls", "<u8"), ("callback_total_ns", "<u8"),
    ("callback_exclusive_ns", "<u8"), ("callback_min_ns", "<u8"), ("callback_max_ns", "<u8"),
    ("dropped_samples", "<u8"), ("memory_bytes", "<u8"),
]  # fmt: skip


# Format 2 put the recording process's pid first.
FORMAT_2_THREADS = [("pid", "<u4"), *FORMAT_1_THREADS]


def test_thread_dtype_is_the_file_formats():
    assert schema.THREAD_DTYPE.descr == FORMAT_2_THREADS


def test_a_format_1_file_gives_its_threads_the_pid_of_its_session():
    snap = fasthost.load(OLD_FILE)
    assert snap.threads["pid"].tolist() == [snap.meta["session"]["pid"]] * len(snap.threads)


def test_a_file_written_before_the_refactor_loads_with_its_numbers():
    snap = fasthost.load(OLD_FILE)
    by_alive = {bool(row["alive"]): row for row in snap.threads}
    main, ended = by_alive[True], by_alive[False]
    assert (main["leave"], main["enter"], main["reverse_enter"], main["reverse_leave"]) == (4, 4, 2, 1)
    assert (ended["leave"], ended["enter"], ended["reverse_enter"], ended["reverse_leave"]) == (2, 2, 0, 0)
    assert main["depth"] == 1
    assert main["callback_calls"] == 1
    assert snap.totals["calls"] == {"leave": 6, "enter": 6, "reverse_leave": 1, "reverse_enter": 2}
    targets = {("overflow" if row["overflow"] else row["symbol"]): int(row["calls"]) for row in snap.targets}
    assert targets == {"libm.so.6!cos": 5, "overflow": 1}
    assert snap.precision == 3


def test_call_columns_agree_with_results_through_a_file(recording, tmp_path):
    def work():
        for _ in range(3):
            with fasthost.unmanaged(COS):
                libm.cos(0.5)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    with fasthost.unmanaged(COS):
        fasthost.reverse_enter_runtime()
        fasthost.reverse_leave_runtime()
    fasthost.reverse_enter_runtime()
    try:
        snap = fasthost.snapshot()
    finally:
        fasthost.reverse_leave_runtime()
    snap.save(tmp_path / "s.npz")
    loaded = fasthost.load(tmp_path / "s.npz")
    assert loaded == snap
    for i, call in enumerate(CALL_ORDER):
        assert loaded.threads[call].tolist() == loaded.results[:, i, :].sum(axis=1).tolist(), call
