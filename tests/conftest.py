import sys

import pytest

import fasthost

MANUAL = {"clock": "manual"}


@pytest.fixture(autouse=True)
def no_leaked_state():
    """Every test leaves fasthost as it found it: not recording, and no
    profile hook installed."""
    assert not fasthost.running(), "a previous test left fasthost recording"
    assert sys.getprofile() is None
    yield
    leaked = fasthost.running()
    fasthost.stop()
    assert not leaked, "this test left fasthost recording"
    assert sys.getprofile() is None, "this test left a profile hook installed"


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
