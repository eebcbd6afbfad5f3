"""Call sites: for every native target, which Python code called it, with
exact counts, on every Python (docs/protocol.md §4)."""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fasthost
from fasthost import _testing
from fasthost.export.callsites import SITE_BUCKETS, SITE_PRECISION
from fasthost.export.report import called_from, format_ns

from .conftest import run_threads, run_threads_in_turn


@pytest.fixture
def session():
    fasthost.start(clock="monotonic")
    yield
    fasthost.stop()


def here() -> int:
    """The line of the caller."""
    return sys._getframe(1).f_lineno


def sites_of(snap, name):
    (address,) = [int(r["target"]) for r in snap.targets if str(r["symbol"]) == name]
    rows = snap.callsites[snap.callsites["target"] == address]
    return {(str(r["function"]), int(r["line"])): int(r["calls"]) for r in rows}, rows


def two_places():
    lines = []
    for _ in range(30):
        math.cos(0.5); lines.append(here())  # fmt: skip  # noqa: E702
    for _ in range(7):
        math.cos(0.25); lines.append(here())  # fmt: skip  # noqa: E702
    return sorted(set(lines))


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_each_call_site_of_a_target_has_its_exact_count(session, capture):
    with fasthost.capture_native() if capture == "native" else fasthost.capture_builtins():
        first, second = two_places()
    counts, rows = sites_of(fasthost.snapshot(), "math.cos")
    assert counts == {("two_places", first): 30, ("two_places", second): 7}
    assert set(rows["file"].tolist()) == {__file__}
    assert (rows["exclusive_ns"] <= rows["total_ns"]).all()


def test_call_sites_add_up_over_threads(session):
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(250):
            math.sqrt(2.0)

    line = work.__code__.co_firstlineno + 3  # the math.sqrt line
    with fasthost.capture_builtins():
        run_threads(work, 4)
    counts, _ = sites_of(fasthost.snapshot(), "math.sqrt")
    function = "test_call_sites_add_up_over_threads.<locals>.work" if sys.version_info >= (3, 11) else "work"
    assert counts == {(function, line): 1000}


def test_call_sites_of_threads_folded_into_the_ended_row_stay_exact(session):
    """Past 64 ended threads a session folds the next ones into one row:
    their call sites' counts and histograms add up exactly there."""

    def work():
        for _ in range(10):
            math.sqrt(2.0)

    line = work.__code__.co_firstlineno + 2  # the math.sqrt line
    with fasthost.capture_builtins():
        run_threads_in_turn(work, 70)
    snap = fasthost.snapshot()
    assert any(str(name).endswith(" ended threads>") for name in snap.threads["name"])
    counts, _ = sites_of(snap, "math.sqrt")
    function = work.__qualname__ if sys.version_info >= (3, 11) else "work"
    assert counts == {(function, line): 700}
    sqrt = snap.callsites["target"] == int(snap.targets[snap.targets["symbol"] == "math.sqrt"]["target"][0])
    assert int(snap.callsite_counts[sqrt].sum()) == 700


def test_a_call_site_counts_past_2_32_calls_in_one_bucket(tmp_path):
    """A call site's histogram has 64-bit counts, as a target's: a hot
    loop calls one place 2**32 times in minutes. The counts are added in
    one step (fasthost._testing), in threads that end and fold into the
    ended-threads row, where their sums pass 2**32 too."""
    code, where, target, ns = id(here.__code__), 8, 0x5EED, 100
    fasthost.start(clock="manual")
    try:
        fasthost.leave_runtime(1)
        fasthost.enter_runtime()
        _testing.add_site_samples(code, where, target, ns, 2**32 + 5)

        def work():
            fasthost.leave_runtime(1)
            fasthost.enter_runtime()
            _testing.add_site_samples(code, where, target, ns, 2**31)

        run_threads_in_turn(work, 66)  # the last two fold into one row: 2**32 there
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    total = 2**32 + 5 + 66 * 2**31
    snap.save(tmp_path / "big.npz")
    for loaded in (snap, fasthost.load(tmp_path / "big.npz")):
        (site,) = loaded.callsites[loaded.callsites["target"] == target]
        assert int(site["calls"]) == total
        assert int(loaded.callsite_counts[loaded.callsites["target"] == target].sum()) == total


def test_call_sites_sum_to_the_targets_calls_and_times(session):
    with fasthost.capture_builtins():
        two_places()
        sorted([3, 1, 2])
    snap = fasthost.snapshot()
    for row in snap.targets:
        sites = snap.callsites[snap.callsites["target"] == row["target"]]
        assert int(sites["calls"].sum()) == int(row["calls"])
        assert int(sites["total_ns"].sum()) == int(row["total_ns"])
        assert int(sites["exclusive_ns"].sum()) == int(row["exclusive_ns"])


