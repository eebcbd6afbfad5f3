"""The captures' two ways of pairing a builtin's call with its return: the
call-free fast path (a clock read inline: tsc or manual, the default
precision, a thread, target and call site its caches know) and the full
path (everything else). Whichever way a call goes, every count is exact and
every close is its own call's; the other capture tests record on the
monotonic clock, which always takes the full path."""

from __future__ import annotations

import contextlib
import cProfile
import gc
import linecache
import math
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fasthost
from fasthost import _core, _testing

from .conftest import open_frames_of_the_test

MONITORING = sys.version_info >= (3, 12)
# 3.9-3.11: capture_native warns about the ctypes libraries loaded before it
# (libc here): these tests are about builtins
pytestmark = pytest.mark.filterwarnings("ignore::fasthost.capture.ctypes.NotInstrumentedWarning")
CAPTURES = {"builtins": fasthost.capture_builtins, "native": fasthost.capture_native}
# tsc where the CPU has an invariant one: the clock of every default session
INLINE_CLOCKS = ["auto", "manual"]


def calls_of(snap, name: str) -> int:
    return int(sum(int(r["calls"]) for r in snap.targets if str(r["symbol"]) == name))


def site_counts(snap, name: str) -> list[int]:
    """The calls of each call site of the target `name`, smallest first."""
    addresses = [int(r["target"]) for r in snap.targets if str(r["symbol"]) == name]
    rows = snap.callsites[np.isin(snap.callsites["target"], addresses)]
    return sorted(int(r["calls"]) for r in rows)


def errors(snap) -> dict[str, int]:
    return {k: v for k, v in snap.totals["results"].items() if v and k != "S_OK"}


def assert_exact(snap, name: str, calls: int, *, sites: bool = True) -> None:
    """`name` has exactly `calls` calls, in its row, its histogram and (with
    `sites`) its call sites, whose histograms hold their calls and whose
    times add up to the target's; exclusive time is within inclusive time."""
    assert calls_of(snap, name) == calls
    assert int(snap.histogram("inclusive", target=name).counts.sum()) == calls
    assert sum(site_counts(snap, name)) == (calls if sites else 0)
    at = np.isin(snap.callsites["target"], [int(r["target"]) for r in snap.targets if str(r["symbol"]) == name])
    assert snap.callsite_counts[at].sum(axis=1).tolist() == snap.callsites[at]["calls"].tolist()
    if sites:
        rows = snap.targets[snap.targets["symbol"] == name]
        for field in ("total_ns", "exclusive_ns"):
            assert sum(int(n) for n in snap.callsites[at][field]) == sum(int(n) for n in rows[field])
    assert (snap.targets["exclusive_ns"] <= snap.targets["total_ns"]).all()
    assert (snap.callsites["exclusive_ns"] <= snap.callsites["total_ns"]).all()


def recorded(capture: str, work, *, clock: str = "auto", callsites: bool = True, **config):
    """Runs `work` under `capture` in a session of its own; its snapshot.
    With the collector off: a gc callback is Python code that a collection
    runs inside whatever call is open (hypothesis, which test_model uses,
    registers one that calls time.perf_counter), and the captures rightly
    record it, which exact counts here do not expect."""
    collecting = gc.isenabled()
    gc.disable()
    fasthost.start(clock=clock, **config)
    try:
        with CAPTURES[capture](callsites=callsites):
            work()
    finally:
        fasthost.stop()
        if collecting:
            gc.enable()
    return fasthost.snapshot()


def cos_loop(n: int = 500) -> None:
    for _ in range(n):
        math.cos(0.5)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", ["auto", "manual", "monotonic"])
@pytest.mark.parametrize("precision", [1, 4, 5, 8])
@pytest.mark.parametrize("callsites", [True, False])
def test_every_clock_precision_and_call_site_setting_counts_each_call_once(capture, clock, precision, callsites):
    snap = recorded(capture, cos_loop, clock=clock, precision=precision, callsites=callsites)
    assert_exact(snap, "math.cos", 500, sites=callsites)
    assert errors(snap) == {}
    assert fasthost.depth() == 0


def _bucket(ns: int, precision: int) -> int:
    """The histogram bucket of `ns`, as README's "Histograms" lays them out."""
    shift = (ns | (1 << precision)).bit_length() - 1 - precision
    return (shift << precision) + (ns >> shift)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("precision", [1, 5, 8])
