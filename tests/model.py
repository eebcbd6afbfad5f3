"""A pure-Python reference model of the transition protocol (SPEC §2).

It models one thread of the C core, including the parts of its behaviour
that the spec leaves to the implementation and the README documents:
start() opens a new session (counters zero), a thread joins a session on its
first call made while recording, calls made while stopped are not counted,
and a thread's frames survive sessions (older ones close as abandoned).
Time comes from the test (the core's "manual" clock), so durations are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasthost.hresult import CALL_ORDER, RESULT_ORDER, HResult

LEAVE, ENTER, REVERSE_LEAVE, REVERSE_ENTER = range(4)
CORRUPT = "X"  # a frame kind that is not a kind: what corruption leaves


@dataclass
class Frame:
    kind: str  # "U", "M" or CORRUPT
    epoch: int
    start: int
    target: object = None
    child_ns: int = 0


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
        self.stack: list[Frame] = []
        self.joined_epoch = -1  # session this thread's data belongs to
        self._zero()

    def _zero(self) -> None:
        self.results = [[0] * len(RESULT_ORDER) for _ in CALL_ORDER]
        self.targets: dict[object, TargetStats] = {}
        self.callbacks: list[int] = []
        self.exit_abandoned = 0
        self.max_depth_seen = len(self.stack)

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
        self.stack[-1].kind = CORRUPT

    # ---- the four calls ---------------------------------------------------
    def _join(self, call: int) -> HResult | None:
        """What happens before a call's own logic; a result ends the call."""
        if not self.running:
            return HResult.HOST_E_CLRNOTAVAILABLE
        if self.joined_epoch != self.epoch:
            self._zero()
            if len(self.stack) > self.config.max_depth:
                self.exit_abandoned = len(self.stack) - self.config.max_depth
                del self.stack[self.config.max_depth :]
            self.max_depth_seen = len(self.stack)
            self.joined_epoch = self.epoch
        if self.poisoned:
            return self._count(call, HResult.HOST_E_CLRNOTAVAILABLE)
        return None

    def _count(self, call: int, result: HResult) -> HResult:
        self.results[call][RESULT_ORDER.index(result)] += 1
        return result

    def _fail(self, call: int) -> HResult:
        self.stack.clear()
        self.poisoned = True
        return self._count(call, HResult.E_FAIL)

    def _open(self, call: int, kind: str, target: object = None) -> HResult:
        early = self._join(call)
        if early is not None:
            return early
        if len(self.stack) >= self.config.max_depth:
            return self._count(call, HResult.E_OUTOFMEMORY)
        if kind == "U":
            target = self._target_key(target)
        self.stack.append(Frame(kind, self.epoch, self.now, target))
        self.max_depth_seen = max(self.max_depth_seen, len(self.stack))
        return self._count(call, HResult.S_OK)

    def _target_key(self, address: int) -> object:
        if address in self.targets or len([k for k in self.targets if k != "overflow"]) < self.config.max_targets:
            self.targets.setdefault(address, TargetStats())
            return address
        self.targets.setdefault("overflow", TargetStats())
        return "overflow"

    def _close(self, call: int, kind: str) -> tuple[HResult, Frame | None, int]:
        early = self._join(call)
        if early is not None:
            return early, None, 0
        if not self.stack:
            return self._count(call, HResult.HOST_E_NOT_OWNER), None, 0
        top = self.stack[-1]
        if top.kind == CORRUPT:
            return self._fail(call), None, 0
        if top.kind != kind:
            return self._count(call, HResult.HOST_E_NOT_OWNER), None, 0
        self.stack.pop()
        if top.epoch != self.epoch:
            return self._count(call, HResult.HOST_E_ABANDONED), None, 0
        duration = max(0, self.now - top.start)
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
            if self.stack and self.stack[-1].kind == "U":
                self.stack[-1].child_ns += duration
            self.callbacks.append(duration)
        return result

    @property
    def in_session(self) -> bool:
        return self.joined_epoch == self.epoch
