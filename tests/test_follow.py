"""``fasthost run`` follows the Python processes it starts, and combines
their recordings exactly; ``fasthost combine`` counts each session once.

Everything runs for real: multiprocessing pools under each start method,
a ``subprocess`` Python child, ``os.fork``, SIGKILL; the counts are real
ctypes calls of libm's ``cos``.
"""

import json
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path

import pytest

import fasthost
from fasthost.follow import ENVIRONMENT

from .test_cli import fasthost_cli

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# cos_calls(n): n calls of libm's cos through ctypes, from the README's example.
PRELUDE = f"""
import json, multiprocessing, os, signal, subprocess, sys
sys.path.insert(0, {str(EXAMPLES)!r})
from pool_workers import cos_calls

def work(n):  # a pool task: who did it
    cos_calls(n)
    return os.getpid()

def tell(**facts):  # what the test needs to know, on stdout
    print("FACTS " + json.dumps(facts), flush=True)
"""

# A Python child that makes 13 calls and says who it is.
CHILD = (
    PRELUDE
    + """
cos_calls(13)
tell(child=os.getpid())
"""
)

POOL = (
    PRELUDE
    + """
if __name__ == "__main__":
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:  # ends with terminate(): SIGTERM
        workers = pool.map(work, [100] * 10, chunksize=1)
    cos_calls(7)
    subprocess.run([sys.executable, sys.argv[2]], check=True)
    tell(run=os.getpid(), workers=workers)
"""
)


def facts(stdout):
    """The facts the script told, merged."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("FACTS "):
            found.update(json.loads(line[len("FACTS ") :]))
    return found


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_followed(tmp_path, name, text, *options):
    """``fasthost run`` of the script ``text`` (saved as ``name``), which
    must succeed: its process, the facts it told, its output file."""
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", *options, "-o", out, write(tmp_path, name, text))
    assert proc.returncode == 0, proc.stderr
    return proc, facts(proc.stdout), out


def calls_by_pid(snap):
    return {int(pid): int(snap.threads["leave"][snap.threads["pid"] == pid].sum()) for pid in snap.pids}


@pytest.fixture(autouse=True)
def _not_following():
    assert ENVIRONMENT not in os.environ  # else every child of the test suite would record
    yield
    assert ENVIRONMENT not in os.environ


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_and_a_subprocess_child_add_up_exactly_under_each_start_method(tmp_path, method):
    pool, child = write(tmp_path, "pool.py", POOL), write(tmp_path, "child.py", CHILD)
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, pool, method, child, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    snap = fasthost.load(out)
    assert snap.totals["calls"]["leave"] == 10 * 100 + 7 + 13
    assert snap.totals["calls"]["enter"] == 10 * 100 + 7 + 13
    by_pid = calls_by_pid(snap)
    assert by_pid[told["run"]] == 7
    assert by_pid[told["child"]] == 13
    for worker in set(told["workers"]):
        assert by_pid[worker] == 100 * told["workers"].count(worker)
    (cos,) = snap.targets[~snap.targets["overflow"]]  # one target, though each process has its own addresses
    assert (cos["symbol"], int(cos["calls"])) == ("libm.so.6!cos", 1020)
    assert snap.histogram(target="libm.so.6!cos").total == 1020
    assert "wrote no data" not in proc.stderr
    assert f"fasthost: {len(snap.pids)} processes" in proc.stdout
    assert not [name for name in os.listdir(tmp_path) if name.startswith("fasthost-run-")]


# A pool worker that Pool.terminate()'s SIGTERM finds in a native wait that
# no signal interrupts (a condition variable nobody signals): Python never
# gets to run the SIGTERM handler that writes its data.
STUCK = (
    PRELUDE
    + """
import ctypes, time

def stuck(n):
    cos_calls(n)
    libc = ctypes.CDLL(None)
    mutex, cond = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)  # zeroes: glibc's initializers
    libc.pthread_mutex_lock(mutex)
    open("stuck", "w").close()
    libc.pthread_cond_wait(cond, mutex)

if __name__ == "__main__":
    pool = multiprocessing.get_context("fork").Pool(1)
    pool.apply_async(stuck, (5,))
    while not os.path.exists("stuck"):
        time.sleep(0.01)
    pool.terminate()  # SIGTERM, then joins the worker
    cos_calls(7)
    tell(run=os.getpid())
