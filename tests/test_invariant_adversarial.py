"""Adversarial tests: the nesting invariant under real threads, real hooks,
real ctypes calls, forks and concurrent control calls.

Each was written to break the invariant; the ones kept here are regression
guards."""

import ctypes
import ctypes.util
import math
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fasthost
from fasthost import HResult, _core, _testing
from fasthost.capture.builtins import _threading_profile_hook

from .conftest import drain_stack

LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
CB = fasthost.callback()  # bound once: `fasthost.callback` goes through a module __getattr__


def _run_thread(target, *args, name=None):
    thread = threading.Thread(target=target, args=args, name=name)
    thread.start()
    thread.join()
    return thread


def _full_capacity(max_depth=4):
    fasthost.start(clock="monotonic", max_depth=max_depth)
    try:
        results = [fasthost.leave_runtime(1) for _ in range(max_depth)]
        results.append(fasthost.leave_runtime(1))
        results += [fasthost.enter_runtime() for _ in range(max_depth + 1)]
    finally:
        fasthost.stop()
    return results


# =====================================================================================
# BUGS (these fail)
# =====================================================================================


def test_draining_hook_does_not_close_the_pending_builtin_at_an_inner_builtins_return():
    """A worker is inside sorted(key=...) when the capture ends. While the
    hook drains it opens nothing, but the first builtin that *returns*
    inside the key function closes a frame anyway: here a callback (M)
    frame is on top, the close is refused (HOST_E_NOT_OWNER), the hook
    believes sorted's frame closed and uninstalls itself, and sorted's
    frame stays open forever (clause a)."""
    lock = threading.Lock()
    lock.acquire()
    inside = threading.Event()
    result = {}

    def key(x):
        if x == 0:
            inside.set()
            lock.acquire()  # the capture ends while sorted() is pending
        with CB:  # e.g. a ctypes/cffi callback frame
            abs(x)  # a builtin returning while the hook drains
        return x

    def worker():
        sorted([0, 1, 2], key=key)
        result["depth"] = fasthost.depth()  # after the outermost close

    fasthost.start(clock="monotonic")
    thread = threading.Thread(target=worker)
    try:
        with fasthost.capture_builtins():
            thread.start()
            inside.wait()
            time.sleep(0.05)  # into lock.acquire
        lock.release()
        thread.join()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    worker_row = snap.threads[snap.threads["tid"] == thread.native_id]
    assert result["depth"] == 0
    assert int(worker_row["not_owner"].sum()) == 0


def test_draining_hook_records_the_pending_builtin_with_its_real_duration(manual_clock):
    """Same situation without another adapter: the pending sorted() frame is
    closed at the return of the first builtin inside its key function,
    not when sorted() returns, so time spent inside sorted() afterwards is
    missing from its duration."""
    lock = threading.Lock()
    lock.acquire()
    inside = threading.Event()

    def key(x):
        if x == 0:
            inside.set()
            lock.acquire()
        else:
            abs(x)  # its C_RETURN closes sorted()'s frame (wrong)
            manual_clock.advance_manual_time(1_000_000)  # 1 ms inside sorted()
        return x

    thread = threading.Thread(target=lambda: sorted([0, 1], key=key))
    with fasthost.capture_builtins():
        thread.start()
        inside.wait()
        time.sleep(0.05)
    lock.release()
    thread.join()
    fasthost.stop()
    snap = fasthost.snapshot()
    rows = [r for r in snap.targets if str(r["symbol"]) == "sorted"]
    assert len(rows) == 1
    assert rows[0]["calls"] == 1
    assert rows[0]["total_ns"] >= 1_000_000, "sorted()'s frame was closed before sorted() returned"


def test_ended_threads_fold_into_one_row_even_when_their_targets_together_exceed_max_targets():
    """Threads that each call one target of their own: past max_targets
    distinct targets the folded state cannot take another (fh_target_lookup
    hands back the overflow record, which fh_thread_fold rejects), so
    every later thread keeps a row of its own: memory is not bounded
    ('past 64 ended threads per session they are folded into one row')."""
    fasthost.start(clock="monotonic", max_targets=4)
    try:

        def work(i):
            for _ in range(3):
                fasthost.leave_runtime(0x10000 + 16 * i)
                fasthost.enter_runtime()

        for i in range(200):
            _run_thread(work, i)
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert int(snap.thread_targets["calls"].sum()) == 600  # exact, holds
    ended = snap.threads[~snap.threads["alive"]]
    assert len(ended) <= 65, f"{len(ended)} rows for 200 ended threads"