@pytest.mark.parametrize(
    "ns", [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 4095, 123_456_789, 2**32, 2**40 + 12_345, 2**62 + 99]
)
def test_a_builtins_duration_on_the_manual_clock_is_exact_on_every_path(capture, precision, ns):
    # any() runs advance_manual_time from C (map's iteration), so the
    # builtin's frame lasts exactly `ns` and has nothing nested in it. The
    # first call makes the records (the full path), the next two find them
    # (the fast path where the clock and precision allow it).
    def three_calls():
        for _ in range(3):
            any(map(_testing.advance_manual_time, [ns]))

    _testing.set_manual_time(1_000_000)
    snap = recorded(capture, three_calls, clock="manual", precision=precision, timeout_ns=5000)
    (row,) = snap.targets[snap.targets["symbol"] == "any"]
    expected = [3, 3 * ns, 3 * ns, ns, ns]
    assert [int(row[k]) for k in ("calls", "total_ns", "exclusive_ns", "min_ns", "max_ns")] == expected
    assert int(row["timeouts"]) == 3 * (ns > 5000)
    counts = snap.histogram("inclusive", target="any").counts
    assert np.flatnonzero(counts).tolist() == [_bucket(ns, precision)]
    assert int(counts.sum()) == 3
    (site,) = np.flatnonzero(snap.callsites["target"] == int(row["target"]))
    assert (int(snap.callsites["calls"][site]), int(snap.callsites["total_ns"][site])) == (3, 3 * ns)
    assert np.flatnonzero(snap.callsite_counts[site]).tolist() == [_bucket(ns, _core.SITE_PRECISION)]
    assert int(snap.callsite_counts[site].sum()) == 3


# Durations where a call site's bucket (precision 3) is easy to get wrong
# from the target's: the exact buckets below 32 ns, the row edges around
# every power of two, and the top of uint64.
_EDGE_DURATIONS = [
    *range(40),
    *(2**k + d for k in range(5, 63) for d in (-1, 0, 1, 2 ** (k - 3))),
    2**63,
    2**63 + 2**60 + 7,
    2**64 - 2**21,
]


def _any_calls(durations: list[int]) -> None:
    """A call of `any` lasting exactly each of `durations` (manual clock,
    set back before each: no wrap past 2**64), all at one call site."""
    for ns in durations:
        _testing.set_manual_time(1)
        any(map(_testing.advance_manual_time, [ns]))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("precision", range(1, 9))
def test_a_call_sites_histogram_puts_each_duration_in_its_own_bucket_on_every_path(capture, precision):
    """Each duration is made three times at one site: the first reaches a
    new histogram row by the full path, the others take the fast close,
    which at the default precision takes the site's bucket from the
    target's (at precisions 1 and 2 the site's buckets are the finer)."""

    snap = recorded(capture, lambda: _any_calls(_EDGE_DURATIONS * 3), clock="manual", precision=precision)
    (row,) = snap.targets[snap.targets["symbol"] == "any"]
    at = snap.callsites["target"] == int(row["target"])
    assert [int(n) for n in snap.callsites[at]["calls"]] == [len(_EDGE_DURATIONS) * 3]
    expected = np.bincount([_bucket(ns, 3) for ns in _EDGE_DURATIONS * 3], minlength=snap.callsite_counts.shape[1])
    assert snap.callsite_counts[at][0].tolist() == expected.tolist()
    site = snap.callsites[at][0]
    total = sum(_EDGE_DURATIONS * 3) % 2**64  # the core's counters are uint64
    assert (int(site["total_ns"]), int(site["exclusive_ns"])) == (total, total) == (int(row["total_ns"]),) * 2
    assert int(snap.histogram("inclusive", target="any").counts.sum()) == len(_EDGE_DURATIONS) * 3


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
@pytest.mark.parametrize("how", ["reset", "restart"])
def test_a_session_started_while_another_thread_is_inside_a_builtin_abandons_that_frame(capture, clock, how):
    fasthost.start(clock=clock)
    lock = threading.Lock()
    lock.acquire()
    inside = threading.Event()
    worker_ids = []

    def worker():
        worker_ids.append(threading.get_native_id())
        inside.set()
        lock.acquire()
        cos_loop(10)

    try:
        with CAPTURES[capture]():
            thread = threading.Thread(target=worker)
            thread.start()
            inside.wait()
            _wait_until_inside_acquire(thread)
            if how == "reset":
                fasthost.reset()
            else:
                fasthost.stop()
                fasthost.start(clock=clock)
            lock.release()
            thread.join()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    (worker,) = np.flatnonzero(snap.threads["tid"] == worker_ids[0])
    pairs = snap.thread_targets[snap.thread_targets["thread"] == worker]
    names = {str(r["symbol"]): int(p["calls"]) for p in pairs for r in snap.targets if r["target"] == p["target"]}
    assert names["math.cos"] == 10
    assert [name for name in names if "acquire" in name] == []  # the acquire is of the old session
    assert int(snap.threads["abandoned"][worker]) == 1