"""
)


def test_a_worker_stuck_in_a_native_wait_still_ends_on_terminate_and_is_named_as_writing_no_data(tmp_path):
    # Without the watchdog (fh_follow.h), terminate() waits for the worker
    # for ever: the run times out. With it, the worker ends by SIGTERM's
    # default action, as without fasthost, and the run says it wrote nothing.
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "stuck.py", STUCK), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    snap = fasthost.load(out)
    assert calls_by_pid(snap) == {facts(proc.stdout)["run"]: 7}
    assert "1 child process(es) wrote no data" in proc.stderr


# Spawn children that Pool.terminate()'s SIGTERM reaches while they import a
# module that writing a snapshot imports too (zipfile, and what it imports):
# child number k is signalled at the k-th audit event of `import zipfile`,
# which puts the signal at a different point of the import each time (the
# lookup, reading the .pyc, the module's body, its own imports).
MID_IMPORT = (
    PRELUDE
    + """
if __name__ == "__mp_main__" and "KILL_AT" in os.environ:  # a spawned child, importing this file
    fresh = "zipfile" not in sys.modules
    cos_calls(5)
    tell(child=os.getpid(), fresh=fresh)
    countdown = [int(os.environ["KILL_AT"])]

    def hook(event, args):
        countdown[0] -= 1
        if countdown[0] == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # runs its handler at the next bytecode: mid-import

    sys.addaudithook(hook)
    import zipfile  # noqa: F401

if __name__ == "__main__":
    ends = {}
    for at in range(1, 9):
        os.environ["KILL_AT"] = str(at)
        child = multiprocessing.get_context("spawn").Process(target=cos_calls, args=(1,))
        child.start()
        child.join()
        ends[child.pid] = child.exitcode
    tell(ends=ends)
"""
)


def test_a_child_terminated_in_the_middle_of_an_import_still_writes_its_data(tmp_path):
    proc, _, out = run_followed(tmp_path, "mid_import.py", MID_IMPORT)
    lines = [json.loads(line[len("FACTS ") :]) for line in proc.stdout.splitlines() if line.startswith("FACTS ")]
    children = {told["child"]: told["fresh"] for told in lines if "child" in told}
    ends = {int(pid): status for told in lines if "ends" in told for pid, status in told["ends"].items()}
    assert all(children.values()), "zipfile was imported before the child's own import: nothing to interrupt"
    assert sorted(children) == sorted(ends)
    assert set(ends.values()) == {-signal.SIGTERM}  # each died of the signal, mid-import
    assert "could not" not in proc.stderr
    assert "wrote no data" not in proc.stderr
    snap = fasthost.load(out)
    by_pid = calls_by_pid(snap)
    assert {pid: by_pid.get(pid) for pid in children} == {pid: 5 for pid in children}
    assert snap.totals["calls"]["leave"] == 5 * len(children)


# A fork-method child that SIGTERM reaches right after the fork, when it has
# marked itself started and has not reached Process._bootstrap yet (where
# Pool.terminate() can find a worker that a pool has just started).
FORK_THEN_SIGTERM = (
    PRELUDE
    + """
if __name__ == "__main__":
    os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))  # after fasthost's hook
    child = multiprocessing.get_context("fork").Process(target=cos_calls, args=(3,))
    child.start()
    child.join()
    tell(child=child.pid, status=child.exitcode)
"""
)


def test_a_fork_child_terminated_before_its_process_runs_still_writes_its_data(tmp_path):
    proc, told, out = run_followed(tmp_path, "fork_sigterm.py", FORK_THEN_SIGTERM)
    assert told["status"] == -signal.SIGTERM
    assert "wrote no data" not in proc.stderr
    snap = fasthost.load(out)
    assert told["child"] in snap.pids
    assert calls_by_pid(snap).get(told["child"], 0) == 0  # ended before its target ran


def test_the_run_reads_a_childs_file_whose_started_mark_is_missing():
    # What a child leaves when SIGTERM lands between taking its token and
    # leaving its mark: the writer writes (the token is set), the mark never comes.
    from fasthost.follow import Follow

    fasthost.start()
    fasthost.stop()
    follow = Follow([], {})
    follow.start()
    try:
        fasthost.snapshot().save(os.path.join(follow.dir, f"{os.getpid()}-0123456789ab.npz"))
    finally:
        outcome = follow.finish()
    assert (len(outcome.snapshots), outcome.silent) == (1, [])


# A Python child under --capture ctypes,cffi that makes cffi unimportable
# (as tests do to hide a package): stopping the cffi capture at exit raises.
UNSTOPPABLE = (
    PRELUDE
    + """
