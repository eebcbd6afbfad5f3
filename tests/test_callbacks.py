"""Callbacks under the builtins capture: every Python function that starts
while a U frame is on top of the thread's stack is an M frame, closed when
it returns, raises or yields; exclusive times are self times, so the
unmanaged and callback self times together are the recorded time, each
nanosecond once (docs/protocol.md §3, §4)."""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import sys
import threading

import pytest

import fasthost
from fasthost import _core

from .conftest import open_frames_of_the_test, run_threads


@pytest.fixture
def session():
    fasthost.start(clock="monotonic", max_depth=64)
    yield
    fasthost.stop()


_PATTERN = re.compile("a")


def _busy(value):
    total = 0
    for i in range(300):  # pure Python: no builtin inside the callback
        total += i
    return -value


def _row(snap, name):
    rows = [row for row in snap.targets if str(row["symbol"]) == name]
    assert len(rows) == 1, [str(r["symbol"]) for r in snap.targets]
    return rows[0]


def _callbacks(snap) -> int:
    return int(snap.threads["callback_calls"].sum())


def test_sorted_key_calls_are_callbacks_and_sorted_keeps_only_its_own_time(session):
    with fasthost.capture_builtins():
        sorted(range(40), key=_busy)
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    row = _row(snap, "sorted")
    assert row["calls"] == 1
    assert _callbacks(snap) == 40
    # sorted's self time is its inclusive time minus the callbacks inside it.
    callbacks_ns = int(snap.threads["callback_total_ns"].sum())
    assert row["exclusive_ns"] <= row["total_ns"] - callbacks_ns + 1000  # ns rounding per frame
    assert row["exclusive_ns"] < row["total_ns"]


@pytest.mark.parametrize("clock", ["tsc", "monotonic"])
def test_unmanaged_and_callback_self_times_add_up_to_the_outermost_frame_exactly(clock):
    if clock == "tsc" and not _core.tsc_available():
        pytest.skip("no invariant TSC on this machine")
    fasthost.start(clock=clock)
    try:
        with fasthost.capture_builtins():
            sorted(range(300), key=lambda v: min([v, 1, 2], key=_busy))
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    totals = snap.totals
    outer = int(_row(snap, "sorted")["total_ns"])
    # Each nanosecond once: a frame credits its recorded ns to its parent.
    assert totals["exclusive_ns"] + totals["callback_exclusive_ns"] == outer
    assert _callbacks(snap) == 300 + 300 * 3


@pytest.mark.parametrize(
    ("run", "callbacks"),
    [
        (lambda: min(range(25), key=_busy), 25),
        (lambda: max(range(25), key=_busy), 25),
        (lambda: sum(map(_busy, range(25))), 25),
        (lambda: _PATTERN.sub(lambda m: "b", "a-a-a-a"), 4),
        (lambda: list(filter(None, [1, 2])) and sorted([3, 1, 2], key=_busy), 3),
    ],
    ids=["min", "max", "map-in-sum", "re.sub", "sorted-after-filter"],
)
def test_python_functions_called_by_builtins_are_callbacks(session, run, callbacks):
    with fasthost.capture_builtins():
        run()
    assert fasthost.depth() == 0
    assert _callbacks(fasthost.snapshot()) == callbacks


def test_python_code_called_from_python_is_not_a_callback(session):
    def plain(values):
        return [_busy(v) for v in values]

    with fasthost.capture_builtins():
        plain(range(10))
    assert _callbacks(fasthost.snapshot()) == 0


def test_a_sqlite3_function_is_a_callback_of_the_statement_that_runs_it(session):
    connection = sqlite3.connect(":memory:")
    connection.execute("create table t(x)")
    connection.executemany("insert into t values (?)", [(i,) for i in range(12)])
    connection.create_function("twice", 1, lambda v: 2 * v)
    with fasthost.capture_builtins():
        rows = connection.execute("select twice(x) from t").fetchall()
    assert [r[0] for r in rows] == [2 * i for i in range(12)]
    assert fasthost.depth() == 0
    assert _callbacks(fasthost.snapshot()) == 12


