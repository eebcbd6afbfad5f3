import ctypes
import os
import shutil
import subprocess
import sys
import threading

import pytest

import fasthost
from fasthost import HResult

MANUAL = {"clock": "manual"}


def drain_stack():
    """Closes every frame left open on the calling thread (in a throwaway
    session, so the closes return HOST_E_ABANDONED), then resets so that
    the draining itself is not in the data."""
    fasthost.stop()
    fasthost.start(clock="manual")
    for _ in range(100_000):
        if fasthost.depth() == 0:
            break
        if fasthost.enter_runtime() is HResult.HOST_E_NOT_OWNER:
            fasthost.reverse_leave_runtime()
    fasthost.stop()
    fasthost.reset()
    assert fasthost.depth() == 0


def open_frames_of_the_test(snap):
    """Frames still open on the test's own threads: the main thread and
    those that ended (a test joins the threads it makes). A capture also
    records threads the test did not make, such as pytest-xdist's I/O
    thread, which can be inside a builtin it entered during the capture."""
    threads = snap.threads
    own = (threads["alive"] == 0) | (threads["tid"] == threading.get_native_id())
    return int(threads["depth"][own].sum())


def hooks_installed():
    """What a test could leave behind besides a recording: a profile hook
    (Python-level, or fasthost's C-level one, which sys.getprofile() does
    not show), threading's hook for new threads, the opt-ins."""
    import threading

    import fasthost.cffi
    import fasthost.ctypes

    return {
        "sys.getprofile": sys.getprofile(),
        "builtins hook": fasthost._core._builtins_hook_installed(),
        "threading hook": getattr(threading, "_profile_hook", None),
        "ctypes opt-in": fasthost.ctypes.enabled(),
        "cffi opt-in": fasthost.cffi.enabled(),
    }


NO_HOOKS = {
    "sys.getprofile": None,
    "builtins hook": False,
    "threading hook": None,
    "ctypes opt-in": False,
    "cffi opt-in": False,
}


@pytest.fixture(autouse=True)
def no_leaked_state():
    """Every test leaves fasthost as it found it: not recording, no frames
    open on the main thread, no profile hook, no opt-in left on."""
    assert not fasthost.running(), "a previous test left fasthost recording"
    assert hooks_installed() == NO_HOOKS
    yield
    leaked_recording = fasthost.running()
    leaked_frames = fasthost.depth()
    drain_stack()
    assert not leaked_recording, "this test left fasthost recording"
    assert leaked_frames == 0, f"this test left {leaked_frames} frames open"
    assert hooks_installed() == NO_HOOKS, "this test left a hook or an opt-in installed"


@pytest.fixture
def recording():
    """Recording on a fresh session (monotonic clock) for one test."""
    fasthost.start(clock="monotonic")
    yield
    fasthost.stop()


@pytest.fixture
def manual_clock():
    """Recording on a fresh session whose clock moves only when the test
    says (fasthost._testing.advance_manual_time), for exact durations."""
    from fasthost import _testing

    _testing.set_manual_time(1_000_000)
    fasthost.start(**MANUAL)
    yield _testing
    fasthost.stop()


def run_threads(target, count):
    """Starts `count` threads running `target`, then joins them all."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_threads_in_turn(target, count):
    """Runs `target` in `count` threads, each ended before the next starts
    (past 64 ended threads a session folds them into one row)."""
    for _ in range(count):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()


@pytest.fixture(scope="module")
def callers(tmp_path_factory):
    """tests/native/callers.c built into a real shared library."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build the native test library")
    out = tmp_path_factory.mktemp("native") / "libcallers.so"
    source = os.path.join(os.path.dirname(__file__), "native", "callers.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-pthread", "-O1", source, "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    lib.call_from_threads.restype = ctypes.c_int
    return lib