cos_calls(9)
sys.modules["cffi"] = None
tell(child=os.getpid())
"""
)


def test_a_child_whose_capture_fails_to_stop_still_writes_its_data(tmp_path):
    pytest.importorskip("cffi")
    child = write(tmp_path, "unstoppable.py", UNSTOPPABLE)
    script = write(tmp_path, "run.py", f"import subprocess, sys\nsubprocess.run([sys.executable, {str(child)!r}])\n")
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "--capture", "ctypes,cffi", "-o", out, script)
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    assert f"fasthost: pid {told['child']} could not stop a capture: ModuleNotFoundError" in proc.stderr
    assert "wrote no data" not in proc.stderr
    assert calls_by_pid(fasthost.load(out))[told["child"]] == 9


def test_a_capture_that_fails_to_stop_does_not_keep_the_others_on(monkeypatch):
    pytest.importorskip("cffi")
    import fasthost.cffi
    import fasthost.ctypes
    from fasthost.capture.modes import Captures

    captures = Captures(["ctypes", "cffi"]).start()
    monkeypatch.setitem(sys.modules, "cffi", None)  # the cffi capture's stop imports cffi: it raises
    try:
        with pytest.raises(ImportError):
            captures.stop()
        assert not fasthost.ctypes.enabled()  # stopped after the cffi capture failed
    finally:
        monkeypatch.undo()
        fasthost.cffi.disable()
        fasthost.ctypes.disable()


FORKS = (
    PRELUDE
    + """
cos_calls(1000)
pid = os.fork()
if pid == 0:
    cos_calls(7)
    sys.exit(0)  # through the run's own ending: it must not write the run's output
_, status = os.waitpid(pid, 0)
tell(run=os.getpid(), child=pid, status=status)
"""
)


def test_a_forked_child_that_exits_does_not_clobber_the_runs_output(tmp_path):
    proc, told, out = run_followed(tmp_path, "forks.py", FORKS)
    assert told["status"] == 0
    snap = fasthost.load(out)
    assert calls_by_pid(snap) == {told["run"]: 1000, told["child"]: 7}
    assert proc.stdout.count("fasthost: 2 processes") == 1  # one report: the run's


def test_without_following_a_forked_child_leaves_the_runs_output_alone(tmp_path):
    _, told, out = run_followed(tmp_path, "forks.py", FORKS, "--no-follow")
    assert calls_by_pid(fasthost.load(out)) == {told["run"]: 1000}


DYING = (
    PRELUDE
    + """
cos_calls(10)
killed = subprocess.run([sys.executable, "-c", '''
import ctypes, ctypes.util, os, signal, sys
libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.cos(ctypes.c_double(0.5))
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
'''], capture_output=True, text=True)
pid = os.fork()
if pid == 0:
    cos_calls(3)
    os._exit(0)  # past atexit: nothing written