def test_a_callback_that_raises_closes_its_frame_and_the_builtins_around_it(session):
    def bad(value):
        if value == 5:
            raise KeyError(value)
        return value

    with fasthost.capture_builtins(), pytest.raises(KeyError):
        sorted(range(10), key=bad)
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert _callbacks(snap) == 6
    assert snap.totals["errors"] == 0


def test_a_generator_resumed_by_a_builtin_is_a_callback_per_resumption(session):
    def numbers(n):
        yield from range(n)

    with fasthost.capture_builtins():
        assert sum(numbers(7)) == 21
    assert fasthost.depth() == 0
    # Seven resumptions that yield and the last one that returns.
    assert _callbacks(fasthost.snapshot()) == 8


def test_a_generator_driven_by_python_inside_a_callback_is_not_a_callback(session):
    def numbers(n):
        yield from range(n)

    def key(value):
        total = 0
        for i in numbers(3):  # resumed by Python code: not a callback
            total += i
        return total - value

    with fasthost.capture_builtins():
        sorted(range(5), key=key)
    assert fasthost.depth() == 0
    assert _callbacks(fasthost.snapshot()) == 5


def test_a_generator_suspended_inside_a_callback_and_resumed_later_pairs(session):
    def numbers():
        yield 1
        yield 2

    gen = numbers()
    with fasthost.capture_builtins():
        first = min([gen], key=next)  # next() resumes it: a callback that yields
        assert fasthost.depth() == 0
        rest = [v for v in gen]  # resumed by Python: not a callback
    assert (first, rest) == (gen, [2])
    assert fasthost.depth() == 0
    assert _callbacks(fasthost.snapshot()) == 1


def test_callbacks_on_many_threads_each_pair_on_their_own_thread(session):
    errors = []

    def work():
        try:
            for _ in range(20):
                sorted(range(10), key=_busy)
            assert fasthost.depth() == 0
        except BaseException as exc:  # reported below
            errors.append(exc)

    with fasthost.capture_builtins():
        run_threads(work, 4)
    assert errors == []
    snap = fasthost.snapshot()
    assert _callbacks(snap) == 4 * 20 * 10
    assert open_frames_of_the_test(snap) == 0


# ---- another profiler takes the hook inside a capture. On 3.9-3.11 the
# frames its hook had open are abandoned; on 3.12+ the capture is
# sys.monitoring, which sys.setprofile does not touch: they close as usual.

HOOK_TAKEN_ABANDONS = not _core.MONITORING


def _take_hook_inside_a_builtin():
    """Calls sys.setprofile(None) from inside sorted's key: the returns of
    sorted and of setprofile go to no hook at all."""
    sorted([1], key=lambda v: sys.setprofile(None) or v)


def test_a_worker_that_replaces_the_hook_inside_a_capture_keeps_no_frame_open():
    fasthost.start(clock="monotonic", max_depth=8)
    try:
        depths = []

        def worker():
            _take_hook_inside_a_builtin()
            with fasthost.unmanaged(0x1234):  # pairs with its own frame
                pass
            depths.append(fasthost.depth())

        for _ in range(20):  # more captures than max_depth: nothing may pile up
            with fasthost.capture_builtins():
                t = threading.Thread(target=worker)
                t.start()
                t.join()
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert depths == [0] * 20
    manual = [r for r in snap.targets if int(r["target"]) == 0x1234]
    assert int(manual[0]["calls"]) == 20
    assert snap.totals["results"]["HOST_E_NOT_OWNER"] == 0
    # sorted, its key's callback, setprofile
    assert snap.totals["results"]["HOST_E_ABANDONED"] == (20 * 3 if HOOK_TAKEN_ABANDONS else 0)


