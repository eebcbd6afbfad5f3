"""Straddles whose entries carry no kind: set-aside entries and unrecorded opens.

A capture's close finds its frame by position and kind, and a protocol close
looks beneath the captured frames on top for its own. Two kinds of entry
have no kind to look at: the entries a new session sets aside (``start()``
while frames are open) and the opens that were not recorded (refused at
``max_depth``, or made while stopped). Each test here runs one protocol
sequence through a captured call (``sorted`` and its key function: a
captured U frame and a captured M frame) and compares what the protocol
calls return with what they return without the capture, which is what the
protocol alone gives: ``test_the_protocol_alone_*`` pins that reference on
the real core.

Each failed before the core took every entry without a kind to be the
protocol's: a capture's open that is refused leaves no entry, and a new
session drops the captures' frames instead of setting them aside.
"""

from __future__ import annotations

import pytest

import fasthost
from fasthost.hresult import HResult

CAPTURES = pytest.mark.parametrize(
    "capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"]
)

OK = HResult.S_OK
ABANDONED = HResult.HOST_E_ABANDONED
NOT_AVAILABLE = HResult.HOST_E_CLRNOTAVAILABLE
NOT_OWNER = HResult.HOST_E_NOT_OWNER


def in_a_captured_call(body):
    """Runs `body` as sorted()'s key function: inside a captured U frame
    (sorted) and, when a U frame is on top, a captured M frame (the key
    function, a callback)."""
    sorted([0], key=lambda _: body() or 0)


@pytest.fixture
def session():
    yield
    fasthost.stop()


# ---- the session restarted while a straddle is open -----------------------


def restart_inside_the_straddle(results):
    fasthost.stop()
    fasthost.start(clock="manual")
    results.append(fasthost.enter_runtime())


def test_the_protocol_alone_closes_a_frame_set_aside_once(session):
    fasthost.start(clock="manual")
    results = [fasthost.leave_runtime(0x11)]
    restart_inside_the_straddle(results)
    results.append(fasthost.enter_runtime())
    assert results == [OK, ABANDONED, NOT_OWNER]
    assert fasthost.depth() == 0


@CAPTURES
def test_a_restart_inside_a_straddle_leaves_the_protocol_frame_to_its_own_close(session, capture):
    fasthost.start(clock="manual")
    results = [fasthost.leave_runtime(0x11)]
    with capture():
        in_a_captured_call(lambda: restart_inside_the_straddle(results))
        results.append(fasthost.enter_runtime())
        depth = fasthost.depth()
    assert results == [OK, ABANDONED, NOT_OWNER]
    assert depth == 0


# ---- a gone captured frame's position reoccupied by an entry without kind ----


def reopen_and_restart(results):
    """Closes the protocol frame opened outside (abandoning the captured
    frames it straddles), opens two protocol frames, one more while stopped
    (unrecorded), and restarts: three set-aside entries, the newest at the
    key function's position."""
    results.append(fasthost.enter_runtime())
    results.append(fasthost.leave_runtime(0x22))
    results.append(fasthost.reverse_enter_runtime())
    fasthost.stop()
    results.append(fasthost.leave_runtime(0x23))
    fasthost.start(clock="manual")


def close_all(results):
    results.append(fasthost.enter_runtime())  # 0x23's unrecorded open
    results.append(fasthost.reverse_leave_runtime())  # set aside: abandoned
    results.append(fasthost.enter_runtime())  # 0x22, set aside: abandoned
    results.append(fasthost.enter_runtime())  # nothing open


EXPECTED_REOPENED = [OK, OK, OK, OK, NOT_AVAILABLE, NOT_AVAILABLE, ABANDONED, ABANDONED, NOT_OWNER]


def test_the_protocol_alone_pops_each_entry_set_aside_by_its_own_close(session):
    fasthost.start(clock="manual")
    results = [fasthost.leave_runtime(0x21)]
    reopen_and_restart(results)
    close_all(results)
    assert results == EXPECTED_REOPENED
    assert fasthost.depth() == 0


@CAPTURES
def test_a_gone_captured_frame_never_closes_an_entry_reopened_at_its_position(session, capture):
    fasthost.start(clock="manual")
    results = [fasthost.leave_runtime(0x21)]
    with capture():
        in_a_captured_call(lambda: reopen_and_restart(results))
        close_all(results)
        depth = fasthost.depth()
    assert results == EXPECTED_REOPENED
    assert depth == 0


# ---- max_depth reached by a captured open mid-straddle --------------------


def test_the_protocol_alone_closes_its_frame_well_below_max_depth(session):
    fasthost.start(clock="manual", max_depth=2)
    results = [fasthost.leave_runtime(0x31), fasthost.enter_runtime(), fasthost.enter_runtime()]
    assert results == [OK, OK, NOT_OWNER]


@CAPTURES
def test_a_captured_open_refused_at_max_depth_never_takes_a_protocol_close(session, capture):
    # 0x31's frame and sorted's fill max_depth: the key function's captured
    # M frame is refused, an unrecorded open on top of sorted's frame.
    fasthost.start(clock="manual", max_depth=2)
    results = [fasthost.leave_runtime(0x31)]
    with capture():
        in_a_captured_call(lambda: results.append(fasthost.enter_runtime()))
        results.append(fasthost.enter_runtime())
        depth = fasthost.depth()
    assert results == [OK, OK, NOT_OWNER]
    assert depth == 0


@CAPTURES
def test_a_captured_call_that_joins_a_new_session_is_closed_by_its_return(session, capture):
    # The first call after start() inside sorted's key function is a captured
    # builtin's open: joining the session drops sorted's and the key's
    # frames, so its own frame is found where it lands, not where the stack
    # stood before.
    fasthost.start(clock="manual")
    lengths = []

    def restart_then_call_a_builtin():
        fasthost.stop()
        fasthost.start(clock="manual")
        lengths.append(len("abc"))

    with capture():
        fasthost.leave_runtime(0x41)
        in_a_captured_call(restart_then_call_a_builtin)
        depth = fasthost.depth()
    assert lengths == [3]
    assert depth == 1  # 0x41's frame, set aside
    assert fasthost.enter_runtime() == ABANDONED
    assert fasthost.depth() == 0