def test_callsites_off_records_the_targets_only(session):
    with fasthost.capture_builtins(callsites=False):
        two_places()
    snap = fasthost.snapshot()
    assert int(snap.targets["calls"].sum()) >= 37
    assert len(snap.callsites) == 0


def test_callsites_must_be_a_bool():
    with pytest.raises(TypeError, match="callsites must be True or False"):
        fasthost.capture_builtins(callsites="yes")


def test_reset_forgets_the_call_sites(session):
    with fasthost.capture_builtins():
        two_places()
    fasthost.reset()
    assert len(fasthost.snapshot().callsites) == 0


def test_call_sites_survive_save_load_merge_and_diff(session, tmp_path):
    with fasthost.capture_builtins():
        two_places()
    first = fasthost.snapshot()
    with fasthost.capture_builtins():
        two_places()
    second = fasthost.snapshot()
    path = tmp_path / "run.npz"
    second.save(path)
    loaded = fasthost.load(path)
    assert loaded == second
    assert sites_of(loaded, "math.cos")[0] == sites_of(second, "math.cos")[0]
    assert sorted(sites_of(second - first, "math.cos")[0].values()) == [7, 30]
    assert sorted(sites_of(fasthost.merge([first, second]), "math.cos")[0].values()) == [21, 90]


def test_report_and_json_say_where_each_top_target_was_called_from(session):
    with fasthost.capture_builtins():
        first, second = two_places()
    snap = fasthost.snapshot()
    text = snap.report()
    assert f"from test_callsites.py:{first} two_places" in text
    assert f"from test_callsites.py:{second} two_places" in text
    (cos,) = [t for t in json.loads(json.dumps(snap.to_dict()))["targets"] if t["symbol"] == "math.cos"]
    places = {(site["line"], site["calls"]) for site in cos["called_from"]}
    assert places == {(first, 30), (second, 7)}
    for site in cos["called_from"]:
        assert site["p50_ns"] <= site["p99_ns"]
    assert called_from(snap, 0x1) == []


@pytest.mark.skipif(sys.version_info < (3, 12), reason="ufunc calls are seen through sys.monitoring (3.12+)")
def test_ufunc_call_sites_under_the_native_capture(session):
    a = np.ones(3)
    with fasthost.capture_native():
        for _ in range(12):
            np.multiply(a, a); line = here()  # fmt: skip  # noqa: E702
    counts, _ = sites_of(fasthost.snapshot(), "numpy.multiply")
    function = "test_ufunc_call_sites_under_the_native_capture"
    assert counts == {(function, line): 12}


def _one_long_call(ns: int) -> None:
    """One call of `any` lasting exactly `ns` on the manual clock."""
    _testing.set_manual_time(1)
    any(map(_testing.advance_manual_time, [ns]))


def test_call_site_times_past_2_64_ns_wrap_as_their_targets_do(tmp_path):
    """Two threads each make a 2**63-ns call at one line: the line's time
    is past 2**64 ns. It wraps as the uint64 counters of the core and a
    target's sums over threads do; snapshot() and merge() do not fail."""
    ns = 2**63 + 5
    fasthost.start(clock="manual")
    try:
        with fasthost.capture_builtins():
            run_threads(lambda: _one_long_call(ns), 2)
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    merged = fasthost.merge([snap, snap])
    for combined, calls in ((snap, 2), (merged, 4)):
        (row,) = combined.targets[combined.targets["symbol"] == "any"]
        (site,) = combined.callsites[combined.callsites["target"] == row["target"]]
        assert int(site["calls"]) == int(row["calls"]) == calls
        assert int(site["total_ns"]) == int(row["total_ns"]) == calls * ns % 2**64
        assert int(site["exclusive_ns"]) == int(row["exclusive_ns"]) == calls * ns % 2**64
        at = combined.callsites["target"] == row["target"]
        assert int(combined.callsite_counts[at].sum()) == calls


def _site_of_any(snap):
    """The one call site of `any`: its row and its histogram counts."""
    at = snap.callsites["target"] == int(snap.targets[snap.targets["symbol"] == "any"]["target"][0])
    (site,) = snap.callsites[at]
    return site, snap.callsite_counts[at][0]


def _buckets(durations: list[int]) -> list[int]:
    """The call-site histogram of `durations` (precision 3)."""
    hist = fasthost.Histogram(SITE_PRECISION)
    hist.record_many(np.array(durations, dtype=np.uint64))
    return hist.counts.tolist()


