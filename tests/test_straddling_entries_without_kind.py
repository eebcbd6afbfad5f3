"""Straddles whose entries carry no kind: set-aside entries and unrecorded opens.

A capture's close finds its frame by position and kind, and a protocol close
looks beneath the captured frames on top for its own. Two kinds of entry
have no kind to look at: the entries a new session sets aside (``start()``
while frames are open) and the opens that were not recorded (refused at
``max_depth``, or made while stopped). Each test here runs one protocol
sequence through a captured call (``sorted`` and its key function: a
captured U frame and a captured M frame) and compares what the protocol
calls return with what they return without the capture, which is what the
protocol alone gives: each test runs its sequence without a capture too
(``alone``), which pins that reference on the real core.

Each failed before the core took every entry without a kind to be the
protocol's: a capture's open that is refused leaves no entry, and a new
session drops the captures' frames instead of setting them aside.
"""

from __future__ import annotations

import contextlib
import cProfile
import sys

import pytest

import fasthost
from fasthost.hresult import HResult

CAPTURES = pytest.mark.parametrize(
    "capture", [None, fasthost.capture_builtins, fasthost.capture_native], ids=["alone", "builtins", "native"]
)

OK = HResult.S_OK
ABANDONED = HResult.HOST_E_ABANDONED
NOT_AVAILABLE = HResult.HOST_E_CLRNOTAVAILABLE
NOT_OWNER = HResult.HOST_E_NOT_OWNER


@pytest.fixture
def session():
    yield
    fasthost.stop()


def straddle(capture, inside, after, max_depth=256):
    """Opens a protocol frame, then runs `inside(results)` as sorted()'s key
    function under `capture` (inside a captured U frame, sorted's, and a
    captured M frame, the key function's, a callback of a U frame), or
    directly when `capture` is None, and `after(results)` once it returned.
    Returns what the protocol calls returned and depth() at the end."""
    fasthost.start(clock="manual", max_depth=max_depth)
    results = [fasthost.leave_runtime(0x11)]
    with capture() if capture is not None else contextlib.nullcontext():
        if capture is None:
            inside(results)
        else:
            sorted([0], key=lambda _: inside(results) or 0)
        after(results)
        depth = fasthost.depth()
    return results, depth


def close_u(results):
    results.append(fasthost.enter_runtime())


# ---- the session restarted while a straddle is open -----------------------


def restart_and_close(results):
    fasthost.stop()
    fasthost.start(clock="manual")
    close_u(results)


def reset_and_close(results):
    fasthost.reset()
    close_u(results)


@CAPTURES
@pytest.mark.parametrize("new_session", [restart_and_close, reset_and_close], ids=["restart", "reset"])
def test_a_new_session_inside_a_straddle_leaves_the_protocol_frame_to_its_own_close(session, capture, new_session):
    assert straddle(capture, new_session, close_u) == ([OK, ABANDONED, NOT_OWNER], 0)


# ---- a gone captured frame's position reoccupied by an entry without kind ----


def reopen_and_restart(results):
    """Closes the protocol frame opened outside (abandoning the captured
    frames it straddles), opens two protocol frames, one more while stopped
    (unrecorded), and restarts: three set-aside entries, the newest at the
    key function's position."""
    close_u(results)
    results.append(fasthost.leave_runtime(0x22))
    results.append(fasthost.reverse_enter_runtime())
    fasthost.stop()
    results.append(fasthost.leave_runtime(0x23))
    fasthost.start(clock="manual")


def close_all(results):
    close_u(results)  # 0x23's unrecorded open
    results.append(fasthost.reverse_leave_runtime())  # set aside: abandoned
    close_u(results)  # 0x22, set aside: abandoned
    close_u(results)  # nothing open


@CAPTURES
def test_a_gone_captured_frame_never_closes_an_entry_reopened_at_its_position(session, capture):
    expected = [OK, OK, OK, OK, NOT_AVAILABLE, NOT_AVAILABLE, ABANDONED, ABANDONED, NOT_OWNER]
    assert straddle(capture, reopen_and_restart, close_all) == (expected, 0)


# ---- max_depth reached by a captured open mid-straddle --------------------


@CAPTURES
def test_a_captured_open_refused_at_max_depth_never_takes_a_protocol_close(session, capture):
    # sorted's frame fills the captures' max_depth: the key function's
    # captured M frame is refused, and leaves no entry for close_u to take.
    assert straddle(capture, close_u, close_u, max_depth=1) == ([OK, OK, NOT_OWNER], 0)


# ---- a captured open that joins a new session ------------------------------


def restart_then_call_a_builtin(results):
    fasthost.stop()
    fasthost.start(clock="manual")
    results.append(len("abc"))


@CAPTURES
def test_a_captured_call_that_joins_a_new_session_is_closed_by_its_return(session, capture):
    # The first call after start() inside sorted's key function is a captured
    # builtin's open: joining the session drops sorted's and the key's
    # frames, so its own frame is found where it lands, not where the stack
    # stood before. The protocol frame is set aside.
    assert straddle(capture, restart_then_call_a_builtin, close_u) == ([OK, 3, ABANDONED], 0)


def open_u(results):
    results.append(fasthost.leave_runtime(0x12))


def close_u_twice(results):
    close_u(results)
    close_u(results)


@pytest.mark.parametrize("capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"])
def test_a_protocol_open_inside_a_captured_call_is_refused_only_where_the_protocol_alone_is_refused(session, capture):
    # Two protocol frames in max_depth 2: room for both, alone. Under a
    # capture, sorted's frame and the key function's take the room.
    assert straddle(None, open_u, close_u_twice, max_depth=2) == ([OK, OK, OK, OK], 0)
    fasthost.stop()
    assert straddle(capture, open_u, close_u_twice, max_depth=2) == ([OK, OK, OK, OK], 0)


# ---- another profiler taking the hook mid-straddle (3.9-3.11) ---------------


def take_the_hook_then_close(results):
    # cProfile replaces the profile hook: the capture can no longer close
    # sorted's and the key function's frames, and abandons them.
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        close_u(results)
        results.append(fasthost.leave_runtime(0x13))
    finally:
        profiler.disable()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ captures use sys.monitoring, not the profile hook")
@CAPTURES
def test_another_profiler_taking_the_hook_mid_straddle_changes_no_protocol_result(session, capture):
    assert straddle(capture, take_the_hook_then_close, close_u_twice) == ([OK, OK, OK, OK, NOT_OWNER], 0)
