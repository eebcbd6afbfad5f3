"""The stack mirrors the real nesting (README, "Semantics"): whatever the
user does with start/stop/reset, captures, other profilers, shared context
managers and threads, a thread's depth() returns to 0 after its outermost
close and every new session gives it its full max_depth."""

import cProfile
import ctypes
import ctypes.util
import functools
import math
import queue
import sys
import threading
import time

import pytest

import fasthost
from fasthost import HResult, _testing

from .conftest import drain_stack

LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def main_row(snap):
    (row,) = [r for r in snap.threads if r["alive"] and r["name"] == "MainThread"]
    return row


# ---- the raw protocol --------------------------------------------------------


def test_a_close_after_stop_pops_the_frame_opened_while_recording():
    fasthost.start(clock="monotonic")
    assert fasthost.leave_runtime(0x10) is HResult.S_OK
    fasthost.stop()
    assert fasthost.enter_runtime() is HResult.HOST_E_CLRNOTAVAILABLE
    assert fasthost.depth() == 0
    assert fasthost.snapshot().thread_targets["calls"].sum() == 0  # popped, not recorded


def test_an_open_while_stopped_and_its_close_disturb_nothing_across_a_start():
    fasthost.start(clock="monotonic")
    try:
        assert fasthost.leave_runtime(0x10) is HResult.S_OK  # outer, recorded
        fasthost.stop()
        assert fasthost.leave_runtime(0x20) is HResult.HOST_E_CLRNOTAVAILABLE  # inner, unrecorded
        fasthost.start(clock="monotonic")
        assert fasthost.leave_runtime(0x30) is HResult.S_OK  # innermost, new session
        assert fasthost.depth() == 3
        assert fasthost.enter_runtime() is HResult.S_OK  # 0x30
        assert fasthost.enter_runtime() is HResult.HOST_E_CLRNOTAVAILABLE  # 0x20: never recorded
        assert fasthost.enter_runtime() is HResult.HOST_E_ABANDONED  # 0x10: an older session's
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert [int(t) for t in snap.thread_targets["target"]] == [0x30]


def test_a_new_session_gives_full_max_depth_after_incorrect_nesting():
    """Opens that are never closed (a greenlet switched away, a generator
    dropped) use no capacity of the next session."""
    fasthost.start(clock="monotonic", max_depth=4)
    try:
        for _ in range(4):
            fasthost.leave_runtime(1)  # never closed
        assert fasthost.leave_runtime(1) is HResult.E_OUTOFMEMORY
        fasthost.reset()
        for _ in range(4):
            assert fasthost.leave_runtime(2) is HResult.S_OK
        assert fasthost.leave_runtime(2) is HResult.E_OUTOFMEMORY
    finally:
        fasthost.stop()
    assert main_row(fasthost.snapshot())["out_of_memory"] == 1
    assert fasthost.depth() == 10
    drain_stack()


def test_many_sessions_of_leaked_frames_keep_full_capacity_and_bounded_memory():
    before = None
    for cycle in range(2000):
        fasthost.start(clock="monotonic", max_depth=8)
        for _ in range(8):
            assert fasthost.leave_runtime(cycle) is HResult.S_OK
        fasthost.leave_runtime(0)  # refused, still nests
        fasthost.stop()
        fasthost.leave_runtime(0)  # unrecorded, still nests
        if cycle == 10:
            before = fasthost.memory_usage()["total_bytes"]
    assert fasthost.depth() == 2000 * 10
    assert fasthost.memory_usage()["total_bytes"] <= before  # set-aside frames are runs, not copies
    drain_stack()


def test_not_owner_mismatches_do_not_eat_capacity():
    fasthost.start(clock="monotonic", max_depth=2)
    try:
        fasthost.leave_runtime(1)
        for _ in range(100):
            assert fasthost.reverse_leave_runtime() is HResult.HOST_E_NOT_OWNER
        assert fasthost.leave_runtime(1) is HResult.S_OK
        assert fasthost.enter_runtime() is HResult.S_OK
        assert fasthost.enter_runtime() is HResult.S_OK
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()