def test_stop_inside_an_adapter_frame_after_the_hook_was_taken_keeps_that_frame():
    fasthost.start(clock="monotonic")
    try:
        capture = fasthost.capture_builtins().start()
        _take_hook_inside_a_builtin()
        with fasthost.unmanaged(0x4321):
            capture.stop()
            inner_depth = fasthost.depth()
        after = fasthost.depth()
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert (inner_depth, after) == (1, 0)
    manual = [r for r in snap.targets if int(r["target"]) == 0x4321]
    assert int(manual[0]["calls"]) == 1  # closed and recorded, not abandoned
    assert snap.totals["results"]["HOST_E_NOT_OWNER"] == 0


def test_the_hook_taken_under_an_adapter_frame_abandons_only_its_own_frames():
    fasthost.start(clock="monotonic")
    try:
        with fasthost.capture_builtins():

            def key(value):
                with fasthost.callback():  # an adapter frame between the hook's
                    sys.setprofile(None)
                return value

            sorted([1], key=key)
            depth_after = fasthost.depth()
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert depth_after == 0
    results = snap.totals["results"]
    assert results["HOST_E_NOT_OWNER"] == 0
    assert results["HOST_E_ABANDONED"] == (3 if HOOK_TAKEN_ABANDONS else 0)  # sorted, key, setprofile
    # The adapter's callback frame closed as itself (recorded), inside the
    # hook's callback frame for key (abandoned with sorted's on 3.9-3.11).
    assert _callbacks(snap) == (1 if HOOK_TAKEN_ABANDONS else 2)


# ---- threads that come and go (Python 3.9-3.11: the profile hook) -----------


def test_a_thread_started_during_a_capture_gets_threadings_hook_back():
    seen = {}

    def threading_hook(frame, event, arg):
        pass

    go = threading.Event()

    def worker():
        go.wait()
        seen[threading.current_thread().name] = sys.getprofile()

    threading.setprofile(threading_hook)
    try:
        before = threading.Thread(target=worker, name="before")
        before.start()
        with fasthost.capture_builtins():
            during = threading.Thread(target=worker, name="during")
            during.start()
            sorted([2, 1])  # the capture sees events meanwhile
        go.set()
        before.join()
        during.join()
    finally:
        threading.setprofile(None)
    assert seen == {"before": threading_hook, "during": threading_hook}


def test_threads_that_come_and_go_during_one_capture_leave_no_hook_state():
    with fasthost.capture_builtins():
        # The threads alive at install, counted by their C thread states: a
        # thread of an earlier test may still be ending, out of
        # threading.enumerate() but not gone yet.
        at_install = _core._builtins_hook_saved_count()
        for _ in range(200):
            t = threading.Thread(target=abs, args=(1,))
            t.start()
            t.join()
        kept = _core._builtins_hook_saved_count()
    assert kept <= at_install


def test_another_threads_own_profile_hook_survives_a_capture():
    def own_hook(frame, event, arg):
        pass

    hook_set, capture_done = threading.Event(), threading.Event()
    seen = []

    def worker():
        sys.setprofile(own_hook)
        hook_set.set()
        capture_done.wait()
        sorted([2, 1])  # an event after the capture: the hook is back by now
        seen.append(sys.getprofile())
        sys.setprofile(None)

    t = threading.Thread(target=worker)
    t.start()
    hook_set.wait()
    with fasthost.capture_builtins():
        sorted([3, 1, 2])
    capture_done.set()
    t.join()
    assert seen == [own_hook]


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
def test_each_frames_self_time_under_a_capture_is_exact_on_the_manual_clock(capture):
    # advance_manual_time run from C (map's iteration) is no call event: the
    # clock moves inside the frame that consumes the map, and only there.
    from fasthost import _testing

    advance = _testing.advance_manual_time

    def key(value):  # an M frame under min(), with an any() (U) inside
        any(map(advance, [1000]))
        return 0

    def numbers():  # an M frame under sum() for each resumption
        for i in range(3):
            any(map(advance, [100]))
            yield i

    _testing.set_manual_time(1_000_000)
    fasthost.start(clock="manual")
    try:
        with capture():
            min(map(advance, [10, 20]), key=key)  # 30 ns of min's own
            sum(numbers())
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    rows = {
        name: [int(_row(snap, name)[k]) for k in ("calls", "total_ns", "exclusive_ns")]
        for name in ("min", "any", "sum")
    }
    assert rows == {"min": [1, 2030, 30], "any": [5, 2300, 2300], "sum": [1, 300, 0]}
    assert [int(snap.threads[k].sum()) for k in ("callback_calls", "callback_total_ns", "callback_exclusive_ns")] == [
        2 + 4,  # key twice; numbers() resumed three times and once more to end
        2300,
        0,
    ]
    assert snap.totals["exclusive_ns"] + snap.totals["callback_exclusive_ns"] == 2330  # every ns once


