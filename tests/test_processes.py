"""fork: the child starts with empty counters and records normally."""

import os
import subprocess
import sys
import textwrap

import pytest

import fasthost
from fasthost import HResult

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def test_forked_child_starts_empty_and_records(recording):
    for _ in range(5):
        fasthost.leave_runtime(0x1)
        fasthost.enter_runtime()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            before = fasthost.snapshot().totals["calls"]["leave"]
            ok = fasthost.leave_runtime(0x2) is HResult.S_OK and fasthost.enter_runtime() is HResult.S_OK
            after = fasthost.snapshot()
            report = f"{before} {int(ok)} {after.totals['calls']['leave']} {len(after.threads)}"
            os.write(write_end, report.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == "0 1 1 1"
    assert fasthost.snapshot().totals["calls"]["leave"] == 5  # the parent is untouched


def test_fork_inside_an_open_frame_leaves_the_child_able_to_record(recording):
    fasthost.leave_runtime(0x3)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            # The frame was opened in the parent's session: abandoned here.
            code |= (fasthost.enter_runtime() is not HResult.HOST_E_ABANDONED) << 0
            code |= (fasthost.leave_runtime(0x4) is not HResult.S_OK) << 1
            code |= (fasthost.enter_runtime() is not HResult.S_OK) << 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fasthost.enter_runtime() is HResult.S_OK


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
def test_a_child_forked_inside_a_captured_callback_closes_its_frames_and_records(capture):
    import math

    from fasthost import _core

    fasthost.start(clock="monotonic")
    read_end, write_end = os.pipe()
    forked = []  # the child's pid in the parent, 0 in the child

    def key(value):  # an M frame under sorted(), os.fork() a U frame inside it
        if value == 1:
            forked.append(os.fork())
        return value

    cap = capture().start()
    sorted([0, 1, 2], key=key)
    if forked == [0]:  # the child, past the frames open at the fork: never returns into pytest
        try:
            depth = fasthost.depth()
            for _ in range(5):
                math.cos(0.5)
            sorted([2, 1], key=math.sin)
            cap.stop()
            fasthost.stop()
            snap = fasthost.snapshot()
            rows = {str(r["symbol"]): int(r["calls"]) for r in snap.targets}
            results = {k: v for k, v in snap.totals["results"].items() if v and k != "S_OK"}
            left = (_core._monitor_tool_id(), _core._builtins_hook_installed(), _core._hook_open_count())
            report = repr((depth, rows.get("math.cos"), rows.get("sorted"), results, left))
            os.write(write_end, report.encode())
        finally:
            os._exit(0)
    cap.stop()
    fasthost.stop()
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(forked[0], 0)
    # fork, key and sorted were open at the fork: closed in the child as abandoned
    assert report == repr((0, 5, 1, {"HOST_E_ABANDONED": 3}, (None, False, 0)))
    snap = fasthost.snapshot()
    assert int(snap.totals["results"]["HOST_E_ABANDONED"]) == 0
    assert [int(r["calls"]) for r in snap.targets if str(r["symbol"]) == "sorted"] == [1]


def _run_python(script: str) -> list[str]:
    """Runs `script` in a fresh interpreter (a hang there fails the test
    instead of the suite); returns the words it printed."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_signal_handler_can_stop_a_capture_while_its_thread_holds_the_capture_lock():
    # A followed multiprocessing child that SIGTERM ends stops its captures
    # in the handler, which may run while its own thread is inside start()
    # or stop(), holding the lock they share: that stop must not wait for
    # itself.
    printed = _run_python(
        """
        import os, signal, fasthost
        from fasthost.capture import builtins as capture_module
        capture = fasthost.capture_builtins().start()

        def handler(signum, frame):
            capture.stop()
            print("stopped", capture.active)

        signal.signal(signal.SIGALRM, handler)
        with capture_module._lock:  # as start() and stop() hold it
            os.kill(os.getpid(), signal.SIGALRM)
            sum(range(10))  # the handler runs here, on the lock's holder
        print("running", fasthost.running())
        """
    )
    assert printed == ["stopped", "False", "running", "False"]


def test_a_child_forked_while_another_thread_holds_the_capture_lock_can_capture():
    # The thread holding the lock does not exist in the child: the lock it
    # held would stay held there for ever.
    printed = _run_python(
        """
        import os, threading, fasthost
        from fasthost.capture import builtins as capture_module
        held, release = threading.Event(), threading.Event()

        def holder():
            with capture_module._lock:
                held.set()
                release.wait()

        thread = threading.Thread(target=holder)
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            with fasthost.capture_builtins():
                abs(-1)
            os._exit(0 if fasthost.snapshot().totals["calls"]["leave"] >= 1 else 3)
        release.set()
        thread.join()
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    assert printed == ["child", "0"]