def test_call_site_histograms_of_ended_threads_fold_bucket_by_bucket_and_diff_exactly():
    """70 threads that end, each calling one line with durations of its own
    (rows the folded row has not seen yet): past the 64 the session keeps,
    their site histograms add up bucket by bucket in the ended-threads
    row, and the diff over the last threads is theirs alone."""
    durations = [[2 ** (i % 62) + i, i, 2 ** (i % 62) + i] for i in range(70)]

    def calls(mine):
        for ns in mine:
            _one_long_call(ns)

    fasthost.start(clock="manual")
    try:
        with fasthost.capture_builtins():
            for i, mine in enumerate(durations):
                if i == 66:
                    earlier = fasthost.snapshot()
                thread = threading.Thread(target=calls, args=(mine,))
                thread.start()
                thread.join()
        later = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert any(str(name).endswith(" ended threads>") for name in later.threads["name"])
    every = [ns for mine in durations for ns in mine]
    site, counts = _site_of_any(later)
    assert (int(site["calls"]), int(site["total_ns"])) == (210, sum(every) % 2**64)
    assert counts.tolist() == _buckets(every)
    site, counts = _site_of_any(later.diff(earlier))
    assert int(site["calls"]) == 12
    assert counts.tolist() == _buckets([ns for mine in durations[66:] for ns in mine])


def _site_bucket(ns: int) -> int:
    hist = fasthost.Histogram(SITE_PRECISION)
    hist.record(ns)
    return int(np.flatnonzero(hist.counts)[0])


def test_called_from_quantiles_lie_in_the_bucket_of_each_sites_exact_quantile():
    """One target called from two lines with durations of their own, on
    the manual clock: each line's p50 and p99 (report, to_dict) are in the
    precision-3 bucket of the exact quantile of that line's durations."""
    fast = [3, 17, 31, 32, 33, 40, 64, 100, 1000, 1023] * 10
    slow = [5_000_000 + 77 * i for i in range(49)] + [2**40 + 1]

    def work():
        for ns in fast:
            _one_long_call(ns)
        for ns in slow:  # not _one_long_call: a line of its own
            _testing.set_manual_time(1)
            any(map(_testing.advance_manual_time, [ns]))

    fasthost.start(clock="manual")
    try:
        with fasthost.capture_native():
            work()
    finally:
        fasthost.stop()
    snap = fasthost.snapshot()
    (row,) = snap.targets[snap.targets["symbol"] == "any"]
    found = {site["calls"]: site for site in called_from(snap, int(row["target"]))}
    text = snap.report()
    for durations in (fast, slow):
        site = found[len(durations)]
        for q, name in ((0.5, "p50_ns"), (0.99, "p99_ns")):
            exact = int(np.quantile(durations, q, method="inverted_cdf"))
            assert _site_bucket(int(site[name])) == _site_bucket(exact), (name, site[name], exact)
        assert f"{format_ns(site['p50_ns']):>9} {format_ns(site['p99_ns']):>9}" in text


def _lines(count: int, body: str) -> list:
    """`count` functions `f(durations)`, each from a file of its own, whose
    `body` makes one call site: sites told apart by file."""
    made = []
    for number in range(count):
        namespace = {"adv": _testing.advance_manual_time, "set_time": _testing.set_manual_time, "math": math}
        exec(compile("def f(durations):\n" + body, f"<memory{number}>", "exec"), namespace)
        made.append(namespace["f"])
    return made


def _thread_bytes(work) -> int:
    """The core's bytes for a thread that runs `work` (in the session)."""
    seen = {}

    def run():
        work()
        rows = fasthost.memory_usage()["threads"]
        seen["bytes"] = int(rows[rows["tid"] == threading.get_native_id()]["bytes"][0])

    run_threads(run, 1)
    return seen["bytes"]