def _wait_until_inside_acquire(thread: threading.Thread) -> None:
    """Until `thread` runs its `lock.acquire()` line (where it blocks)."""
    for _ in range(5000):
        frame = sys._current_frames().get(thread.ident)
        if (
            frame is not None
            and linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() == "lock.acquire()"
        ):
            break
        time.sleep(0.001)
    time.sleep(0.02)  # from the line into the call


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_a_session_started_inside_a_callback_abandons_the_frames_around_it(capture, clock):
    restarted = []

    def key(x):
        if x == 3 and not restarted:
            restarted.append(x)
            fasthost.reset()  # sorted's frame and this callback's are of the old session
        math.cos(x)
        return -x

    def work():
        sorted(range(5), key=key)
        math.cos(0.0)

    snap = recorded(capture, work, clock=clock)
    # After the reset: key(3)'s and key(4)'s cos, then the last one; sorted
    # and key(3) close as abandoned, key(4) ran under no open frame.
    assert calls_of(snap, "math.cos") == 3
    assert calls_of(snap, "sorted") == 0
    assert errors(snap) == {"HOST_E_ABANDONED": 2}
    assert fasthost.depth() == 0


def _functions(source: str, count: int, filename: str) -> list:
    """`count` functions compiled from `source` (a def of `f` using math),
    each from a file of its own (`filename` and its number): call sites are
    told apart by file, line and function."""
    made = []
    for number in range(count):
        namespace = {"math": math}
        exec(compile(source, f"{filename}{number}", "exec"), namespace)
        made.append(namespace["f"])
    return made


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_call_sites_sharing_a_recent_cache_slot_keep_exact_counts(capture, clock):
    # The recent call-site slot is (code address / 16 + offset / 4) mod 256:
    # code objects 4 KiB apart take the same slots. Functions are made until
    # three of them share a base slot; calling them in turn evicts each
    # one's site from the cache on every call.
    by_slot: dict[int, list] = {}
    made = _functions("def f():\n    math.cos(0.5)\n    math.sin(0.5)\n", 4000, "<slots>")
    for function in made:
        by_slot.setdefault((id(function.__code__) >> 4) % 256, []).append(function)
    sharing = max(by_slot.values(), key=len)[:3]
    assert len(sharing) >= 2, "no two code objects share a slot"

    def work():
        for _ in range(50):
            for function in sharing:
                function()

    snap = recorded(capture, work, clock=clock)
    assert_exact(snap, "math.cos", 50 * len(sharing))
    assert site_counts(snap, "math.cos") == [50] * len(sharing)
    assert site_counts(snap, "math.sin") == [50] * len(sharing)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_300_call_sites_in_one_function_each_count_exactly(capture, clock):
    (function,) = _functions("def f():\n" + "    math.cos(0.5)\n" * 300, 1, "<sites>")
    snap = recorded(capture, lambda: [function() for _ in range(7)], clock=clock)
    assert_exact(snap, "math.cos", 2100)
    assert site_counts(snap, "math.cos") == [7] * 300


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_calls_at_offsets_past_65535_pair_and_count_at_their_own_lines(capture, clock):
    body = "".join(f"    x{i} = {i}\n" for i in range(20_000))  # 80,000 bytes of bytecode first
    (function,) = _functions("def f():\n" + body + "    math.cos(0.5)\n" * 20, 1, "<huge>")
    snap = recorded(capture, lambda: [function() for _ in range(5)], clock=clock)
    assert_exact(snap, "math.cos", 100)
    rows = snap.callsites[snap.callsites["function"] == "f"]
    assert sorted(int(r["line"]) for r in rows) == list(range(20_002, 20_022))
    assert site_counts(snap, "math.cos") == [5] * 20


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_one_call_site_calling_several_targets_counts_each(capture, clock):
    def python_function(x):
        return x

    functions = [math.cos, math.sin, python_function, math.cos]

    def work():
        for i in range(400):
            functions[i % 4](0.5)  # one site: two builtins and a Python function

    snap = recorded(capture, work, clock=clock)
    assert_exact(snap, "math.cos", 200)
    assert_exact(snap, "math.sin", 100)
    assert errors(snap) == {}


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_builtins_that_raise_close_their_frames_on_every_path(capture, clock):
    def work():
        for i in range(100):
            with contextlib.suppress(ValueError):
                math.sqrt(-1.0 if i % 2 else 1.0)

    snap = recorded(capture, work, clock=clock)
    assert_exact(snap, "math.sqrt", 100)
    assert errors(snap) == {}