def test_stop_and_start_while_threads_have_frames_in_flight():
    """Real threads open and close correctly nested frames while the main
    thread stops, starts and resets; each ends at depth 0 with full capacity."""
    stop = threading.Event()
    errors = []
    depths = []

    def worker():
        try:
            while not stop.is_set():
                for _ in range(3):
                    fasthost.leave_runtime(0x100)
                    fasthost.reverse_enter_runtime()
                for _ in range(3):
                    fasthost.reverse_leave_runtime()
                    fasthost.enter_runtime()
                if fasthost.depth() != 0:
                    errors.append(fasthost.depth())
                    return
            depths.append(fasthost.depth())
            # full capacity in a session of its own
            results = [fasthost.leave_runtime(1) for _ in range(8)]
            results += [fasthost.enter_runtime() for _ in range(8)]
            errors.extend(r for r in results if r not in (HResult.S_OK, HResult.HOST_E_CLRNOTAVAILABLE))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    fasthost.start(clock="monotonic", max_depth=8)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between almost any two calls
    for thread in threads:
        thread.start()
    try:
        for i in range(300):
            time.sleep(0.0005)  # let the workers run between two control calls
            (fasthost.stop, lambda: fasthost.start(clock="monotonic", max_depth=8), fasthost.reset, fasthost.snapshot)[
                i % 4
            ]()
    finally:
        fasthost.start(clock="monotonic", max_depth=8)
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(switch_interval)
        fasthost.stop()
    assert errors == []
    assert depths == [0, 0, 0, 0]


def test_native_threads_stop_start_with_frames_in_flight_are_exact():
    """Native pthreads that never held the GIL, each with a frame open
    across a stop/start: their closes pop it (abandoned), nothing leaks."""
    fasthost.start(clock="monotonic")
    try:
        held = [_testing.HeldFrame(0x8000 + i) for i in range(4)]
        fasthost.stop()
        fasthost.start(clock="monotonic")
        assert [h.close() for h in held] == [HResult.HOST_E_ABANDONED] * 4
        _testing.run_native_threads(4, 1000, 0x1)
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert int(snap.thread_targets["calls"].sum()) == 4000
    assert int(snap.threads["depth"].sum()) == 0


def test_bool_is_not_a_target():
    with pytest.raises(TypeError, match="bool"):
        fasthost.leave_runtime(True)
    with pytest.raises(TypeError, match="bool"):
        fasthost.unmanaged(False)
    assert fasthost.depth() == 0


# ---- context managers shared by threads ----------------------------------------------

SLOW = fasthost.unmanaged(0x5100)  # a module-level constant, as users write it
CALLBACK = fasthost.callback()