def test_call_sites_hold_memory_for_the_rows_they_use_up_to_max_targets_sites():
    """A site is its counters and row pointers (under 1 KiB with its one
    row, where an inline 32-bit histogram took 2 KiB); one whose durations
    reach all 62 rows holds them all, and a thread holds at most
    max_targets sites, so its memory stays bounded."""
    body = "    for ns in durations:\n        set_time(1); any(map(adv, [ns]))\n"
    every_row = [0, 8, *(2**k for k in range(4, 64))]
    site_and_rows = 544 + 62 * 64  # the fh_site record and 62 rows of 8 counts
    fasthost.start(clock="manual", max_targets=1024)
    try:
        with fasthost.capture_builtins():
            one = _thread_bytes(lambda: [f([100]) for f in _lines(1, body)])
            many = _thread_bytes(lambda: [f([100]) for f in _lines(500, body)])
            full = _thread_bytes(lambda: [f(every_row) for f in _lines(600, body)])
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    # 500 sites of `any` and 500 of set_time (one line, two calls): 1000 sites
    assert (many - one) / 999 < 1024
    # 1024 sites at most: 512 of `any` (every row) and 512 of set_time (one row)
    # besides: the site index as it doubled (~48 KiB), the target's own rows
    # (~15 KiB) and an arena chunk's unused tail (< 64 KiB)
    assert full - one <= 512 * site_and_rows + 512 * (544 + 64) + 128 * 1024
    assert snap.meta["callsites_dropped"] >= 2 * (600 - 512) * len(every_row)  # the cap was reached


FORKED_SITES = r"""
import json, os, sys, threading
import numpy as np
import fasthost
from fasthost import _testing

def calls(durations):
    for ns in durations:
        _testing.set_manual_time(1)
        any(map(_testing.advance_manual_time, [ns]))

def site(snap):
    at = snap.callsites["target"] == int(snap.targets[snap.targets["symbol"] == "any"]["target"][0])
    return [int(snap.callsites[at]["calls"].sum()), np.flatnonzero(snap.callsite_counts[at].sum(axis=0)).tolist()]

fasthost.start(clock="manual")
capture = fasthost.capture_builtins().start()
calls([100] * 50)  # the parent's site, its rows made: the child's calls could take its fast path
go = threading.Event()  # the worker is inside a builtin (its wait) at the fork
worker = threading.Thread(target=lambda: (go.wait(), calls([5000] * 50)))
worker.start()
pid = os.fork()
if pid == 0:
    calls([100, 2**40, 3] * 10)
    capture.stop()
    fasthost.stop()
    sys.stdout.write(json.dumps(site(fasthost.snapshot())) + "\n"); sys.stdout.flush()
    os._exit(0)
go.set()
worker.join()  # one thread at a time moves the manual clock
calls([100] * 50)
os.waitpid(pid, 0)
capture.stop()
fasthost.stop()
sys.stdout.write(json.dumps(site(fasthost.snapshot())) + "\n")
"""