def test_threading_setprofile_made_inside_a_capture_survives_its_end():
    """A hook set with threading.setprofile() while capturing is silently
    replaced by the one from before the capture when the capture stops."""

    def user_hook(frame, event, arg):
        return None

    try:
        with fasthost.capture_builtins():
            threading.setprofile(user_hook)
        after = _threading_profile_hook()
    finally:
        threading.setprofile(None)
    assert after is user_hook


# =====================================================================================
# GUARDS (these hold)
# =====================================================================================


def test_recursion_deeper_than_max_depth_and_64_with_every_adapter_pairs():
    fasthost.start(clock="monotonic", max_depth=40)
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    import fasthost.ctypes as fh_ctypes

    fh_ctypes.instrument(libm)
    libm.cos.restype = ctypes.c_double
    libm.cos.argtypes = [ctypes.c_double]
    managed = fasthost._core.ManagedCall(lambda level: nest(level - 1))

    def nest(level):
        if level <= 0:
            return 0
        kind = level % 4
        if kind == 0:
            with fasthost.unmanaged(0x4000 + level):
                return nest(level - 1)
        if kind == 1:
            with CB:
                libm.cos(0.0)
                return nest(level - 1)
        if kind == 2:
            return managed(level)
        return sorted([level], key=lambda v: nest(v - 1))[0] * 0

    try:
        with fasthost.capture_builtins():
            nest(150)
            assert fasthost.depth() == 0
            for _ in range(3):
                try:
                    with fasthost.unmanaged(1), CB:
                        nest(90)
                        raise KeyError
                except KeyError:
                    pass
            assert fasthost.depth() == 0
    finally:
        fasthost.stop()
        fh_ctypes.uninstrument(libm)
    snap = fasthost.snapshot()
    main = snap.threads[snap.threads["name"] == "MainThread"][0]
    assert main["depth"] == 0
    assert main["out_of_memory"] > 0
    assert main["not_owner"] == 0
    assert main["abandoned"] == 0
    assert main["failed"] == 0
    # Each side filled its own max_depth: the protocol's frames and the
    # captures' together went to twice 40, never past it.
    assert main["max_depth"] == 80


def test_qsort_with_python_comparator_under_every_capture_is_exact(recording):
    import fasthost.ctypes as fh_ctypes

    libc = fh_ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("c")))
    try:
        CMP = fh_ctypes.callback(
            ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
        )
        calls = []

        def compare(a, b):
            calls.append(1)
            return (a[0] > b[0]) - (a[0] < b[0])

        cmp = CMP(compare)
        n = 50
        values = (ctypes.c_int * n)(*reversed(range(n)))
        libc.qsort.restype = None
        with fasthost.capture_builtins():
            for _ in range(5):
                libc.qsort(values, n, ctypes.sizeof(ctypes.c_int), cmp)
                assert fasthost.depth() == 0
        assert list(values) == list(range(n))
    finally:
        fh_ctypes.uninstrument(libc)
    snap = fasthost.snapshot()
    main = snap.threads[snap.threads["name"] == "MainThread"][0]
    assert main["callback_calls"] == len(calls)
    qsort = fh_ctypes.address_of(libc.qsort)
    assert int(snap.thread_targets[snap.thread_targets["target"] == qsort]["calls"].sum()) == 5
    assert main["not_owner"] == 0
    assert main["abandoned"] == 0
    assert main["depth"] == 0