os.waitpid(pid, 0)
tell(run=os.getpid(), killed=int(killed.stdout), killed_status=killed.returncode, exited=pid)
"""
)


def test_children_that_die_without_writing_are_named_and_the_rest_combine(tmp_path):
    proc, told, out = run_followed(tmp_path, "dying.py", DYING)
    assert told["killed_status"] == -signal.SIGKILL
    silent = sorted([told["killed"], told["exited"]])
    snap = fasthost.load(out)
    assert calls_by_pid(snap) == {told["run"]: 10}
    assert snap.meta["children_without_data"] == silent
    assert f"2 child process(es) wrote no data: pid {silent[0]}, {silent[1]}" in proc.stderr
    assert f"2 child processes wrote no data: pid {silent[0]}, {silent[1]}" in proc.stdout  # the report
    assert fasthost.load(out).to_dict()["children_without_data"] == silent


def test_a_python_that_was_not_started_by_a_run_does_not_record(tmp_path):
    proc = fasthost_cli("report", tmp_path / "missing.npz")  # any Python start-up: the .pth is inert
    assert proc.returncode == 2
    assert "not recorded" not in proc.stderr


# ---- fasthost combine -----------------------------------------------------------------


def cos_snapshot(libm_cos, calls, **options):
    fasthost.start(clock="monotonic", **options)
    try:
        for _ in range(calls):
            with fasthost.unmanaged(libm_cos):
                pass
    finally:
        fasthost.stop()
    return fasthost.snapshot()


def test_combine_counts_a_session_saved_twice_once(tmp_path):
    early = cos_snapshot(0x10, 5)
    fasthost.start(clock="monotonic")
    for _ in range(5):
        with fasthost.unmanaged(0x10):
            pass
    fasthost.snapshot().save(tmp_path / "a-early.npz")
    for _ in range(3):
        with fasthost.unmanaged(0x10):
            pass
    fasthost.stop()
    fasthost.snapshot().save(tmp_path / "a-late.npz")
    early.save(tmp_path / "other.npz")
    shutil.copy(tmp_path / "other.npz", tmp_path / "other-copy.npz")
    out = tmp_path / "out" / "all.npz"
    out.parent.mkdir()
    proc = fasthost_cli("combine", tmp_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    combined = fasthost.load(out)
    assert combined.totals["calls"]["leave"] == 8 + 5
    assert "left out" in proc.stderr
    assert "a-early.npz" in proc.stderr
    assert "other-copy.npz" in proc.stderr
    # A combined file and the files it holds: each session still once.
    again = tmp_path / "out" / "again.npz"
    assert fasthost_cli("combine", out, tmp_path / "a-late.npz", "-o", again).returncode == 0
    assert fasthost.load(again).totals["calls"]["leave"] == 13


def test_combine_refuses_files_that_share_only_some_sessions(tmp_path):
    one, two, three = (cos_snapshot(0x10, n) for n in (1, 2, 3))
    fasthost.merge([one, two]).save(tmp_path / "one-two.npz")
    fasthost.merge([two, three]).save(tmp_path / "two-three.npz")
    proc = fasthost_cli("combine", tmp_path / "one-two.npz", tmp_path / "two-three.npz", "-o", tmp_path / "o.npz")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fasthost: error: ")
    assert "share 1 recording session(s) but not all" in line
    assert not (tmp_path / "o.npz").exists()


def test_combine_refuses_different_precisions_in_one_line(tmp_path):
    cos_snapshot(0x10, 1, precision=3).save(tmp_path / "p3.npz")
    cos_snapshot(0x10, 1, precision=5).save(tmp_path / "p5.npz")
    proc = fasthost_cli("combine", tmp_path / "p3.npz", tmp_path / "p5.npz", "-o", tmp_path / "o.npz")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "different precisions" in line
    assert "p3.npz has precision 3" in line
    assert "p5.npz has precision 5" in line


def test_combine_of_a_folder_without_snapshots_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = fasthost_cli("combine", tmp_path / "empty", "-o", tmp_path / "o.npz")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"fasthost: error: no .npz files in {tmp_path / 'empty'}"


def test_merge_gives_one_name_one_target_when_processes_put_it_at_different_addresses():
    fasthost.register_target(0x10, "lib!f")
    fasthost.register_target(0x20, "lib!g")
    try:
        here = cos_snapshot(0x10, 2)
        there = cos_snapshot(0x20, 3)
    finally:
        fasthost.unregister_target(0x10)
        fasthost.unregister_target(0x20)
    # As another process would see it: f at 0x20 (where g is here), and g elsewhere.
    there_symbols = {0x20: "lib!f"}
    from fasthost.export.snapshot import Snapshot

    names = ("threads", "results", "thread_targets", "hist_rows", "hist_counts", "callsites", "callsite_counts")
    moved = Snapshot(**{n: getattr(there, n) for n in names}, symbols=there_symbols, meta=there.meta)
    g_here = cos_snapshot(0x20, 4)
    merged = fasthost.merge([here, moved, Snapshot(**{n: getattr(g_here, n) for n in names},
                                                   symbols={0x20: "lib!g"}, meta=g_here.meta)])  # fmt: skip
    calls = {str(row["symbol"]): int(row["calls"]) for row in merged.targets}
    assert calls == {"lib!f": 5, "lib!g": 4}
    assert merged.histogram(target="lib!f").total == 5


def test_report_and_to_dict_group_threads_by_process_once_there_are_several(tmp_path):
    one, two = cos_snapshot(0x10, 1), cos_snapshot(0x10, 2)
    single = fasthost.merge([one])
    assert "processes" not in single.to_dict()
    assert "process " not in single.report()
    forked = tmp_path / "forked.npz"
    pid = os.fork()
    if pid == 0:
        try:
            cos_snapshot(0x10, 3).save(forked)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    merged = fasthost.merge([one, two, fasthost.load(forked)])
    summary = merged.to_dict()
    assert [(p["pid"], p["transitions"], len(p["threads"])) for p in summary["processes"]] == sorted(
        [(os.getpid(), 3, 2), (pid, 3, 1)]
    )
    assert all(t["pid"] in (os.getpid(), pid) for t in summary["threads"])
    assert summary["totals"]["processes"] == 2
    text = merged.report()
    assert text.startswith("fasthost: 2 processes, 3 thread(s), 6 transitions")
    assert f"pid {pid}" in text
    assert f"pid {os.getpid()}" in text


NESTED = (
    PRELUDE
    + """