def test_one_unmanaged_object_shared_by_a_hundred_threads_records_every_call(recording):
    barrier = threading.Barrier(100)

    def work():
        for _ in range(3):
            with SLOW, CALLBACK, SLOW:
                barrier.wait()  # all hundred threads are inside the same objects at once

    threads = [threading.Thread(target=work) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = fasthost.snapshot()
    assert int(snap.thread_targets["calls"].sum()) == 600
    assert int(snap.threads["callback_calls"].sum()) == 300
    assert snap.totals["errors"] == 0
    assert int(snap.threads["abandoned"].sum()) == 0


def test_one_unmanaged_object_entered_recursively_past_64_levels(recording):
    def nest(level):
        if level:
            with SLOW:
                nest(level - 1)

    nest(300)  # more than max_depth: the refused levels still pair
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert int(snap.thread_targets["calls"].sum()) == 256
    assert main_row(snap)["out_of_memory"] == 300 - 256


# ---- captures ---------------------------------------------------------------------


@pytest.mark.parametrize("blocker", ["queue.get", "Event.wait", "lock.acquire"])
def test_periodic_capture_while_a_worker_blocks_in_a_builtin_leaves_nothing_behind(blocker):
    """A service profiled in periods: every capture ends while a worker is
    inside a builtin it called under that capture, which returns between
    captures. A thousand cycles, and the worker never accumulates frames or
    hook state."""
    cycles = 1000
    inbox: queue.Queue = queue.Queue()
    event, lock = threading.Event(), threading.Lock()
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    depths = []

    def wait_once():
        if blocker == "queue.get":
            inbox.get()
        elif blocker == "Event.wait":
            event.wait()
            event.clear()
        else:
            lock.acquire()  # held by the main thread until the capture ended
            lock.release()

    def worker():
        for _ in range(cycles):
            go.acquire()
            wait_once()
            depths.append(fasthost.depth())
            done.release()

    def blocked():
        if blocker == "queue.get":
            return bool(inbox.not_empty._waiters)
        if blocker == "Event.wait":
            return bool(event._cond._waiters)
        frame = sys._current_frames().get(thread.ident)
        return frame is not None and frame.f_code.co_name == "wait_once"

    thread = threading.Thread(target=worker)
    thread.start()
    for _ in range(cycles):
        if blocker == "lock.acquire":
            lock.acquire()
        with fasthost.capture_builtins():
            go.release()
            while not blocked():
                time.sleep(0.0001)
            time.sleep(0.0002)  # into the builtin (a short wait only lets the test pass)
        if blocker == "queue.get":
            inbox.put(1)
        elif blocker == "Event.wait":
            event.set()
        else:
            lock.release()
        done.acquire()
    thread.join()
    assert max(depths) == 0, f"{sum(d > 0 for d in depths)} cycles left frames behind"
    fasthost.start(clock="monotonic", max_depth=4)
    try:
        results = [fasthost.leave_runtime(1) for _ in range(4)] + [fasthost.enter_runtime() for _ in range(4)]
    finally:
        fasthost.stop()
    assert set(results) == {HResult.S_OK}


def test_a_capture_that_ends_while_a_worker_is_inside_a_builtin_closes_that_frame(recording):
    inbox: queue.Queue = queue.Queue()
    inside = threading.Event()
    depth_after = []

    def worker():
        inside.set()
        inbox.get()  # opened under the capture, returns after it ended
        depth_after.append(fasthost.depth())

    thread = threading.Thread(target=worker, name="blocked")
    with fasthost.capture_builtins():
        thread.start()
        inside.wait()
        _wait_until_blocked(inbox)
    inbox.put(None)
    thread.join()
    assert depth_after == [0]
    # The frame was closed when queue.get returned: recorded with its real duration.
    snap = fasthost.snapshot()
    worker_row = snap.threads[snap.threads["tid"] == thread.native_id]
    assert int(worker_row["abandoned"].sum()) == 0


def _wait_until_blocked(inbox):
    """Until the worker waits inside queue.get (its not_empty condition has a waiter)."""
    for _ in range(10_000):
        if inbox.not_empty._waiters:
            return
        threading.Event().wait(0.001)
    raise AssertionError("the worker never blocked in queue.get")


def test_builtin_calls_nested_deeper_than_64_are_all_recorded():
    calls = []
    fasthost.start(clock="monotonic", max_depth=1024)  # each level: a U frame and its callback

    def key(value):
        calls.append(value)
        if value > 0:
            sorted([value - 1], key=key)
        return value

    try:
        with fasthost.capture_builtins():
            sorted([150], key=key)
        assert fasthost.depth() == 0
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    sorted_rows = [row for row in snap.targets if str(row["symbol"]) == "sorted"]
    assert len(sorted_rows) == 1
    assert sorted_rows[0]["calls"] == 151
    # each level a U frame and its callback, and the innermost append
    assert int(snap.threads["max_depth"].max()) == 2 * 151 + 1


def test_builtin_calls_nested_deeper_than_max_depth_pair_and_leave_nothing():
    fasthost.start(clock="monotonic", max_depth=20)
    try:
        with fasthost.capture_builtins():
            functools.reduce(lambda acc, x: acc + sum([x]) + _nest_sorted(100), [1, 2], 0)
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()
    assert main_row(fasthost.snapshot())["out_of_memory"] > 0


def _nest_sorted(levels):
    if levels:
        sorted([levels], key=lambda v: _nest_sorted(v - 1))
    return 0


def test_cprofile_enabled_inside_a_capture_leaves_no_frame():
    profiler = cProfile.Profile()
    with fasthost.capture_builtins():
        math.cos(0.0)
        profiler.enable()  # takes the hook mid-call: its C_RETURN goes to cProfile
        math.sin(0.0)
    profiler.disable()
    assert fasthost.depth() == 0
    fasthost.start(clock="monotonic", max_depth=2)
    try:
        assert [fasthost.leave_runtime(1), fasthost.leave_runtime(1)] == [HResult.S_OK] * 2
        assert [fasthost.enter_runtime(), fasthost.enter_runtime()] == [HResult.S_OK] * 2
    finally:
        fasthost.stop()


@pytest.mark.parametrize("replacement", [None, "python-hook"])
def test_setprofile_inside_a_capture_leaves_no_frame(replacement):
    def python_hook(frame, event, arg):
        return None

    with fasthost.capture_builtins():
        sys.setprofile(python_hook if replacement else None)
    sys.setprofile(None)
    assert fasthost.depth() == 0


def test_capture_records_into_a_running_session_and_leaves_it_balanced(recording):
    for _ in range(100):
        with fasthost.capture_builtins():
            math.cos(1.0)
            assert fasthost.depth() == 0
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert snap.totals["errors"] == 0
    cos = [row for row in snap.targets if str(row["symbol"]) == "math.cos"]
    assert cos[0]["calls"] == 100


def test_ctypes_call_refused_at_max_depth_still_pairs(recording):
    fasthost.stop()
    fasthost.start(clock="monotonic", max_depth=1)
    import fasthost.ctypes as fh_ctypes

    libc = fh_ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("c")))
    libc.abs.argtypes = [ctypes.c_int]
    with fasthost.unmanaged(0x42):
        assert libc.abs(-3) == 3  # refused (E_OUTOFMEMORY), closed as unrecorded
        assert fasthost.depth() == 1
    assert fasthost.depth() == 0