def _interrupted_sleep():
    """sorted()'s third key sleeps in time.sleep until a SIGALRM handler
    (itself a callback: it runs inside the sleep) raises KeyboardInterrupt."""
    import signal
    import time

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def key(value):
        if value == 2:
            signal.setitimer(signal.ITIMER_REAL, 0.005)
            time.sleep(30)  # never ends: the handler raises first
        return value

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        sorted(range(5), key=key)
    except KeyboardInterrupt:  # not pytest.raises: its own calls would be recorded
        pass
    else:
        raise AssertionError("the signal handler did not interrupt the sleep")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Key:
    """A dict key whose __hash__ and __eq__ are Python: callbacks of the
    dict method that looks it up."""

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return hash(self.value)

    def __eq__(self, other):
        return math.cos(0.0) == 1.0 and self.value == other.value


def _dict_lookups():
    table = {_Key(i): i for i in range(8)}  # hashed by bytecode: no callback
    for i in range(8):
        table.get(_Key(i))  # a new key: __hash__, then __eq__ with the stored one


def _thrown_generator():
    def numbers():
        while True:
            with contextlib.suppress(ValueError):
                yield math.cos(0.0)

    gen = numbers()
    next(gen)  # resumed by a builtin: a callback
    for _ in range(3):
        gen.throw(ValueError)  # each throw resumes it (PY_THROW): a callback
    gen.close()  # and so does the GeneratorExit that ends it


def _vectorized():
    import numpy as np

    np.vectorize(lambda v: math.cos(v), otypes=[float])(np.arange(5.0))


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
@pytest.mark.parametrize(
    ("work", "calls", "callbacks"),
    [
        # key 0, 1, 2 and the signal handler; sleep and sorted raise
        (_interrupted_sleep, {"time.sleep": 1, "sorted": 1}, {"builtins": 4, "native": 4}),
        (_dict_lookups, {"math.cos": 8}, {"builtins": 16, "native": 16}),
        # next, three throws, and close: each resumes it; the close ends it
        (_thrown_generator, {"math.cos": 4}, {"builtins": 5, "native": 5}),
        # the ufunc np.vectorize makes is native, not a builtin (seen on 3.12+)
        (_vectorized, {"math.cos": 5}, {"builtins": 0, "native": 5 if sys.version_info >= (3, 12) else 0}),
    ],
    ids=["signal-handler-raising-in-a-sleep-in-a-key", "dict-hash-and-eq", "generator-throw-and-close", "np.vectorize"],
)
def test_callbacks_of_signal_handlers_dict_lookups_thrown_generators_and_ufuncs_pair_and_count(
    session, capture, work, calls, callbacks
):
    with capture():
        work()
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert {name: int(_row(snap, name)["calls"]) for name in calls} == calls
    assert _callbacks(snap) == callbacks["native" if capture is fasthost.capture_native else "builtins"]
    results = {k: v for k, v in snap.totals["results"].items() if v and k != "S_OK"}
    assert results == {}