def _sorted_recursion(depth: int):
    if depth == 0:
        return math.cos(1.0)
    return sorted([1], key=lambda _: _sorted_recursion(depth - 1))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_nested_calls_at_one_site_each_close_their_own_frame(capture, clock):
    snap = recorded(capture, lambda: [_sorted_recursion(40) for _ in range(3)], clock=clock)
    assert_exact(snap, "sorted", 120)
    assert calls_of(snap, "math.cos") == 3
    assert int(snap.threads["callback_calls"].sum()) == 120
    assert errors(snap) == {}


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_opens_refused_past_max_depth_still_pair_with_their_closes(capture, clock):
    snap = recorded(capture, lambda: _sorted_recursion(200), clock=clock, max_depth=300)
    refused = snap.totals["results"]["E_OUTOFMEMORY"]
    assert refused > 0
    # 300 frames fit: 150 sorted and their keys. Each builtin past them is
    # refused, and the key it calls is no callback (no U frame on top).
    assert (calls_of(snap, "sorted"), int(snap.threads["callback_calls"].sum())) == (150, 150)
    assert refused == 201 - 150
    # A capture's refused open leaves no entry, so its call makes no close
    # (which could only pop someone else's entry: a protocol open's).
    assert errors(snap) == {"E_OUTOFMEMORY": refused}
    assert fasthost.depth() == 0


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_max_targets_full_sends_calls_to_overflow_and_drops_call_sites_exactly(capture, clock):
    rounds = [None] * 20  # not range(20): capture_native records that call too

    def work():
        for _ in rounds:
            math.cos(1.0)
            math.sin(1.0)
            math.tan(1.0)
            math.exp(1.0)

    snap = recorded(capture, work, clock=clock, max_targets=2)
    assert int(snap.targets["calls"].sum()) == 80
    assert int(snap.callsites["calls"].sum()) + snap.meta["callsites_dropped"] == 80
    assert errors(snap) == {}


@pytest.mark.parametrize("capture", CAPTURES)
def test_cprofile_running_beside_a_capture_sees_every_call_and_so_does_fasthost(capture):
    if not MONITORING:
        pytest.skip("3.9-3.11: one profile hook per thread, which the capture sets aside for its length")
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        snap = recorded(capture, cos_loop)
    finally:
        profiler.disable()
    cos_calls = [
        stats[1] for key, stats in pstats.Stats(profiler).stats.items() if key[2] == "<built-in method math.cos>"
    ]
    assert cos_calls == [500]
    assert_exact(snap, "math.cos", 500)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("core", ["ctrace", "sysmon"])
def test_coverage_running_beside_a_capture_loses_no_calls(capture, core, tmp_path):
    coverage = pytest.importorskip("coverage")
    if core == "sysmon" and not MONITORING:
        pytest.skip("coverage's sys.monitoring core needs 3.12+")
    os.environ["COVERAGE_CORE"] = core
    try:
        cov = coverage.Coverage(data_file=None, branch=core == "ctrace")  # sysmon: no branches before 3.14
        cov.start()
        try:
            snap = recorded(capture, lambda: (cos_loop(), _sorted_recursion(3)))
        finally:
            cov.stop()
    finally:
        del os.environ["COVERAGE_CORE"]
    assert_exact(snap, "math.cos", 501)
    assert calls_of(snap, "sorted") == 3
    assert errors(snap) == {}


