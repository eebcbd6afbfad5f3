"""Real threads: native pthreads that never hold the GIL, Python threads,
threads that end with frames open, reset() while other threads hold frames."""

import threading
import time

import pytest

import fasthost
from fasthost import HResult, _core, _testing

from .conftest import run_threads


@pytest.mark.parametrize(("nthreads", "pairs"), [(1, 1), (4, 25_000), (16, 5_000)])
def test_native_threads_totals_are_exact_after_they_exit(recording, nthreads, pairs):
    not_ok = _testing.run_native_threads(nthreads, pairs, 0x5000)
    assert not_ok == [0] * nthreads
    snap = fasthost.snapshot()  # every worker has exited by now
    workers = snap.threads[~snap.threads["alive"]]
    assert len(workers) == nthreads
    assert workers["leave"].tolist() == [pairs] * nthreads
    assert workers["enter"].tolist() == [pairs] * nthreads
    assert snap.totals["calls"]["leave"] == nthreads * pairs
    targets = snap.thread_targets
    assert targets["calls"].sum() == nthreads * pairs
    assert set(targets["target"].tolist()) == {0x5000}
    assert len(set(workers["tid"].tolist())) == nthreads


def test_native_threads_nesting_u_m_u(recording):
    iterations = 10_000
    assert _testing.run_native_threads(2, iterations, 0x6000, mode="nested") == [0, 0]
    snap = fasthost.snapshot()
    assert snap.totals["calls"] == {
        "leave": 4 * iterations,
        "enter": 4 * iterations,
        "reverse_leave": 2 * iterations,
        "reverse_enter": 2 * iterations,
    }
    workers = snap.threads[~snap.threads["alive"]]
    assert workers["max_depth"].tolist() == [3, 3]
    assert workers["callback_calls"].sum() == 2 * iterations
    outer = snap.thread_targets[snap.thread_targets["target"] == 0x6000]
    assert (outer["exclusive_ns"] <= outer["total_ns"]).all()


def test_frames_open_when_a_thread_exits_count_as_abandoned(recording):
    _testing.run_native_threads(3, 5, 0x7000, mode="leave_open")
    snap = fasthost.snapshot()
    workers = snap.threads[~snap.threads["alive"]]
    assert workers["abandoned"].tolist() == [5, 5, 5]
    assert workers["depth"].tolist() == [0, 0, 0]
    assert snap.totals["results"]["HOST_E_ABANDONED"] == 15


def test_reset_while_a_native_thread_holds_a_frame(recording):
    held = _testing.HeldFrame(0x8000)
    managed = _testing.HeldFrame(managed=True)
    assert held.open_result is HResult.S_OK
    assert managed.open_result is HResult.S_OK
    fasthost.reset()
    assert held.close() is HResult.HOST_E_ABANDONED
    assert managed.close() is HResult.HOST_E_ABANDONED
    snap = fasthost.snapshot()
    # Nothing from before the reset leaks in: only the abandoned closes.
    assert snap.totals["calls"] == {"leave": 0, "enter": 1, "reverse_leave": 1, "reverse_enter": 0}
    assert snap.totals["results"]["HOST_E_ABANDONED"] == 2
    assert len(snap.thread_targets) == 0


def test_reset_while_a_python_thread_holds_a_frame(recording):
    opened, go = threading.Event(), threading.Event()
    results = []

    def worker():
        results.append(fasthost.leave_runtime(0x9000))
        opened.set()
        go.wait()
        results.append(fasthost.enter_runtime())

    thread = threading.Thread(target=worker, name="holder")
    thread.start()
    opened.wait()
    fasthost.reset()
    go.set()
    thread.join()
    assert results == [HResult.S_OK, HResult.HOST_E_ABANDONED]


def test_reset_forgets_threads_that_have_ended(recording):
    _testing.run_native_threads(2, 10, 0x1)
    assert len(fasthost.snapshot().threads) == 2
    fasthost.reset()
    assert len(fasthost.snapshot().threads) == 0


def test_a_frame_belongs_to_the_thread_that_opened_it(recording):
    fasthost.leave_runtime(0xA)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(fasthost.enter_runtime()))
    thread.start()
    thread.join()
    assert seen == [HResult.HOST_E_NOT_OWNER]
    assert fasthost.enter_runtime() is HResult.S_OK


