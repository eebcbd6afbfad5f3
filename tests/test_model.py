"""The C core and the reference model (tests/model.py), side by side over
random sequences of calls: same results, same counts, same durations."""

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fasthost
from fasthost import _testing
from fasthost.hresult import CALL_ORDER, RESULT_ORDER

from .conftest import drain_stack
from .model import Config, ThreadModel

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
            which = self.model.stack[-1].kind if self.model.stack else "U"
        if which == "M":
            assert fasthost.reverse_leave_runtime() is self.model.reverse_leave_runtime()
        else:
            assert fasthost.enter_runtime() is self.model.enter_runtime()

    @rule(action=st.sampled_from(["start", "stop", "reset", "corrupt"]), config=CONFIGS)
    def control(self, action, config):
        if action == "start":
            self._start(config)
        elif action == "stop":
            fasthost.stop()
            self.model.stop()
        elif action == "reset":
            fasthost.reset()
            self.model.reset()
        elif self.model.running and not self.model.poisoned and self.model.in_session and self.model.stack:
            # The next close that meets this frame finds it broken: E_FAIL.
            _testing.corrupt_thread_state("top_frame")
            self.model.corrupt_top_frame()

    @invariant()
    def depth_matches(self):
        assert fasthost.depth() == len(self.model.stack)

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


CoreMatchesModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCoreMatchesModel = CoreMatchesModel.TestCase
