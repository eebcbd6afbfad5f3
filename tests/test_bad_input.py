"""Wrong arguments from Python raise before anything is recorded."""

import pytest

import fasthost


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (-1, OverflowError),
        (2**64, OverflowError),
        (2**100, OverflowError),
        ("x", TypeError),
        (None, TypeError),
        (1.5, TypeError),
        (b"\x01", TypeError),
    ],
)
def test_bad_target_raises_and_records_nothing(recording, target, error):
    with pytest.raises(error):
        fasthost.leave_runtime(target)
    with pytest.raises(error):
        fasthost.unmanaged(target)
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    assert snap.totals["calls"]["leave"] == 0
    assert len(snap.thread_targets) == 0


def test_extreme_targets_are_accepted(recording):
    for target in (0, 2**64 - 1):
        assert fasthost.leave_runtime(target) is fasthost.HResult.S_OK
        assert fasthost.enter_runtime() is fasthost.HResult.S_OK
    assert sorted(fasthost.snapshot().thread_targets["target"].tolist()) == [0, 2**64 - 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"clock": "sundial"}, ValueError, "clock must be one of"),
        ({"clock": 3}, TypeError, "clock must be a str"),
        ({"max_depth": 0}, ValueError, "max_depth must be between 1"),
        ({"max_depth": "8"}, TypeError, "max_depth must be an int"),
        ({"precision": 0}, ValueError, "precision must be between 1 and 8"),
        ({"precision": 9}, ValueError, "precision must be between 1 and 8"),
        ({"timeout_ns": -1}, ValueError, "timeout_ns must be between 0"),
        ({"max_targets": 0}, ValueError, "max_targets must be between 1"),
        ({"max_targets": True}, TypeError, "max_targets must be an int"),
    ],
)
def test_bad_start_arguments_raise_and_do_not_start(kwargs, error, message):
    with pytest.raises(error, match=message):
        fasthost.start(**kwargs)
    assert not fasthost.running()


def test_start_takes_keywords_only():
    with pytest.raises(TypeError):
        fasthost.start("monotonic")  # type: ignore[misc]
    assert not fasthost.running()


def test_snapshot_kind_names_are_checked(recording):
    with pytest.raises(ValueError, match="kind must be one of"):
        fasthost.snapshot().calls("leaves")