def test_exact_totals_with_snapshots_from_many_threads_and_threads_ending(recording):
    nthreads, pairs = 24, 400
    stop = threading.Event()
    errors = []

    def worker():
        for _ in range(pairs):
            fasthost.leave_runtime(0x9000)
            fasthost.reverse_enter_runtime()
            fasthost.reverse_leave_runtime()
            fasthost.enter_runtime()

    def reader():
        while not stop.is_set():
            try:
                snap = fasthost.snapshot()
                assert snap.totals["errors"] == 0
            except BaseException as error:  # pragma: no cover
                errors.append(error)
                return

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    readers = [threading.Thread(target=reader) for _ in range(6)]
    for r in readers:
        r.start()
    try:
        workers = [threading.Thread(target=worker) for _ in range(nthreads)]
        for w in workers:
            w.start()
        native = _testing.run_native_threads(8, 5000, 0x9000)
        for w in workers:
            w.join()
    finally:
        stop.set()
        for r in readers:
            r.join()
        sys.setswitchinterval(switch)
    assert errors == []
    assert native == [0] * 8
    snap = fasthost.snapshot()
    assert int(snap.thread_targets["calls"].sum()) == nthreads * pairs + 8 * 5000
    assert int(snap.threads["callback_calls"].sum()) == nthreads * pairs
    assert int(snap.threads["depth"].sum()) == 0


def test_many_ended_threads_fold_with_exact_histograms(recording):
    from fasthost import _testing as t

    for _ in range(5):
        t.run_native_threads(30, 100, 0xA000, "nested")
    snap = fasthost.snapshot()
    assert len(snap.threads) <= 66
    assert any("ended threads" in str(n) for n in snap.threads["name"])
    assert int(snap.thread_targets["calls"].sum()) == 150 * 100 * 2  # nested: U(M(U)) per iteration
    assert int(snap.threads["callback_calls"].sum()) == 150 * 100
    assert int(snap.threads["depth"].sum()) == 0
    assert int(snap.threads["abandoned"].sum()) == 0
    assert snap.histogram("inclusive").total == 150 * 100 * 2
    assert snap.histogram("exclusive").total == 150 * 100 * 2
    assert snap.histogram("callback").total == 150 * 100


def test_depth_column_equals_depth_on_every_thread_with_aside_and_unrecorded_frames():
    fasthost.start(clock="monotonic", max_depth=3)
    ready, release = threading.Barrier(5), threading.Event()
    reported = {}

    def worker(k):
        for _ in range(k + 2):
            fasthost.leave_runtime(k)  # some refused at max_depth 3
        reported[threading.get_native_id()] = fasthost.depth()
        ready.wait()
        release.wait()
        for _ in range(k + 2):
            fasthost.enter_runtime()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
        snap = fasthost.snapshot()
        for tid, depth in reported.items():
            assert int(snap.threads[snap.threads["tid"] == tid]["depth"][0]) == depth
    finally:
        release.set()
        for thread in threads:
            thread.join()
        fasthost.stop()
    snap = fasthost.snapshot()
    assert int(snap.threads["depth"].sum()) == 0
    assert int(snap.threads["out_of_memory"].sum()) == sum(max(0, k + 2 - 3) for k in range(4))
    assert int(snap.threads["abandoned"].sum()) == 0


def test_reset_and_restart_from_another_thread_while_capture_runs_in_workers():
    stop = threading.Event()
    bad = []

    def worker():
        while not stop.is_set():
            sorted([3, 1, 2], key=lambda v: math.cos(v))
            with fasthost.unmanaged(0x77), CB:
                len("x")
            if fasthost.depth() != 0:
                bad.append(fasthost.depth())
                return

    def controller():
        for i in range(200):
            (fasthost.reset, fasthost.snapshot)[i % 2]()
            time.sleep(0.0002)

    with fasthost.capture_builtins():
        workers = [threading.Thread(target=worker) for _ in range(4)]
        for w in workers:
            w.start()
        ctl = threading.Thread(target=controller)
        ctl.start()
        ctl.join()
        stop.set()
        for w in workers:
            w.join()
    assert bad == []
    assert not fasthost.running()
    assert (
        _full_capacity()
        == [HResult.S_OK] * 4 + [HResult.E_OUTOFMEMORY, HResult.HOST_E_CLRNOTAVAILABLE] + [HResult.S_OK] * 4
    )