cos_calls(5)
inner = subprocess.run([sys.executable, "-m", "fasthost", "run", "-o", sys.argv[1], sys.argv[2]],
                       capture_output=True, text=True)
print(inner.stderr, file=sys.stderr)
tell(run=os.getpid(), inner_status=inner.returncode)
"""
)


def test_a_run_started_by_a_followed_program_records_on_its_own(tmp_path):
    out, inner = tmp_path / "outer.npz", tmp_path / "inner.npz"
    child = write(tmp_path, "child.py", CHILD)
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "nested.py", NESTED), inner, child)
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    assert told["inner_status"] == 0
    assert calls_by_pid(fasthost.load(out)) == {told["run"]: 5}
    assert fasthost.load(inner).totals["calls"]["leave"] == 13
    assert "wrote no data" not in proc.stderr


OUTLIVING = (
    PRELUDE
    + """
# The child records from its start-up, says so, and ends only once the run has (its stdin closes).
child = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
child.stdout.readline()
tell(run=os.getpid(), child=child.pid)
"""
)


def test_a_child_still_running_at_the_end_is_named_and_writes_nothing_later(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "outliving.py", OUTLIVING))  # waits for its stderr
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    assert f"1 child process(es) wrote no data (1 still running): pid {told['child']}" in proc.stderr
    assert fasthost.load(out).meta["children_without_data"] == [told["child"]]
    assert "could not write" not in proc.stderr


# A followed multiprocessing child forks a grandchild (os.fork) that waits in
# a native wait no signal interrupts, and SIGTERMs it. Without fasthost the
# grandchild dies of the signal at once. It inherits the child's Python
# handler (_write_and_die) and the C handler of fh_follow.h in front of it,
# but no watchdog thread (fork copies only the forking thread): unless it
# arms its own, the Python handler never runs and the grandchild lives on.
# The script gives it 20 s, then SIGKILLs it, so that the test cannot hang.
GRANDCHILD_STUCK = (
    PRELUDE
    + """
import ctypes, time

def stuck_forever():
    libc = ctypes.CDLL(None)
    mutex, cond = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)  # zeroes: glibc's initializers
    libc.pthread_mutex_lock(mutex)
    open("stuck", "w").close()
    libc.pthread_cond_wait(cond, mutex)

def fork_a_stuck_grandchild():
    cos_calls(3)
    pid = os.fork()
    if pid == 0:
        stuck_forever()
        os._exit(0)
    while not os.path.exists("stuck"):
        time.sleep(0.01)
    os.kill(pid, signal.SIGTERM)
    for _ in range(2000):  # 20 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            tell(grandchild=os.waitstatus_to_exitcode(status))
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    tell(grandchild="hung")

if __name__ == "__main__":
    child = multiprocessing.get_context(sys.argv[1]).Process(target=fork_a_stuck_grandchild)
    child.start()
    child.join()
    tell(child=child.exitcode)