@pytest.mark.skipif(not MONITORING, reason="sys.monitoring is 3.12+")
@pytest.mark.parametrize("capture", CAPTURES)
def test_another_monitoring_tool_beside_a_capture_sees_every_call_and_so_does_fasthost(capture):
    monitoring = sys.monitoring
    events = monitoring.events
    tool = next(t for t in (0, 1, 2, 5) if monitoring.get_tool(t) is None)
    seen = {"calls": 0, "returns": 0}

    def on_call(code, offset, callable_, arg0):
        seen["calls"] += callable_ is math.cos

    def on_return(code, offset, callable_, arg0):
        seen["returns"] += callable_ is math.cos

    monitoring.use_tool_id(tool, "other")
    try:
        monitoring.register_callback(tool, events.CALL, on_call)
        monitoring.register_callback(tool, events.C_RETURN, on_return)
        monitoring.register_callback(tool, events.C_RAISE, on_return)
        monitoring.set_events(tool, events.CALL | events.C_RETURN | events.C_RAISE)
        before = monitoring.get_events(tool)  # CPython leaves C_RETURN and C_RAISE out of it
        snap = recorded(capture, cos_loop)
        assert monitoring.get_events(tool) == before
    finally:
        monitoring.set_events(tool, 0)
        monitoring.free_tool_id(tool)
    assert seen == {"calls": 500, "returns": 500}
    assert_exact(snap, "math.cos", 500)
    assert _core._monitor_tool_id() is None


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
@pytest.mark.skipif(_core._DEBUG_BUILD, reason="the debug profile's asserts call out of the callbacks")
def test_the_callbacks_common_case_makes_no_calls():
    """Each slow path is a tail call (a jmp), so the common case saves no
    registers: no call instruction in the callbacks."""
    names = ["fh_mon_on_call", "fh_mon_on_c_return"] if MONITORING else ["fh_profile_hook"]
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", _core.__file__], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in names:
        start = listing.index(next(line for line in listing if line.endswith(f"<{name}>:")))
        end = listing.index("", start)
        calls = [line for line in listing[start:end] if "\tcall" in line]
        assert calls == [], f"{name} makes calls: {calls}"


