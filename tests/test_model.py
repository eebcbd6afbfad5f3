"""The C core and the reference model (tests/model.py), side by side over
random sequences of calls: same results, same counts, same durations. And
the invariant on its own: for any correctly nested sequence, interleaved
with start/stop/reset/snapshot from another thread, the stack mirrors the
real nesting."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fasthost
from fasthost import _testing
from fasthost.hresult import CALL_ORDER, RESULT_ORDER, HResult

from .conftest import drain_stack
from .model import Config, Frame, ThreadModel

TARGETS = st.sampled_from([0, 1, 0x7F00_0000_1000, 2**64 - 1, 42, 43])
CONFIGS = st.builds(
    Config,
    max_depth=st.sampled_from([1, 2, 3, 8, 256, 256, 256]),
    timeout_ns=st.sampled_from([0, 1, 50, 1000]),
    max_targets=st.sampled_from([1, 2, 1024]),
)


ADVANCE = st.sampled_from([0, 1, 2, 49, 50, 51, 999, 1000, 1001, 10**6, 10**12])


class CoreMatchesModel(RuleBasedStateMachine):
    """Calls dominate the sequences (two rules of three); session control
    (start with a new config, stop, reset, corrupting the top frame) shares
    the third, so most calls happen while recording."""

    def __init__(self):
        super().__init__()
        drain_stack()
        self.model = ThreadModel()
        _testing.set_manual_time(0)

    def teardown(self):
        drain_stack()

    def _start(self, config):
        fasthost.stop()
        fasthost.start(
            clock="manual",
            max_depth=config.max_depth,
            timeout_ns=config.timeout_ns,
            max_targets=config.max_targets,
        )
        self.model.stop()
        self.model.start(config)

    @initialize(config=CONFIGS)
    def first_start(self, config):
        self._start(config)

    @rule(ns=ADVANCE, address=TARGETS, managed=st.booleans())
    def open_frame(self, ns, address, managed):
        self.model.now = _testing.advance_manual_time(ns)
        if managed:
            assert fasthost.reverse_enter_runtime() is self.model.reverse_enter_runtime()
        else:
            assert fasthost.leave_runtime(address) is self.model.leave_runtime(address)

    @rule(ns=ADVANCE, which=st.sampled_from(["top", "top", "top", "U", "M"]))
    def close_frame(self, ns, which):
        """Mostly closes what is on top (per the model), sometimes a given
        kind whatever is there."""
        self.model.now = _testing.advance_manual_time(ns)
        if which == "top":
            top = self.model.stack[-1] if self.model.stack else None
            which = top.kind if isinstance(top, Frame) and top.kind != "X" else "U"
        if which == "M":
            assert fasthost.reverse_leave_runtime() is self.model.reverse_leave_runtime()
        else:
            assert fasthost.enter_runtime() is self.model.enter_runtime()

    @rule(action=st.sampled_from(["start", "stop", "stop", "reset", "corrupt"]), config=CONFIGS)
    def control(self, action, config):
        if action == "start":
            self._start(config)
        elif action == "stop":
            fasthost.stop()
            self.model.stop()
        elif action == "reset":
            fasthost.reset()
            self.model.reset()
        elif (
            self.model.running
            and not self.model.poisoned
            and self.model.in_session
            and any(isinstance(e, Frame) for e in self.model.stack)
        ):
            # The next close that meets this frame finds it broken: E_FAIL.
            _testing.corrupt_thread_state("top_frame")
            self.model.corrupt_top_frame()

    @invariant()
    def depth_matches(self):
        assert fasthost.depth() == len(self.model.stack)
        if self.model.in_session:  # frames of an older session are set aside when it joins
            assert self.model.frames <= self.model.config.max_depth

    @invariant()
    def snapshot_matches(self):
        snap = fasthost.snapshot()
        mine = [i for i, row in enumerate(snap.threads) if row["name"] == "MainThread"]
        if not self.model.in_session:
            assert mine == []
            return
        (i,) = mine
        model = self.model
        expected = np.array(model.results, dtype=np.uint64)
        assert snap.results[i].tolist() == expected.tolist(), (CALL_ORDER, [r.name for r in RESULT_ORDER])
        row = snap.threads[i]
        assert row["depth"] == len(model.stack)
        assert row["max_depth"] == model.max_depth_seen
        assert row["callback_calls"] == len(model.callbacks)
        assert row["callback_total_ns"] == sum(model.callbacks)
        assert row["abandoned"] == snap.results[i, :, 4].sum() + model.exit_abandoned
        got = {}
        for t in snap.thread_targets[snap.thread_targets["thread"] == i]:
            key = "overflow" if t["overflow"] else int(t["target"])
            got[key] = tuple(int(t[f]) for f in ("calls", "total_ns", "exclusive_ns", "min_ns", "max_ns", "timeouts"))
        want = {
            k: (s.calls, s.total_ns, s.exclusive_ns, s.min_ns, s.max_ns, s.timeouts) for k, s in model.targets.items()
        }
        assert got == want


class NestingMirrorsTheStack(RuleBasedStateMachine):
    """Correctly nested opens and closes on this thread (what a user's code
    does), with start/stop/reset/snapshot made from another thread at any
    point. After every step: depth() is the real nesting; an open is refused
    only when the nesting itself reaches max_depth; no close is refused."""

    def __init__(self):
        super().__init__()
        drain_stack()
        self.control_thread = ThreadPoolExecutor(max_workers=1)
        self.nesting = []  # per open: (kind, "recorded" session number | "unrecorded")
        self.session = 0
        self.running = False
        self.max_depth = 256

    def teardown(self):
        self.control_thread.submit(fasthost.stop).result()
        self.control_thread.shutdown()
        drain_stack()

    def _control(self, function, **kwargs):
        self.control_thread.submit(function, **kwargs).result()

    @initialize(max_depth=st.sampled_from([1, 2, 3, 256]))
    def first_start(self, max_depth):
        self._start(max_depth)

    def _start(self, max_depth):
        self._control(fasthost.stop)
        self._control(fasthost.start, clock="monotonic", max_depth=max_depth)
        self.max_depth = max_depth
        self.session += 1
        self.running = True

    @rule(managed=st.booleans(), address=TARGETS)
    def open_frame(self, managed, address):
        result = fasthost.reverse_enter_runtime() if managed else fasthost.leave_runtime(address)
        kind = "M" if managed else "U"
        if not self.running:
            assert result is HResult.HOST_E_CLRNOTAVAILABLE
            self.nesting.append((kind, "unrecorded"))
        elif result is HResult.E_OUTOFMEMORY:
            assert len(self.nesting) >= self.max_depth, "refused below max_depth"
            self.nesting.append((kind, "unrecorded"))
        else:
            assert result is HResult.S_OK
            self.nesting.append((kind, self.session))

    @rule()
    def close_frame(self):
        if not self.nesting:
            return
        kind, opened = self.nesting.pop()
        result = fasthost.reverse_leave_runtime() if kind == "M" else fasthost.enter_runtime()
        if not self.running:
            assert result is HResult.HOST_E_CLRNOTAVAILABLE
        elif opened == "unrecorded":
            # Past 16 alternations of set-aside runs the oldest merge as abandoned.
            assert result in (HResult.HOST_E_CLRNOTAVAILABLE, HResult.HOST_E_ABANDONED)
        elif opened == self.session:
            assert result is HResult.S_OK
        else:
            assert result is HResult.HOST_E_ABANDONED

    @rule(
        action=st.sampled_from(["start", "stop", "reset", "snapshot", "restart"]),
        max_depth=st.sampled_from([1, 2, 3, 256]),
    )
    def control(self, action, max_depth):
        if action == "start":
            self._control(fasthost.start, clock="monotonic", max_depth=self.max_depth)
            if not self.running:
                self.session += 1
            self.running = True
        elif action == "restart":
            self._start(max_depth)
        elif action == "stop":
            self._control(fasthost.stop)
            self.running = False
        elif action == "reset":
            self._control(fasthost.reset)
            self.session += 1
        else:
            self.control_thread.submit(fasthost.snapshot).result()

    @invariant()
    def depth_is_the_nesting(self):
        assert fasthost.depth() == len(self.nesting)


CoreMatchesModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCoreMatchesModel = CoreMatchesModel.TestCase
NestingMirrorsTheStack.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestNestingMirrorsTheStack = NestingMirrorsTheStack.TestCase
