"""Every row of the HRESULT table (docs/protocol.md §2), and the frame semantics."""

import math
import sys

import pytest

import fasthost
from fasthost import HResult, _testing

OPENERS = {"leave": lambda: fasthost.leave_runtime(0x1000), "reverse_enter": fasthost.reverse_enter_runtime}
CLOSERS = {"enter": fasthost.enter_runtime, "reverse_leave": fasthost.reverse_leave_runtime}
ALL_CALLS = {**OPENERS, **CLOSERS}


def main_thread(snapshot=None):
    snap = snapshot or fasthost.snapshot()
    (row,) = [r for r in snap.threads if r["alive"] and r["name"] == "MainThread"]
    return row


def test_hresult_values_match_the_clr():
    assert HResult.S_OK == 0
    assert HResult.HOST_E_CLRNOTAVAILABLE == 0x80131023
    assert HResult.HOST_E_TIMEOUT == 0x80131024
    assert HResult.HOST_E_NOT_OWNER == 0x80131025
    assert HResult.HOST_E_ABANDONED == 0x80131026
    assert HResult.E_FAIL == 0x80004005
    assert HResult.E_OUTOFMEMORY == 0x8007000E
    assert HResult.from_int32(-2146234333) is HResult.HOST_E_CLRNOTAVAILABLE
    assert HResult.E_FAIL.failed
    assert not HResult.S_OK.failed


@pytest.mark.parametrize("call", sorted(ALL_CALLS))
def test_every_call_returns_clr_not_available_when_not_recording(call):
    assert ALL_CALLS[call]() is HResult.HOST_E_CLRNOTAVAILABLE
    if call in OPENERS:  # an unrecorded open still nests until it is closed
        assert fasthost.depth() == 1
        closer = CLOSERS["enter" if call == "leave" else "reverse_leave"]
        assert closer() is HResult.HOST_E_CLRNOTAVAILABLE
    assert fasthost.depth() == 0


def test_calls_made_while_stopped_are_not_counted(recording):
    assert fasthost.leave_runtime(1) is HResult.S_OK
    assert fasthost.enter_runtime() is HResult.S_OK
    fasthost.stop()
    assert fasthost.leave_runtime(1) is HResult.HOST_E_CLRNOTAVAILABLE
    assert fasthost.enter_runtime() is HResult.HOST_E_CLRNOTAVAILABLE
    row = main_thread()
    assert (row["leave"], row["enter"]) == (1, 1)


def test_unmanaged_pair_is_recorded(recording):
    assert fasthost.leave_runtime(0xABC) is HResult.S_OK
    assert fasthost.depth() == 1
    assert fasthost.enter_runtime() is HResult.S_OK
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    (target,) = snap.thread_targets
    assert target["target"] == 0xABC
    assert target["calls"] == 1
    assert target["min_ns"] == target["max_ns"] == target["total_ns"]
    assert snap.totals["transitions"] == 1


def test_callback_on_empty_stack_is_allowed(recording):
    assert fasthost.reverse_enter_runtime() is HResult.S_OK
    assert fasthost.reverse_leave_runtime() is HResult.S_OK
    row = main_thread()
    assert row["callback_calls"] == 1
    assert row["ok"] == 2


@pytest.mark.parametrize("closer", sorted(CLOSERS))
def test_close_on_empty_stack_is_not_owner(recording, closer):
    assert CLOSERS[closer]() is HResult.HOST_E_NOT_OWNER
    assert main_thread()["not_owner"] == 1


@pytest.mark.parametrize(("opener", "wrong_closer"), [("leave", "reverse_leave"), ("reverse_enter", "enter")])
def test_close_of_the_other_kind_is_not_owner_and_pops_nothing(recording, opener, wrong_closer):
    assert OPENERS[opener]() is HResult.S_OK
    assert CLOSERS[wrong_closer]() is HResult.HOST_E_NOT_OWNER
    assert fasthost.depth() == 1
    right_closer = "enter" if opener == "leave" else "reverse_leave"
    assert CLOSERS[right_closer]() is HResult.S_OK
    row = main_thread()
    assert row["not_owner"] == 1
    assert row["ok"] == 2


def test_nesting_u_m_u_m(manual_clock):
    clock = manual_clock
    assert fasthost.leave_runtime(0x10) is HResult.S_OK  # qsort
    clock.advance_manual_time(100)
    assert fasthost.reverse_enter_runtime() is HResult.S_OK  # comparator
    clock.advance_manual_time(10)
    assert fasthost.leave_runtime(0x20) is HResult.S_OK  # strcmp
    clock.advance_manual_time(5)
    assert fasthost.reverse_enter_runtime() is HResult.S_OK
    clock.advance_manual_time(7)
    assert fasthost.depth() == 4
    assert fasthost.reverse_leave_runtime() is HResult.S_OK
    clock.advance_manual_time(3)
    assert fasthost.enter_runtime() is HResult.S_OK  # strcmp: 5 + 7 + 3 = 15, exclusive 8
    clock.advance_manual_time(20)
    assert fasthost.reverse_leave_runtime() is HResult.S_OK  # comparator: 10 + 15 + 20 = 45
    clock.advance_manual_time(50)
    assert fasthost.enter_runtime() is HResult.S_OK  # qsort: 100 + 45 + 50 = 195, exclusive 150
    snap = fasthost.snapshot()
    by_target = {int(t["target"]): t for t in snap.thread_targets}
    assert (by_target[0x20]["total_ns"], by_target[0x20]["exclusive_ns"]) == (15, 8)
    assert (by_target[0x10]["total_ns"], by_target[0x10]["exclusive_ns"]) == (195, 150)
    row = main_thread(snap)
    assert row["callback_total_ns"] == 7 + 45
    assert row["max_depth"] == 4