def _callback_workloads():
    """Builtins that call Python back, each with the exact counts it makes:
    (work, {target: calls}, callbacks)."""
    import ctypes
    import sqlite3

    def keys():
        sorted(range(20), key=lambda x: math.cos(x))
        min(range(20), key=lambda x: math.sin(x))
        sum(map(lambda x: math.cos(x), range(10)))

    def generator():
        def numbers():
            for i in range(30):
                math.cos(i)
                yield i

        sum(numbers())

    # connect() calls Python (each connection's statement cache is a
    # functools.lru_cache): made before the recording
    connection = sqlite3.connect(":memory:")

    def udf():
        connection.create_function("cosine", 1, lambda x: math.cos(x))
        connection.execute("select cosine(1.0), cosine(2.0)").fetchall()
        connection.close()

    compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    compared = []

    def compare(a, b):
        compared.append(math.cos(0.5))
        return a[0] - b[0]

    comparator = compare_type(compare)
    libc = ctypes.CDLL(None)

    def qsort():
        values = (ctypes.c_int * 40)(*range(40, 0, -1))
        libc.qsort(values, 40, ctypes.sizeof(ctypes.c_int), comparator)

    return {
        "keys": (keys, {"sorted": 1, "min": 1, "sum": 1, "math.cos": 30, "math.sin": 20}, lambda: 50),
        "generator": (generator, {"sum": 1, "math.cos": 30}, lambda: 31),  # each resumption, and the end
        "sqlite3": (udf, {"math.cos": 2}, lambda: 2),
        "qsort": (qsort, {"math.cos": None}, lambda: len(compared)),
    }


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
@pytest.mark.parametrize("workload", ["keys", "generator", "sqlite3", "qsort"])
def test_builtins_inside_callbacks_pair_and_count_exactly(capture, clock, workload):
    work, expected, callbacks = _callback_workloads()[workload]
    snap = recorded(capture, work, clock=clock)
    for name, calls in expected.items():
        assert_exact(snap, name, callbacks() if calls is None else calls)
    # A ctypes comparator is a callback where its qsort is a U frame: under
    # capture_native on 3.12+ (the library was loaded before the capture).
    if workload != "qsort" or (capture == "native" and MONITORING):
        assert int(snap.threads["callback_calls"].sum()) == callbacks()
    assert errors(snap) == {}
    assert fasthost.depth() == 0


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("clock", INLINE_CLOCKS)
def test_a_capture_started_while_the_last_one_drains_counts_every_call_once(capture, clock):
    fasthost.start(clock=clock)
    lock = threading.Lock()
    lock.acquire()
    inside, done = threading.Event(), threading.Event()

    def worker():
        inside.set()
        lock.acquire()
        cos_loop(7)
        done.set()

    try:
        first = CAPTURES[capture]().start()
        thread = threading.Thread(target=worker)
        thread.start()
        inside.wait()
        _wait_until_inside_acquire(thread)
        first.stop()
        draining = MONITORING and _core._monitor_tool_id() is not None
        with CAPTURES[capture]():
            lock.release()
            done.wait()
            cos_loop(11)
            thread.join()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert draining or not MONITORING
    assert_exact(snap, "math.cos", 18)
    assert open_frames_of_the_test(snap) == 0
    assert errors(snap) == {}
    assert _core._monitor_tool_id() is None


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_recursive_key_started_while_the_capture_drains_returns_without_closing_its_callers_sort(capture):
    # The worker's inner sorted() was called by key() itself; its second key
    # call starts while the capture drains and returns under a new capture.
    # Its return is key()'s, not the inner sorted()'s: that closes at its
    # own return, counted once.
    fasthost.start(clock="monotonic")
    to_main, to_worker = threading.Event(), threading.Event()

    def key(value):
        if value == "outer":
            return sorted([1, 2], key=key)
        to_main.set()
        assert to_worker.wait(10)
        to_worker.clear()
        return value

    thread = threading.Thread(target=lambda: sorted(["outer"], key=key))
    try:
        first = CAPTURES[capture]().start()
        thread.start()
        assert to_main.wait(10)  # the worker is inside key(1)
        to_main.clear()
        first.stop()
        to_worker.set()
        assert to_main.wait(10)  # inside key(2), started while draining
        to_main.clear()
        with CAPTURES[capture]():
            to_worker.set()
            thread.join()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    assert calls_of(snap, "sorted") == 2
    assert errors(snap) == {}
    assert open_frames_of_the_test(snap) == 0
    assert _core._monitor_tool_id() is None


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("how", ["reset", "restart", "restart at precision 2"])
def test_a_thread_calling_at_a_known_call_site_across_a_new_session_counts_only_the_new_ones(capture, how):
    """Another thread's call site is in its caches, its rows made, when
    reset() or start() begins a new session: its next calls there make a
    new site (the old one went with the session), in their own buckets."""
    fasthost.start(clock="manual")
    paused, resume = threading.Event(), threading.Event()

    def worker():
        _any_calls([100] * 20)  # the last ones took the fast close
        paused.set()
        resume.wait()
        _any_calls([100, 3, 2**33] * 5)

    try:
        with CAPTURES[capture]():
            thread = threading.Thread(target=worker)
            thread.start()
            paused.wait()
            try:
                if how == "reset":
                    fasthost.reset()
                else:
                    fasthost.stop()
                    fasthost.start(clock="manual", precision=2 if how.endswith("2") else 5)
            finally:
                resume.set()
                thread.join()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    (row,) = snap.targets[snap.targets["symbol"] == "any"]
    at = snap.callsites["target"] == int(row["target"])
    assert [int(n) for n in snap.callsites[at]["calls"]] == [15] == [int(row["calls"])]
    expected = np.bincount([_bucket(ns, 3) for ns in [100, 3, 2**33] * 5], minlength=snap.callsite_counts.shape[1])
    assert snap.callsite_counts[at][0].tolist() == expected.tolist()
    assert int(snap.callsites[at]["total_ns"][0]) == 5 * (100 + 3 + 2**33)
