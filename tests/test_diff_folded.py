"""diff() across a thread's end once the session keeps no more ended
threads (FH_ENDED_THREADS_KEPT, 64): the thread, live in the earlier
snapshot, is folded into the "<n ended threads>" row of the later one, and
its own row is gone. diff() folds the earlier rows of such threads into the
earlier ended-threads row alike. Found at 040d183 as well (flaky there, in
any test whose threads end between two snapshots past the 64th)."""

import ctypes
import ctypes.util
import threading
import time

import fasthost

libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.cos.argtypes = [ctypes.c_double]
libm.cos.restype = ctypes.c_double
COS = ctypes.cast(libm.cos, ctypes.c_void_p).value
KEPT = 64


def cos_calls(n):
    for _ in range(n):
        with fasthost.unmanaged(COS):
            libm.cos(0.5)


def ended(tid):
    return not any(row["alive"] and row["tid"] == tid for row in fasthost.snapshot().threads)


def test_diff_across_a_thread_folded_after_the_earlier_snapshot(recording):
    for _ in range(KEPT + 1):  # the kept ended threads are full, one folded
        worker = threading.Thread(target=cos_calls, args=(1,))
        worker.start()
        worker.join()
    go, ready = threading.Event(), threading.Event()
    tids = []

    def last():
        tids.append(threading.get_native_id())
        cos_calls(2)
        ready.set()
        go.wait()
        cos_calls(3)

    worker = threading.Thread(target=last)
    worker.start()
    ready.wait()
    earlier = fasthost.snapshot()
    go.set()
    worker.join()
    deadline = time.monotonic() + 10
    while not ended(tids[0]) and time.monotonic() < deadline:  # the TLS destructor runs after join()
        time.sleep(0.01)
    later = fasthost.snapshot()
    interval = later.diff(earlier)
    assert interval.totals["calls"]["leave"] == 3
    assert interval.histogram("inclusive").total == 3