def test_max_depth_refuses_with_out_of_memory_and_records_nothing_but_keeps_the_nesting():
    fasthost.start(clock="monotonic", max_depth=3)
    try:
        for _ in range(3):
            assert fasthost.leave_runtime(1) is HResult.S_OK
        assert fasthost.leave_runtime(1) is HResult.E_OUTOFMEMORY
        assert fasthost.reverse_enter_runtime() is HResult.E_OUTOFMEMORY
        assert fasthost.depth() == 5  # the refused opens still nest
        # Their closes pop them, whatever kind they close, not the frames
        # beneath; then the three recorded frames close normally.
        assert fasthost.reverse_leave_runtime() is HResult.HOST_E_CLRNOTAVAILABLE
        assert fasthost.enter_runtime() is HResult.HOST_E_CLRNOTAVAILABLE
        for _ in range(3):
            assert fasthost.enter_runtime() is HResult.S_OK
        assert fasthost.depth() == 0
        row = main_thread()
        assert row["out_of_memory"] == 2
        assert row["max_depth"] == 3
        assert fasthost.snapshot().thread_targets["calls"].sum() == 3
    finally:
        fasthost.stop()


def test_timeout_closes_and_records_the_frame():
    _testing.set_manual_time(0)
    fasthost.start(clock="manual", timeout_ns=100)
    try:
        fasthost.leave_runtime(7)
        _testing.advance_manual_time(101)
        assert fasthost.enter_runtime() is HResult.HOST_E_TIMEOUT
        fasthost.leave_runtime(7)
        _testing.advance_manual_time(100)  # not longer than the timeout
        assert fasthost.enter_runtime() is HResult.S_OK
        fasthost.reverse_enter_runtime()
        _testing.advance_manual_time(500)
        assert fasthost.reverse_leave_runtime() is HResult.HOST_E_TIMEOUT
        assert fasthost.depth() == 0
        snap = fasthost.snapshot()
        (target,) = snap.thread_targets
        assert (target["calls"], target["timeouts"], target["total_ns"]) == (2, 1, 201)
        assert main_thread(snap)["timeout"] == 2
    finally:
        fasthost.stop()


@pytest.mark.parametrize("restart", ["reset", "start"])
def test_frames_opened_before_reset_or_start_close_as_abandoned(restart):
    fasthost.start(clock="monotonic")
    try:
        fasthost.leave_runtime(1)
        fasthost.reverse_enter_runtime()
        if restart == "reset":
            fasthost.reset()
        else:
            fasthost.stop()
            fasthost.start(clock="monotonic")
        assert fasthost.leave_runtime(2) is HResult.S_OK  # a new frame on top still works
        assert fasthost.enter_runtime() is HResult.S_OK
        assert fasthost.reverse_leave_runtime() is HResult.HOST_E_ABANDONED
        assert fasthost.enter_runtime() is HResult.HOST_E_ABANDONED
        assert fasthost.depth() == 0
        snap = fasthost.snapshot()
        row = main_thread(snap)
        assert row["abandoned"] == 2
        assert row["leave"] == 1  # nothing from before the restart leaks in
        assert [int(t["target"]) for t in snap.thread_targets] == [2]
    finally:
        fasthost.stop()


@pytest.mark.parametrize("how", ["depth", "top_frame"])
def test_corrupted_state_returns_e_fail_then_poisons_until_reset(recording, how):
    fasthost.leave_runtime(1)
    _testing.corrupt_thread_state(how)
    assert fasthost.enter_runtime() is HResult.E_FAIL
    assert fasthost.depth() == 0  # the untrustworthy stack is dropped
    for call in ALL_CALLS.values():
        assert call() is HResult.HOST_E_CLRNOTAVAILABLE
    assert fasthost.running()
    snap = fasthost.snapshot()
    assert snap.totals["poisoned"]
    row = main_thread(snap)
    assert row["failed"] == 1
    assert row["clr_not_available"] == 4  # counted: the session exists
    fasthost.reset()
    assert fasthost.leave_runtime(1) is HResult.S_OK
    assert fasthost.enter_runtime() is HResult.S_OK


def test_poison_reaches_other_threads(recording):
    import threading

    fasthost.leave_runtime(1)
    _testing.corrupt_thread_state("depth")
    assert fasthost.leave_runtime(1) is HResult.E_FAIL
    seen = []
    worker = threading.Thread(target=lambda: seen.append(fasthost.leave_runtime(2)))
    worker.start()
    worker.join()
    assert seen == [HResult.HOST_E_CLRNOTAVAILABLE]