def test_capture_started_and_stopped_on_different_threads_leaves_no_hook_or_frame():
    holder = {}

    def starter():
        holder["capture"] = fasthost.capture_builtins().start()

    for _ in range(20):
        _run_thread(starter)
        math.cos(1.0)
        assert fasthost.depth() == 0
        _run_thread(lambda: holder["capture"].stop())
        math.sin(1.0)  # our hook drains off the main thread on its next event
        assert fasthost.depth() == 0
    assert not fasthost.running()


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
def test_a_stop_from_another_thread_while_start_installs_leaves_the_capture_off(capture):
    """A shared capture stopped by another thread at the moment its start()
    installs: the stop either waits and removes what was installed, or
    comes first and nothing is installed; never a capture left on that no
    stop() can reach, holding the tool id (3.12+) or every thread's hook."""
    cap = capture()
    stoppers = []

    def trace(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_install" and not stoppers:
            stoppers.append(threading.Thread(target=cap.stop))
            stoppers[0].start()
            stoppers[0].join(0.3)  # done, or waiting for start() to finish
        return None

    sys.settrace(trace)
    try:
        cap.start()
    finally:
        sys.settrace(None)
    stoppers[0].join()
    assert not cap.active
    assert _core._monitor_tool_id() is None
    assert not _core._builtins_hook_installed()
    with capture():  # a new capture starts, and its stop is the last word
        math.cos(1.0)
    assert _core._monitor_tool_id() is None
    assert not fasthost.running()


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
def test_periodic_captures_into_one_session_over_recursive_keys_and_generators_abandon_nothing(capture):
    """Captures started and stopped in a loop, all recording into one
    running session, while workers sort with a key that sorts with itself
    and sum generators that sleep: every call closes as itself, so nothing
    is abandoned, nothing stays open, and counts, histograms and call sites
    agree."""

    def numbers():
        for i in range(10):
            time.sleep(0.0002)
            yield i

    def key(value):
        if value > 0:
            sorted([value - 1], key=key)
            time.sleep(0.0001)
        return value

    stop, left = threading.Event(), []

    def work(step):
        while not stop.is_set():
            step()
        left.append((fasthost.depth(), _core._hook_open_count()))

    workers = [
        threading.Thread(target=work, args=(lambda: sum(numbers()),)),
        threading.Thread(target=work, args=(lambda: sorted([5], key=key),)),
    ]
    fasthost.start(clock="monotonic")
    for worker in workers:
        worker.start()
    try:
        for _ in range(60):
            with capture():
                time.sleep(0.0005)
    finally:
        stop.set()
        list(map(threading.Thread.join, workers))
    fasthost.stop()
    snap = fasthost.snapshot()
    assert left == [(0, 0), (0, 0)]
    assert {k: v for k, v in snap.totals["results"].items() if v and k != "S_OK"} == {}
    assert int(snap.threads["depth"].sum()) == 0
    assert _core._monitor_tool_id() is None
    for row in snap.targets:
        assert int(snap.histogram("inclusive", target=int(row["target"])).counts.sum()) == int(row["calls"])
        assert int(snap.callsites[snap.callsites["target"] == row["target"]]["calls"].sum()) == int(row["calls"])


def test_generators_and_coroutines_suspended_across_capture_boundaries():
    import asyncio

    def gen():
        with fasthost.capture_builtins():
            yield math.cos(0.0)
            yield len([1])

    for _ in range(10):
        g = gen()
        next(g)
        assert fasthost.depth() == 0
        g.close()
        assert fasthost.depth() == 0
    g = gen()
    next(g)
    del g
    assert fasthost.depth() == 0

    async def job(i):
        with fasthost.unmanaged(0x100 + i):
            await asyncio.sleep(0)
            return abs(-i)

    async def main():
        with fasthost.capture_builtins():
            await asyncio.gather(*(job(i) for i in range(3)))

    # interleaved (incorrectly nested) coroutines: only clause (c) applies
    asyncio.run(main())
    drain_stack()
    assert (
        _full_capacity()
        == [HResult.S_OK] * 4 + [HResult.E_OUTOFMEMORY, HResult.HOST_E_CLRNOTAVAILABLE] + [HResult.S_OK] * 4
    )


def test_threads_started_during_a_capture_and_ended_after_it():
    go = threading.Event()
    depths = []

    def worker():
        go.wait()
        math.cos(0.0)
        depths.append(fasthost.depth())

    for _ in range(30):
        with fasthost.capture_builtins():
            threads = [threading.Thread(target=worker) for _ in range(3)]
            for thread in threads:
                thread.start()
        go.set()
        for thread in threads:
            thread.join()
        go.clear()
    assert depths == [0] * 90


def test_periodic_capture_with_native_held_frames_and_python_blockers():
    inbox = []
    cond = threading.Condition()
    depths = []

    def worker():
        for _ in range(200):
            with cond:
                while not inbox:
                    cond.wait()
                inbox.pop()
            depths.append(fasthost.depth())

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(200):
        with fasthost.capture_builtins():
            held = _testing.HeldFrame(0xB000 + i)
            time.sleep(0.0001)
            if i % 3 == 0:
                fasthost.reset()
        assert held.close() in (HResult.HOST_E_CLRNOTAVAILABLE, HResult.HOST_E_ABANDONED)
        with cond:
            inbox.append(i)
            cond.notify()
    thread.join()
    assert max(depths) == 0


def test_open_while_stopped_then_start_new_config_from_other_thread():
    fasthost.start(clock="monotonic", max_depth=2)
    results = []
    try:
        results.append(fasthost.leave_runtime(1))
        _run_thread(fasthost.stop)
        results.append(fasthost.leave_runtime(2))  # stopped: unrecorded
        _run_thread(lambda: fasthost.start(clock="monotonic", max_depth=3))
        results += [fasthost.leave_runtime(3) for _ in range(4)]
        _run_thread(fasthost.stop)
        results += [fasthost.enter_runtime() for _ in range(4)]  # after stop: pops, CLRNOTAVAILABLE
        _run_thread(lambda: fasthost.start(clock="monotonic", max_depth=3))
        results += [fasthost.enter_runtime(), fasthost.enter_runtime()]
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()
    assert results == [
        HResult.S_OK,
        HResult.HOST_E_CLRNOTAVAILABLE,
        HResult.S_OK,
        HResult.S_OK,
        HResult.S_OK,
        HResult.E_OUTOFMEMORY,
        *[HResult.HOST_E_CLRNOTAVAILABLE] * 4,
        HResult.HOST_E_CLRNOTAVAILABLE,  # the unrecorded open, set aside
        HResult.HOST_E_ABANDONED,  # session 1's frame
    ]


FORK_CHILD = textwrap.dedent(
    """
    import math, os, sys, threading, json
    import fasthost
    from fasthost import _testing
    fasthost.start(clock="monotonic")
    stop = threading.Event()
    def spin():
        while not stop.is_set():
            with fasthost.unmanaged(0x1):
                math.cos(0.0)
    workers = [threading.Thread(target=spin) for _ in range(3)]
    cap = fasthost.capture_builtins().start()
    for w in workers: w.start()
    with fasthost.unmanaged(0x2):
        pid = os.fork()
    if pid == 0:
        out = {"depth": fasthost.depth()}
        for _ in range(100):
            with fasthost.unmanaged(0x3):
                math.cos(1.0)
        _testing.run_native_threads(2, 100, 0x4)
        out["depth_after"] = fasthost.depth()
        cap.stop()
        fasthost.stop()
        snap = fasthost.snapshot()
        out["calls3"] = int(snap.thread_targets[snap.thread_targets["target"] == 0x3]["calls"].sum())
        out["calls4"] = int(snap.thread_targets[snap.thread_targets["target"] == 0x4]["calls"].sum())
        out["calls1"] = int(snap.thread_targets[snap.thread_targets["target"] == 0x1]["calls"].sum())
        out["hook"] = fasthost._core._builtins_hook_installed()
        sys.stdout.write(json.dumps(out)); sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    stop.set()
    for w in workers: w.join()
    cap.stop()
    fasthost.stop()
    assert fasthost.depth() == 0
    """
)


def test_fork_inside_a_capture_with_busy_threads():
    import json

    proc = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"depth": 0, "depth_after": 0, "calls3": 100, "calls4": 200, "calls1": 0, "hook": False}
