"""A pure-Python reference model of the transition protocol, one thread of
the C core (the contract is in docs/protocol.md and the README's Semantics).

It models, in its own terms, what the README documents:

- start() and reset() open a new session (counters zero); a thread joins a
  session on its first call made while recording, and then sets aside
  every entry it still has open: set-aside entries use none of the new
  session's max_depth and are closed by any close, as HOST_E_ABANDONED (a
  recorded frame of an older session) or HOST_E_CLRNOTAVAILABLE (an open
  that was never recorded). Only their order and that flag are kept, as
  runs; past ASIDE_RUNS runs the two oldest are merged as abandoned.
- an open that is not recorded (refused at max_depth, made while stopped
  or poisoned) still nests: its close pops it, whatever kind it names;
- calls made while stopped are not counted, and change nothing but the
  nesting; a close that does not match what is on top is ignored then;
- closing a frame credits its duration to the frame directly beneath it:
  exclusive time is self time.

Time comes from the test (the core's "manual" clock), so durations are exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from fasthost.hresult import CALL_ORDER, RESULT_ORDER, HResult

LEAVE, ENTER, REVERSE_LEAVE, REVERSE_ENTER = range(4)
CORRUPT = "X"  # a frame kind that is not a kind: what corruption leaves
ASIDE_RUNS = 16


@dataclass
class Frame:
    """A recorded frame of the thread's current session."""

    kind: str  # "U", "M" or CORRUPT
    start: int
    target: object = None
    child_ns: int = 0


@dataclass
class Unrecorded:
    """An open that was not recorded."""


@dataclass
class Aside:
    """An entry set aside by a new session."""

    abandoned: bool  # a recorded frame (True) or an unrecorded open (False)


@dataclass
class TargetStats:
    calls: int = 0
    total_ns: int = 0
    exclusive_ns: int = 0
    min_ns: int = 2**64 - 1
    max_ns: int = 0
    timeouts: int = 0
    inclusive: list[int] = field(default_factory=list)
    exclusive: list[int] = field(default_factory=list)


@dataclass
class Config:
    max_depth: int = 256
    timeout_ns: int = 0
    max_targets: int = 1024


