"""fork: the child starts with empty counters and records normally."""

import os

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