def test_a_forked_child_counts_only_its_own_calls_at_a_call_site():
    """A child forked inside a capture, while the parent has recorded at a
    call site and another thread is inside a builtin: the child's site
    holds its own calls, in their buckets; the parent's its own."""
    proc = subprocess.run([sys.executable, "-c", FORKED_SITES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    child, parent = (json.loads(line) for line in proc.stdout.splitlines())
    buckets = [int(np.flatnonzero(_buckets([ns]))[0]) for ns in (3, 100, 5000, 2**40)]
    assert child == [30, [buckets[0], buckets[1], buckets[3]]]
    assert parent == [150, [buckets[1], buckets[2]]]


def test_a_snapshot_of_32_threads_at_1000_sites_stays_far_below_their_dense_histograms():
    """32 threads each call math.cos from the same 1,000 lines (one
    histogram row each). Copied densely, their histograms would take 32 x
    1,000 x 3.9 KiB = 121 MiB (a snapshot peaked at 185 MiB); the core
    copies only the rows the sites have, so the peak is the public array
    (one dense row per line: 3.9 MiB) and under 1 KiB per thread's site."""
    nthreads, nsites = 32, 1000
    made = _lines(nsites, "    math.cos(0.5)\n")
    fasthost.start(clock="monotonic")
    try:
        with fasthost.capture_builtins():
            run_threads(lambda: [f(None) for f in made], nthreads)
    finally:
        fasthost.stop()
    tracemalloc.start()
    try:
        snap = fasthost.snapshot()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    cos = snap.callsites["target"] == int(snap.targets[snap.targets["symbol"] == "math.cos"]["target"][0])
    assert cos.sum() == nsites
    assert (snap.callsites["calls"][cos] == nthreads).all()
    assert (snap.callsite_counts[cos].sum(axis=1) == nthreads).all()
    public = nsites * SITE_BUCKETS * 8
    assert peak < public + nthreads * nsites * 1024


# Durations one per histogram bucket: round k of a writer records 2**k + 3
# ns, k + 1 times, so every bucket holds one duration and a multiple of
# k + 1 calls, and a site's times follow from its histogram alone.
ROUND_NS = [2**k + 3 for k in range(40)]
WHERES = (8, 16)  # two offsets of one (unnamed) code object: one row in callsites


def _round_of_bucket() -> dict[int, int]:
    rounds = {_site_bucket(ns): k for k, ns in enumerate(ROUND_NS)}
    assert len(rounds) == len(ROUND_NS)
    return rounds


def _record_round(k: int, targets: range) -> None:
    for target in targets:
        for where in WHERES:
            _testing.add_site_samples(id(_record_round.__code__), where, target, ROUND_NS[k], k + 1)


def _consistent_sites(snap, targets: range) -> dict[int, np.ndarray]:
    """Each site's histogram, checked against its counters: calls are the
    counts, total and self time the counts times their bucket's one
    duration, every bucket a whole number of rounds."""
    rounds = _round_of_bucket()
    found = {}
    for row, counts in zip(snap.callsites, snap.callsite_counts):
        target = int(row["target"])
        if target not in targets:
            continue
        filled = np.flatnonzero(counts).tolist()
        assert set(filled) <= set(rounds), (target, filled)
        assert int(row["calls"]) == int(counts.sum())
        total = sum(int(counts[b]) * ROUND_NS[rounds[b]] for b in filled)
        assert int(row["total_ns"]) == int(row["exclusive_ns"]) == total % 2**64
        assert all(int(counts[b]) % (rounds[b] + 1) == 0 for b in filled)
        found[target] = counts.astype(np.int64)
    return found


def _expected_counts(rounds_done: list[int]) -> np.ndarray:
    """A site's histogram once writers have done these rounds, each at both offsets."""
    counts = np.zeros(SITE_BUCKETS, dtype=np.int64)
    for k in rounds_done:
        counts[_site_bucket(ROUND_NS[k])] += len(WHERES) * (k + 1)
    return counts


def _grows(earlier: dict[int, np.ndarray], later: dict[int, np.ndarray]) -> bool:
    return all(target in later and (later[target] >= counts).all() for target, counts in earlier.items())


def test_call_site_histograms_stay_exact_in_snapshots_taken_while_threads_record(tmp_path):
    """8 threads record at 64 sites (two offsets each), 5 times over, a
    new histogram row per round (the first time) while the main thread
    takes snapshots: every snapshot's sites
    hold exactly what their counters say, no count goes down from one
    snapshot to the next, and the last one, a file of it, a merge and a
    diff hold exactly what was recorded."""
    nthreads, passes, targets = 8, 5, range(0x5000, 0x5040)
    halfway, snapped = threading.Event(), threading.Event()

    def write(first: bool) -> None:
        fasthost.leave_runtime(1)  # recording on this thread
        fasthost.enter_runtime()
        for k in list(range(len(ROUND_NS))) * passes:
            _record_round(k, targets)
            if first and k == 20 and not halfway.is_set():
                halfway.set()
                snapped.wait(60)  # one snapshot surely sees this thread half done
            time.sleep(0)  # let the snapshots in

    writers = [threading.Thread(target=write, args=(i == 0,)) for i in range(nthreads)]
    fasthost.start(clock="manual")
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for writer in writers:
            writer.start()
        assert halfway.wait(60)
        seen = [_consistent_sites(fasthost.snapshot(), targets)]
        middle = fasthost.snapshot()
        snapped.set()
        while any(writer.is_alive() for writer in writers):
            seen.append(_consistent_sites(fasthost.snapshot(), targets))
        last = fasthost.snapshot()
    finally:
        snapped.set()  # the writers finish in the session, whatever failed
        for writer in writers:
            if writer.ident is not None:
                writer.join()
        sys.setswitchinterval(switch)
        fasthost.stop()
    seen.append(_consistent_sites(last, targets))
    assert all(_grows(a, b) for a, b in zip(seen, seen[1:]))
    everything = nthreads * passes * _expected_counts(list(range(len(ROUND_NS))))
    assert 0 < sum(int(c.sum()) for c in seen[0].values()) < len(targets) * int(everything.sum())
    assert set(seen[-1]) == set(targets)
    assert all((counts == everything).all() for counts in seen[-1].values())
    last.save(tmp_path / "last.npz")
    middle_sites = _consistent_sites(middle, targets)
    for loaded in (fasthost.load(tmp_path / "last.npz"), fasthost.merge([last.diff(middle), middle])):
        assert all((counts == everything).all() for counts in _consistent_sites(loaded, targets).values())
    since = _consistent_sites(last.diff(middle), targets)
    for target in targets:
        assert (since.get(target, 0) + middle_sites.get(target, 0) == everything).all()
    merged = _consistent_sites(fasthost.merge([last, middle]), targets)
    assert all((merged[t] == everything + middle_sites.get(t, 0)).all() for t in targets)


def test_call_site_histograms_stay_exact_while_ended_threads_fold_during_snapshots():
    """80 threads run one after another, each recording one round at 16
    sites (a row the ended-threads row may not have yet), and a snapshot
    is taken as each one ends: past 64 ended threads each is folded into
    that row by its own exit, with no GIL held, after join() has returned,
    so while the snapshot sizes and copies. Every snapshot is exact; the
    last holds every thread's rounds."""
    nthreads, targets = 80, range(0x6000, 0x6010)

    def work(k: int) -> None:
        fasthost.leave_runtime(1)
        fasthost.enter_runtime()
        _record_round(k, targets)

    seen = []
    fasthost.start(clock="manual")
    try:
        for i in range(nthreads):
            thread = threading.Thread(target=work, args=(i % len(ROUND_NS),))
            thread.start()
            thread.join()
            seen.append(_consistent_sites(fasthost.snapshot(), targets))
        last = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert any(str(name).endswith(" ended threads>") for name in last.threads["name"])
    seen.append(_consistent_sites(last, targets))
    assert all(_grows(a, b) for a, b in zip(seen, seen[1:]))
    everything = _expected_counts([i % len(ROUND_NS) for i in range(nthreads)])
    assert set(seen[-1]) == set(targets)
    assert all((counts == everything).all() for counts in seen[-1].values())


@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="from 3.12 the garbage collector runs between bytecodes only, never inside snapshot()'s copy",
)
@pytest.mark.parametrize("made", ["rows", "sites"])
def test_call_site_rows_made_between_a_snapshots_sizing_and_its_copy_are_copied(made):
    """The garbage collector runs while the core's copy makes its arrays,
    after counting what to copy: a gc callback then gives 100 sites (two
    offsets each) a second row, or makes 100 new ones, more than the room
    left for growth. The copy finds its arrays too small, sizes again and
    copies every row, exactly."""
    from fasthost import _core
    from fasthost.export.snapshot import Snapshot

    targets = range(0x7000, 0x7064)
    later = targets if made == "rows" else range(0x7100, 0x7164)

    def collect():
        return _core._collect()

    fired = []

    def grow(phase, info):
        # Only a collection inside collect(): no Python code runs there
        # but the gc's, and _collect counts before it allocates.
        if phase == "start" and not fired and sys._getframe(1).f_code is collect.__code__:
            fired.append(True)
            _record_round(35, later)

    fasthost.start(clock="manual")
    threshold = gc.get_threshold()
    try:
        fasthost.leave_runtime(1)
        fasthost.enter_runtime()
        _record_round(1, targets)
        gc.callbacks.append(grow)
        gc.set_threshold(1)
        try:
            raw = collect()
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.remove(grow)
    finally:
        fasthost.stop()
    assert fired
    sites = _consistent_sites(Snapshot._from_core(raw), range(0x7000, 0x7164))
    expected = {target: [1] for target in targets}
    for target in later:
        expected.setdefault(target, []).append(35)
    assert set(sites) == set(expected)
    assert all((sites[target] == _expected_counts(rounds)).all() for target, rounds in expected.items())


def _capture(capture):
    return fasthost.capture_native() if capture == "native" else fasthost.capture_builtins()


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_each_short_lived_code_object_keeps_its_own_call_site(session, capture):
    """A call site is its code object's address, so the code is kept alive
    from the close that first records it. 300 code objects, each made,
    called from and dropped in turn (unkept, the next one would be made at
    the same address), are 300 call sites, each with its own file and
    count."""
    with _capture(capture):
        for number in range(300):
            source = f"for _ in range({number % 3 + 1}):\n    cos(0.5)\n"
            exec(compile(source, f"<short{number}>", "exec"), {"cos": math.cos})
    _, rows = sites_of(fasthost.snapshot(), "math.cos")
    assert sorted((str(r["file"]), int(r["line"]), int(r["calls"])) for r in rows) == sorted(
        (f"<short{number}>", 2, number % 3 + 1) for number in range(300)
    )


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_a_call_that_returns_while_the_capture_drains_keeps_its_call_site(session, capture):
    """A builtin called inside the capture and returning after its stop is
    closed by the draining capture, which records its call site then (and
    keeps the code object, gone by the time of the snapshot)."""
    inside, release = threading.Event(), threading.Event()

    def key(value):
        if not inside.is_set():
            inside.set()
            release.wait()
        return value

    source = "sorted([2, 1], key=key)\n"
    worker = threading.Thread(target=lambda: exec(compile(source, "<drained>", "exec"), {"key": key}))
    capture_ = _capture(capture).start()
    try:
        worker.start()
        assert inside.wait(10)
    finally:
        capture_.stop()  # the worker is inside sorted(), in its key
        release.set()
        worker.join()
    del worker
    _, rows = sites_of(fasthost.snapshot(), "sorted")
    assert [(str(r["file"]), int(r["line"]), int(r["calls"])) for r in rows] == [("<drained>", 1, 1)]


def _sorted_sites(snap):
    """(file, line, calls, total_ns) of every call site of ``sorted``."""
    (address,) = [int(r["target"]) for r in snap.targets if str(r["symbol"]) == "sorted"]
    rows = snap.callsites[snap.callsites["target"] == address]
    return sorted((str(r["file"]), int(r["line"]), int(r["calls"]), int(r["total_ns"])) for r in rows)


def _run_on_the_manual_clock(capture, source, namespace, name="<attack>"):
    """Runs `source` (compiled as file `name`, then dropped) under the
    capture, on the manual clock; returns the snapshot. Inside ``any(...)``
    the code calls C from C (map, starmap, partial: no events), so the
    sorted's frame lasts exactly what ``adv`` advanced."""
    fasthost.start(clock="manual")
    try:
        with _capture(capture):
            exec(compile(source, name, "exec"), {"adv": _testing.advance_manual_time, **namespace})
        return fasthost.snapshot()
    finally:
        fasthost.stop()


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_a_call_open_across_reset_is_abandoned_and_the_next_call_of_its_code_is_named_and_exact(capture):
    """reset() inside a builtin: the open frame belongs to the old session
    (abandoned, none of its time in the new one), and a later call of the
    same code object (its close the first of the new session, which keeps
    the code anew) is named after its line with its exact duration."""
    from itertools import chain, starmap

    source = (
        "for _ in range(2):\n"
        "    sorted(map(id, chain(map(adv, [5]), starmap(reset, [()]), map(adv, [7]))))\n"
        "sorted(map(adv, [3]))\n"
    )
    snap = _run_on_the_manual_clock(capture, source, {"chain": chain, "starmap": starmap, "reset": fasthost.reset})
    assert _sorted_sites(snap) == [("<attack>", 3, 1, 3)]
    (row,) = snap.targets[snap.targets["symbol"] == "sorted"]
    assert (int(row["calls"]), int(row["total_ns"])) == (1, 3)
    assert snap.totals["results"]["HOST_E_ABANDONED"] >= 1  # the sorted() open at the last reset, and exec()


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_a_call_open_across_stop_and_start_is_named_in_neither_session_and_later_calls_are(capture):
    from functools import partial
    from itertools import chain, starmap

    source = (
        "sorted(map(id, chain(map(adv, [5]), starmap(stop, [()]), starmap(start, [()]), map(adv, [7]))))\n"
        "sorted(map(adv, [11]))\n"
    )
    start = partial(fasthost.start, clock="manual")
    namespace = {"chain": chain, "starmap": starmap, "stop": fasthost.stop, "start": start}
    snap = _run_on_the_manual_clock(capture, source, namespace)
    assert _sorted_sites(snap) == [("<attack>", 2, 1, 11)]


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_a_call_whose_functions_code_is_replaced_while_it_is_open_is_named_after_the_code_that_made_it(capture):
    """f.__code__ replaced inside the call f makes: the frame keeps the
    code it runs, and the call site is that code's line; f's next call
    runs the new code, a site of its own."""
    from functools import partial
    from itertools import chain, starmap

    source = (
        "def f():\n"
        "    sorted(map(id, chain(map(adv, [5]), starmap(replace, [()]), map(adv, [7]))))\n"
        "def g():\n"
        "    sorted(map(adv, [11]))\n"
        "replace = partial(setattr, f, '__code__', g.__code__)\n"
        "f()\n"
        "f()\n"
        "del f, g, replace\n"
    )
    snap = _run_on_the_manual_clock(capture, source, {"chain": chain, "starmap": starmap, "partial": partial})
    assert _sorted_sites(snap) == [("<attack>", 2, 1, 12), ("<attack>", 4, 1, 11)]


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_calls_from_generators_and_lambdas_dropped_right_after_keep_their_sites(capture):
    source = "gen = (sorted(map(adv, [n])) for n in (4, 6))\nnext(gen)\ndel gen\n(lambda: sorted(map(adv, [9])))()\n"
    snap = _run_on_the_manual_clock(capture, source, {})
    names = {int(r["line"]): str(r["function"]) for r in snap.callsites}
    assert _sorted_sites(snap) == [("<attack>", 1, 1, 4), ("<attack>", 4, 1, 9)]
    assert "genexpr" in names[1]
    assert "lambda" in names[4]


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_threads_calling_from_fresh_code_objects_while_snapshots_are_taken_keep_every_site_exact(session, capture):
    """8 threads, each making, calling from and dropping 40 code objects
    (addresses freed and made again all the time) while this thread takes
    snapshots: every site is its own file with its exact count, in every
    snapshot no count above it, and at the end all of them."""
    done = threading.Event()
    seen = []

    def work(thread):
        for number in range(40):
            source = f"for _ in range({number % 4 + 1}):\n    cos(0.5)\n"
            exec(compile(source, f"<t{thread}-{number}>", "exec"), {"cos": math.cos})

    def snapshots():
        while not done.is_set():
            seen.append(fasthost.snapshot())

    expected = {(f"<t{t}-{n}>", 2): n % 4 + 1 for t in range(8) for n in range(40)}
    with _capture(capture):
        taker = threading.Thread(target=snapshots)
        taker.start()
        try:
            threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            done.set()
            taker.join()
    assert len(seen) >= 1
    for snap in seen:
        assert all(expected[where] >= calls for where, calls in _by_file(snap).items())
    assert _by_file(fasthost.snapshot()) == expected


def _by_file(snap):
    """(file, line) -> calls of the call sites of math.cos."""
    found = [int(r["target"]) for r in snap.targets if str(r["symbol"]) == "math.cos"]
    if not found:
        return {}
    rows = snap.callsites[snap.callsites["target"] == found[0]]
    out = {}
    for r in rows:
        key = (str(r["file"]), int(r["line"]))
        out[key] = out.get(key, 0) + int(r["calls"])
    return out


def _sites_by_line(snap, symbol):
    """line -> (calls, total_ns) of the call sites of the target `symbol`."""
    (address,) = [int(r["target"]) for r in snap.targets if str(r["symbol"]) == symbol]
    rows = snap.callsites[snap.callsites["target"] == address]
    return {int(r["line"]): (int(r["calls"]), int(r["total_ns"])) for r in rows}


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_sqlite_udf_queries_are_exact_per_call_site_on_the_manual_clock(capture):
    """A query whose UDF advances the manual clock (sqlite calls it from C:
    no event) lasts exactly what it advanced, at each of its call sites."""
    import sqlite3

    connection = sqlite3.connect(":memory:")
    connection.create_function("adv", 1, _testing.advance_manual_time)
    execute = connection.execute
    fasthost.start(clock="manual")
    _testing.set_manual_time(1)  # the UDF returns the time: an int sqlite takes
    try:
        with _capture(capture):
            for ns in (5, 70, 3000):
                execute("select adv(?)", (ns,)); first = here()  # fmt: skip  # noqa: E702
            for _ in range(4):
                execute("select adv(1000000)"); second = here()  # fmt: skip  # noqa: E702
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
        connection.close()
    assert _sites_by_line(snap, "sqlite3.Connection.execute") == {first: (3, 3075), second: (4, 4_000_000)}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.9-3.11 report only builtin calls: no ufunc is seen")
def test_numpy_ufunc_calls_are_exact_per_call_site_on_the_manual_clock():
    """A ufunc made by frompyfunc around the clock's advance: each call of
    it lasts the sum of what its elements advanced, at its call site."""
    advance = np.frompyfunc(_testing.advance_manual_time, 1, 1)
    fasthost.start(clock="manual")
    try:
        with fasthost.capture_native():
            for values in ([5, 70], [3000], [1, 2, 3]):
                advance(np.array(values, dtype=object)); line = here()  # fmt: skip  # noqa: E702
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    symbol = str(snap.targets[snap.targets["target"] == id(advance)]["symbol"][0])
    assert _sites_by_line(snap, symbol) == {line: (3, 3081)}


@pytest.mark.parametrize("capture", ["builtins", "native"])
def test_a_call_closed_while_its_capture_drains_has_its_whole_duration_at_its_site(capture):
    """The capture stopped inside a builtin (called from C: no event): the
    draining capture closes the call, its first record of the site (so it
    keeps the code then), with all that the clock advanced."""
    from itertools import chain, starmap

    fasthost.start(clock="manual")
    try:
        capture_ = _capture(capture).start()
        source = "sorted(map(id, chain(map(adv, [5]), starmap(stop, [()]), map(adv, [7]))))\n"
        namespace = {"adv": _testing.advance_manual_time, "chain": chain, "starmap": starmap, "stop": capture_.stop}
        exec(compile(source, "<drains>", "exec"), namespace)
        del namespace
        snap = fasthost.snapshot()
    finally:
        fasthost.stop()
    assert _sorted_sites(snap) == [("<drains>", 1, 1, 12)]