def test_context_managers_bracket_a_block_and_survive_exceptions(recording):
    with fasthost.unmanaged(0x42) as opened:
        assert opened is HResult.S_OK
        with fasthost.callback() as cb:
            assert cb is HResult.S_OK
            assert fasthost.depth() == 2
    with pytest.raises(ZeroDivisionError), fasthost.unmanaged(0x42):
        1 / 0  # noqa: B018
    assert fasthost.depth() == 0
    snap = fasthost.snapshot()
    (target,) = snap.thread_targets
    assert target["calls"] == 2
    assert main_thread(snap)["callback_calls"] == 1


def test_context_manager_never_raises_for_protocol_errors():
    # Not recording: every transition returns CLR_NOT_AVAILABLE, the block runs.
    ran = False
    with fasthost.unmanaged(1) as result, fasthost.callback():
        ran = True
    assert ran
    assert result is HResult.HOST_E_CLRNOTAVAILABLE


def test_start_while_running_same_config_is_a_no_op_different_raises(recording):
    fasthost.leave_runtime(1)
    fasthost.start(clock="monotonic")  # same: no new session
    assert fasthost.enter_runtime() is HResult.S_OK
    with pytest.raises(RuntimeError, match="already recording"):
        fasthost.start(clock="monotonic", max_depth=8)


def test_overflow_row_folds_targets_past_max_targets():
    fasthost.start(clock="monotonic", max_targets=3)
    try:
        for target in [1, 2, 3, 4, 5, 1, 6]:
            fasthost.leave_runtime(target)
            fasthost.enter_runtime()
        snap = fasthost.snapshot()
        rows = {("overflow" if t["overflow"] else int(t["target"])): int(t["calls"]) for t in snap.thread_targets}
        assert rows == {1: 2, 2: 1, 3: 1, "overflow": 3}
    finally:
        fasthost.stop()


def test_function_pointers_are_callable_through_ctypes(recording):
    import ctypes

    pointers = fasthost.function_pointers()
    assert list(pointers) == ["LeaveRuntime", "EnterRuntime", "ReverseLeaveRuntime", "ReverseEnterRuntime"]
    leave = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_size_t)(pointers["LeaveRuntime"])
    enter = ctypes.CFUNCTYPE(ctypes.c_int32)(pointers["EnterRuntime"])
    assert leave(0x77) == 0
    assert enter() == 0
    assert HResult.from_int32(enter()) is HResult.HOST_E_NOT_OWNER
    (target,) = fasthost.snapshot().thread_targets
    assert target["target"] == 0x77


def test_transitions_leave_errno_untouched_also_on_slow_paths(recording):
    """ctypes with use_errno=True puts its private errno into the real one
    before a foreign call and reads it back after: so calling the raw C
    functions that way shows whether they touched errno."""
    import ctypes
    import threading

    pointers = fasthost.function_pointers()
    leave = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_size_t, use_errno=True)(pointers["LeaveRuntime"])
    enter = ctypes.CFUNCTYPE(ctypes.c_int32, use_errno=True)(pointers["EnterRuntime"])
    seen = []

    def calls():
        # A fresh thread: its first call allocates its state; each new target
        # allocates a record; the first close allocates a histogram row.
        for target, errno_value in [(0x10, 42), (0x20, 7), (0x10, 99)]:
            ctypes.set_errno(errno_value)
            results = (leave(target), enter())
            seen.append((results, ctypes.get_errno()))

    thread = threading.Thread(target=calls)
    thread.start()
    thread.join()
    assert seen == [((0, 0), 42), ((0, 0), 7), ((0, 0), 99)]


@pytest.mark.parametrize("capture", [None, "builtins", "native"])
def test_max_depth_rises_when_a_target_the_thread_knows_opens_deeper_than_before(capture):
    """An open of a target in the thread's recent cache takes the fast path,
    which does not touch max_depth; it may only do so no deeper than the
    thread has been. Each open here past depth 1 is of a known target."""
    if capture == "native" and sys.version_info < (3, 12):
        pytest.skip("capture_native() sees builtins through sys.monitoring (3.12+)")
    fasthost.start(clock="manual")  # the captures' fast paths read the clock inline
    try:
        if capture is None:
            for _ in range(2):
                assert fasthost.leave_runtime(0x10) is HResult.S_OK
                assert fasthost.enter_runtime() is HResult.S_OK
            for _ in range(5):
                assert fasthost.leave_runtime(0x10) is HResult.S_OK
            for _ in range(5):
                assert fasthost.enter_runtime() is HResult.S_OK
            expected = 5
        else:
            with fasthost.capture_native() if capture == "native" else fasthost.capture_builtins():
                for _ in range(3):
                    math.cos(0.5)  # at depth 0: now known
                sorted([2, 1], key=lambda value: math.cos(value))  # sorted (U) > key (M) > cos (U)
            expected = 3
        row = main_thread()
    finally:
        fasthost.stop()
    assert row["max_depth"] == expected