"""
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_grandchild_forked_by_a_followed_child_ends_on_sigterm_in_a_native_wait(tmp_path, method):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "grand.py", GRANDCHILD_STUCK), method, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    assert told["child"] == 0
    assert told["grandchild"] == -signal.SIGTERM  # as without fasthost


# The parent side of the two scripts below: a fork child running `target`,
# SIGTERMed once it made the file "ready"; its exit code, or "hung" (then
# killed) if it had not ended 20 s later.
TERMINATE_WHEN_READY = """
import time

def terminate_when_ready(target):
    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    while not os.path.exists("ready"):
        time.sleep(0.01)
    child.terminate()
    child.join(20)
    if child.exitcode is None:
        child.kill()
        child.join()
        return "hung"
    return child.exitcode
"""

# The watchdog stands down once the Python handler begins, but writing runs
# Python code that another thread may keep from the GIL: here a thread takes
# it, as soon as the writing begins, into a native call that never returns
# (a ctypes.PyDLL call holds the GIL). Without fasthost the SIGTERM ends the
# child at once, whatever its threads hold. The script gives it 20 s.
GIL_HELD_WHILE_WRITING = (
    PRELUDE
    + TERMINATE_WHEN_READY
    + """
import ctypes, threading, time

def hold_the_gil_once_writing_begins():
    from fasthost.follow import _Process
    while not _Process.writing:
        time.sleep(0.001)
    ctypes.PyDLL(None).pause()  # with the GIL, for good

def busy():
    cos_calls(3)
    threading.Thread(target=hold_the_gil_once_writing_begins, daemon=True).start()
    open("ready", "w").close()
    while True:
        time.sleep(0.01)

if __name__ == "__main__":
    tell(child=terminate_when_ready(busy))
"""
)


def test_a_child_whose_thread_holds_the_gil_while_it_writes_still_ends_on_sigterm(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "gil.py", GIL_HELD_WHILE_WRITING), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert facts(proc.stdout)["child"] == -signal.SIGTERM  # as without fasthost


# Ctrl-C sends SIGINT to the whole process group: a child that a SIGTERM is
# writing for may get a KeyboardInterrupt in the middle of the writing (here
# at the writing's first open()). write() lets it through (it catches
# Exception), and the handler did not die after it: the interrupted program
# ran on, catching it, after a SIGTERM that ends it without fasthost.
INTERRUPTED_WHILE_WRITING = (
    PRELUDE
    + TERMINATE_WHEN_READY
    + """
import time

def busy():
    from fasthost.follow import _Process

    once = []

    def interrupt_the_writing(event, args):
        if event == "open" and _Process.writing and not once:
            once.append(True)
            open("interrupted", "w").close()
            os.kill(os.getpid(), signal.SIGINT)

    sys.addaudithook(interrupt_the_writing)
    cos_calls(3)
    open("ready", "w").close()
    while True:
        try:
            time.sleep(0.01)
        except KeyboardInterrupt:
            open("ran_on", "w").close()

if __name__ == "__main__":
    code = terminate_when_ready(busy)
    tell(child=code, interrupted=os.path.exists("interrupted"), ran_on=os.path.exists("ran_on"))
"""
)


def test_a_child_interrupted_while_it_writes_on_sigterm_still_dies_of_it_at_once(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "int.py", INTERRUPTED_WHILE_WRITING), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    told = facts(proc.stdout)
    assert told["interrupted"], "the writing was not interrupted: nothing checked"
    assert told == {"child": -signal.SIGTERM, "interrupted": True, "ran_on": False}


# From 3.12 os.fork() warns when the process has other threads (it counts
# the OS's). The watchdog thread of fh_follow.h runs from the start of every
# followed multiprocessing child, SIGTERM or not: a child that forks gets a
# DeprecationWarning that it does not get without fasthost (an error under
# -W error, as test suites often run).
FORK_IN_A_CHILD = (
    PRELUDE
    + """
import warnings

def fork_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    tell(warned=[str(w.message) for w in caught])

if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=fork_once)
    child.start()
    child.join()
"""
)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="os.fork() warns of other threads from Python 3.12")
@pytest.mark.xfail(strict=True, reason="open: the watchdog thread runs from the child's start (fh_follow.h)")
def test_a_followed_child_that_forks_gets_no_warning_about_threads_it_did_not_start(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, write(tmp_path, "fork_in_child.py", FORK_IN_A_CHILD), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert facts(proc.stdout)["warned"] == []  # as without fasthost