def test_snapshots_while_threads_record_end_exact(recording):
    """Snapshots taken concurrently never crash or go backwards; the final
    one is exact."""
    pairs, nthreads = 200_000, 2
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (_testing.run_native_threads(nthreads, pairs, 0xB000, mode="targets", distinct=50), done.set())
    )
    worker.start()
    previous = 0
    while not done.is_set():
        leaves = fasthost.snapshot().totals["calls"]["leave"]
        assert leaves >= previous
        previous = leaves
    worker.join()
    snap = fasthost.snapshot()
    assert snap.totals["calls"]["leave"] == nthreads * pairs
    assert snap.thread_targets["calls"].sum() == nthreads * pairs
    assert len(snap.thread_targets) == nthreads * 50


def test_python_threads_each_get_their_own_row(recording):
    def work(n):
        for _ in range(n):
            with fasthost.unmanaged(0xC):
                pass

    threads = [threading.Thread(target=work, args=(1000 * (i + 1),), name=f"py-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # (Not checking `alive`: Thread.join() returns when CPython releases the
    # thread state, a moment before the OS thread exits and fasthost hears.)
    snap = fasthost.snapshot()
    assert sorted(r["leave"] for r in snap.threads) == [1000, 2000, 3000, 4000]


def test_live_python_threads_are_named(recording):
    opened, go = threading.Event(), threading.Event()

    def worker():
        fasthost.leave_runtime(1)
        opened.set()
        go.wait()
        fasthost.enter_runtime()

    thread = threading.Thread(target=worker, name="named-worker")
    thread.start()
    opened.wait()
    try:
        names = fasthost.snapshot().threads["name"].tolist()
    finally:
        go.set()
        thread.join()
    assert "named-worker" in names


def test_threads_that_come_and_go_fold_into_one_row_with_exact_totals(recording):
    """A server with a thread per request: past 64 ended threads a session
    keeps one folded row, so memory stays bounded, and totals stay exact."""

    def request():
        for i in range(3):
            fasthost.leave_runtime(0x10 + i % 2)
            fasthost.reverse_enter_runtime()
            fasthost.reverse_leave_runtime()
            fasthost.enter_runtime()

    def serve(requests):
        for start in range(0, requests, 100):
            batch = [threading.Thread(target=request) for _ in range(min(100, requests - start))]
            for thread in batch:
                thread.start()
            for thread in batch:
                thread.join()

    serve(1000)
    _testing.run_native_threads(8, 1000, 0x10)
    memory_after_1000 = fasthost.memory_usage()["total_bytes"]
    for _ in range(4):
        serve(1000)
    _testing.run_native_threads(8, 1000, 0x10)
    memory_after_5000 = fasthost.memory_usage()["total_bytes"]
    snap = fasthost.snapshot()
    assert len(snap.threads) <= 64 + 1
    (folded,) = [row for row in snap.threads if row["name"].endswith(" ended threads>")]
    assert folded["name"] == f"<{5016 - 64} ended threads>"
    by_target = {int(t["target"]): int(t["calls"]) for t in snap.targets}
    assert by_target == {0x10: 5000 * 2 + 16 * 1000, 0x11: 5000}
    assert snap.totals["calls"] == {"leave": 31000, "enter": 31000, "reverse_leave": 15000, "reverse_enter": 15000}
    assert snap.histogram("inclusive").total == 31000
    assert snap.histogram("callback").total == 15000
    assert int(snap.threads["callback_calls"].sum()) == 15000
    assert snap.totals["errors"] == 0
    assert memory_after_5000 <= memory_after_1000 + 64 * 1024  # bounded, whatever the number of threads


def test_threads_that_ended_keep_their_python_name(recording):
    # CPython 3.9-3.13 do not give the OS thread threading's name: it is
    # taken when the thread makes its first call, so it outlives the thread.
    import concurrent.futures

    def call():
        fasthost.leave_runtime(0x7E57)
        fasthost.enter_runtime()
        return threading.get_native_id()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="decoder") as pool:
        (pooled,) = set(pool.map(lambda _: call(), range(5)))
    named = threading.Thread(target=call, name="a name longer than the thirty-one bytes kept")
    named.start()
    named.join()
    _testing.run_native_threads(1, 3, 0x7E58)  # a thread Python never knew keeps its OS name
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the state is released after join() returns
        snap = fasthost.snapshot()
        if not snap.threads["alive"][snap.threads["name"] != "MainThread"].any():
            break
        time.sleep(0.01)
    names = {str(row["name"]) for row in snap.threads if not row["alive"]}
    assert "decoder_0" in names
    assert "a name longer than the thirty-o" in names  # 31 bytes and the NUL
    (pooled_row,) = snap.threads[snap.threads["tid"] == pooled]
    assert pooled_row["name"] == "decoder_0"
    assert len(names) == 3
    assert not {"decoder_0", "a name longer than the thirty-o"} >= names  # the native thread has another


def test_naming_a_thread_runs_none_of_its_code(recording):
    # The name is read from the thread's instance dict: a `_name` property
    # that calls fasthost must not run, or every call would make another
    # thread state and record a transition fasthost made itself.
    seen = []

    class Odd(threading.Thread):
        @property
        def _name(self):
            seen.append(1)
            fasthost.leave_runtime(0x1234)
            fasthost.enter_runtime()
            return "odd"

        @_name.setter
        def _name(self, value):
            pass

    def call():
        fasthost.leave_runtime(0x7E57)
        fasthost.enter_runtime()

    thread = Odd(target=call)
    thread.start()
    thread.join()
    snap = fasthost.snapshot()
    assert seen == []
    assert snap.totals["transitions"] == 1
    assert len(snap.threads) == 1


@pytest.mark.parametrize(
    ("name", "kept"),
    [("é" * 16, "é" * 15), ("a" * 30 + "é", "a" * 30), ("x\x00y", "x"), ("\udcff", "?")],
)
def test_thread_names_are_cut_at_a_character(recording, name, kept):
    def call():
        fasthost.leave_runtime(0x7E57)
        fasthost.enter_runtime()

    thread = threading.Thread(target=call, name=name)
    thread.start()
    thread.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and fasthost.snapshot().threads["alive"].any():
        time.sleep(0.01)
    (row,) = fasthost.snapshot().threads
    assert str(row["name"]) == kept


def test_thread_count_includes_the_threads_folded_into_the_ended_row(recording):
    # Past the ended threads a session keeps a row for, the rest fold into
    # one row: it must count as the threads it stands for, not as one (100
    # threads read "65 thread(s)").
    def work():
        fasthost.leave_runtime(0x4321)
        fasthost.enter_runtime()

    run_threads(work, 100)
    snap = fasthost.snapshot()
    ended = snap.threads[~snap.threads["alive"]]
    assert len(ended) < 100  # some were folded
    assert int(snap.thread_targets["calls"].sum()) == 100
    # Every worker made one call; any other row (the main thread's) none.
    idle = int((snap.threads["leave"] == 0).sum())
    assert snap.totals["threads"] == 100 + idle
    assert f"{snap.totals['threads']} thread(s)" in snap.report()


def test_counts_read_while_native_threads_bump_them_never_go_down_nor_past_the_end(recording):
    """Each count has one writer (its thread: one add to memory on x86-64)
    and is read by snapshots on another thread: successive copies taken
    while 4 pthreads make 200,000 pairs each over 8 targets see every
    (thread, target) count and time only grow, never past the end, and the
    last one sees them all."""
    done = threading.Event()
    results = []

    def native():
        results.append(_testing.run_native_threads(4, 200_000, 0x3000, "targets", 8))
        done.set()

    def counts():
        # The core's copy itself (snapshot() adds ~0.1 s of its own work).
        raw = _core._collect()
        tid, target, calls, total = (
            _core.THREAD_FIELDS.index("tid"),
            *(_core.TARGET_FIELDS.index(name) for name in ("target", "calls", "total_ns")),
        )
        return {
            (int(raw["threads"][row[0], tid]), int(row[target])): (int(row[calls]), int(row[total]))
            for row in raw["targets"]
        }

    worker = threading.Thread(target=native)
    worker.start()
    seen = []
    while not done.is_set():
        seen.append(counts())
    worker.join()
    seen.append(counts())
    assert results == [[0] * 4]
    assert len(seen) >= 3
    for before, after in zip(seen, seen[1:]):
        for key, (calls, total) in before.items():
            assert calls <= 200_000 // 8
            assert after[key][0] >= calls
            assert after[key][1] >= total
    assert sorted(calls for calls, _ in seen[-1].values()) == [200_000 // 8] * 32