class ThreadModel:
    def __init__(self) -> None:
        self.now = 0
        self.running = False
        self.poisoned = False
        self.epoch = 0
        self.config = Config()
        self.stack: list[Frame | Unrecorded | Aside] = []
        self.joined_epoch = -1  # session this thread's data belongs to
        self._zero()

    def _zero(self) -> None:
        self.results = [[0] * len(RESULT_ORDER) for _ in CALL_ORDER]
        self.targets: dict[object, TargetStats] = {}
        self.callbacks: list[int] = []
        self.exit_abandoned = 0
        self.max_depth_seen = 0

    # ---- session control --------------------------------------------------
    def start(self, config: Config) -> None:
        self.config = config
        self.running = True
        self.poisoned = False
        self.epoch += 1

    def stop(self) -> None:
        self.running = False

    def reset(self) -> None:
        self.poisoned = False
        self.epoch += 1

    def corrupt_top_frame(self) -> None:
        frames = [e for e in self.stack if isinstance(e, Frame)]
        frames[-1].kind = CORRUPT

    # ---- the nesting ---------------------------------------------------------
    @property
    def frames(self) -> int:
        """Recorded frames of this session: what max_depth bounds."""
        return sum(isinstance(e, Frame) for e in self.stack)

    @property
    def in_session(self) -> bool:
        return self.joined_epoch == self.epoch

    def _set_aside(self) -> None:
        self.stack = [e if isinstance(e, Aside) else Aside(isinstance(e, Frame)) for e in self.stack]
        self._merge_old_runs()

    def _merge_old_runs(self) -> None:
        """Past ASIDE_RUNS runs of set-aside entries (an unrecorded open with
        no frame beneath counts as one), the two oldest become abandoned."""

        def flag(entry: Frame | Unrecorded | Aside) -> bool:
            return isinstance(entry, Aside) and entry.abandoned

        while True:
            bottom = list(itertools.takewhile(lambda e: not isinstance(e, Frame), self.stack))
            runs = [len(list(group)) for _, group in itertools.groupby(bottom, key=flag)]
            if len(runs) <= ASIDE_RUNS:
                return
            for i in range(runs[0] + runs[1]):
                self.stack[i] = Aside(True)

    def _push_unrecorded(self) -> None:
        self.stack.append(Unrecorded())
        self._merge_old_runs()

    # ---- the four calls ---------------------------------------------------
    def _join(self) -> None:
        if self.joined_epoch != self.epoch:
            self._zero()
            self._set_aside()
            self.joined_epoch = self.epoch

    def _count(self, call: int, result: HResult) -> HResult:
        self.results[call][RESULT_ORDER.index(result)] += 1
        return result

    def _fail(self, call: int) -> HResult:
        self.stack.clear()
        self.poisoned = True
        return self._count(call, HResult.E_FAIL)

    def _not_recording(self, call: int, kind: str, opens: bool) -> HResult:
        """Stopped (not counted) or poisoned (counted): only the nesting."""
        if opens:
            self._push_unrecorded()
        elif self.stack:
            top = self.stack[-1]
            if not isinstance(top, Frame) or top.kind == kind:
                self.stack.pop()
        if self.running:
            return self._count(call, HResult.HOST_E_CLRNOTAVAILABLE)
        return HResult.HOST_E_CLRNOTAVAILABLE

    def _open(self, call: int, kind: str, target: object = None) -> HResult:
        if self.running:
            self._join()
        if not self.running or self.poisoned:
            return self._not_recording(call, kind, opens=True)
        if self.frames >= self.config.max_depth:
            self._push_unrecorded()
            return self._count(call, HResult.E_OUTOFMEMORY)
        if kind == "U":
            target = self._target_key(target)
        self.stack.append(Frame(kind, self.now, target))
        self.max_depth_seen = max(self.max_depth_seen, self.frames)
        return self._count(call, HResult.S_OK)

    def _target_key(self, address: int) -> object:
        if address in self.targets or len([k for k in self.targets if k != "overflow"]) < self.config.max_targets:
            self.targets.setdefault(address, TargetStats())
            return address
        self.targets.setdefault("overflow", TargetStats())
        return "overflow"

    def _close(self, call: int, kind: str) -> tuple[HResult, Frame | None, int]:
        if self.running:
            self._join()
        if not self.running or self.poisoned:
            return self._not_recording(call, kind, opens=False), None, 0
        if not self.stack:
            return self._count(call, HResult.HOST_E_NOT_OWNER), None, 0
        top = self.stack[-1]
        if isinstance(top, Aside):
            self.stack.pop()
            result = HResult.HOST_E_ABANDONED if top.abandoned else HResult.HOST_E_CLRNOTAVAILABLE
            return self._count(call, result), None, 0
        if isinstance(top, Unrecorded):
            self.stack.pop()
            return self._count(call, HResult.HOST_E_CLRNOTAVAILABLE), None, 0
        if top.kind == CORRUPT:
            return self._fail(call), None, 0
        if top.kind != kind:
            return self._count(call, HResult.HOST_E_NOT_OWNER), None, 0
        self.stack.pop()
        duration = max(0, self.now - top.start)
        if self.stack and isinstance(self.stack[-1], Frame):
            self.stack[-1].child_ns += duration  # exclusive time is self time
        timed_out = self.config.timeout_ns and duration > self.config.timeout_ns
        result = HResult.HOST_E_TIMEOUT if timed_out else HResult.S_OK
        return self._count(call, result), top, duration

    def leave_runtime(self, target: int) -> HResult:
        return self._open(LEAVE, "U", target)

    def reverse_enter_runtime(self) -> HResult:
        return self._open(REVERSE_ENTER, "M")

    def enter_runtime(self) -> HResult:
        result, frame, inclusive = self._close(ENTER, "U")
        if frame is not None:
            exclusive = inclusive - min(frame.child_ns, inclusive)
            stats = self.targets[frame.target]
            stats.calls += 1
            stats.total_ns += inclusive
            stats.exclusive_ns += exclusive
            stats.min_ns = min(stats.min_ns, inclusive)
            stats.max_ns = max(stats.max_ns, inclusive)
            stats.timeouts += result == HResult.HOST_E_TIMEOUT
            stats.inclusive.append(inclusive)
            stats.exclusive.append(exclusive)
        return result

    def reverse_leave_runtime(self) -> HResult:
        result, frame, duration = self._close(REVERSE_LEAVE, "M")
        if frame is not None:
            self.callbacks.append(duration)
        return result
