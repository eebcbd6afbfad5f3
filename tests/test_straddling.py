"""Protocol pairs that straddle captured calls.

The invariant (README, "Captures and the protocol"): a capture never changes
what a protocol call returns, nor the calls and inclusive time of a
protocol target. A protocol frame opened inside a captured native call and
closed after it returns, or opened before and closed inside, pairs with its
own close; the captured frame that it straddles is abandoned (removed
unrecorded, counted as abandoned), as is a callback's. Checked against a
model of the protocol alone (a stack of U and M frames on the manual
clock), for every way of calling the protocol through C code that the
captures see: a builtin consuming an iterator that calls it, a
``functools.partial``, a Python key function run by ``sorted``, libc's
``qsort`` calling a ctypes comparator, and those nested, on Python threads
and on native pthreads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import random

import pytest

import fasthost
import fasthost.cffi
import fasthost.ctypes
from fasthost import _testing
from fasthost.hresult import HResult

from .conftest import run_threads

CAPTURES = pytest.mark.parametrize(
    "capture", [fasthost.capture_builtins, fasthost.capture_native], ids=["builtins", "native"]
)
PROTOCOL = {
    "leave": fasthost.leave_runtime,
    "enter": fasthost.enter_runtime,
    "reverse_enter": fasthost.reverse_enter_runtime,
    "reverse_leave": fasthost.reverse_leave_runtime,
}


@pytest.fixture
def manual():
    fasthost.start(clock="manual")
    yield
    fasthost.stop()


def target_row(snap, target):
    rows = snap.targets[snap.targets["target"] == target]
    return (int(rows["calls"].sum()), int(rows["total_ns"].sum())) if len(rows) else (0, 0)


def abandoned(snap):
    return int(snap.threads["exit_abandoned"].sum())


# ---- how a call reaches the protocol: directly, or through C code ----------


def direct(f, *args):
    return f(*args)


def through_a_builtin(f, *args):
    # sorted() is a builtin every capture sees; starmap calls f from C.
    return sorted(itertools.starmap(f, [args]))[0]


def through_a_partial(f, *args):
    # A C type: capture_native (3.12+) sees its call, the profile hook not.
    return functools.partial(f, *args)()


def through_a_key_function(f, *args):
    # A Python function that sorted() calls back: an M frame in a U frame.
    box = []
    sorted([0], key=lambda _: box.append(f(*args)) or 0)
    return box[0]


def through_nested_builtins(f, *args):
    return through_a_key_function(through_a_builtin, f, *args)


# libc's qsort through the adapters, the protocol call in the first
# comparison: the instrumented function is a captured U frame, the
# comparator a captured M frame, whichever capture runs (or none).
_LIBC = fasthost.ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("c")))
_COMPARE = fasthost.ctypes.callback(ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p))


def _sort_calling(sort, make_comparator, f, args):
    box = []

    def compare(a, b):
        if not box:
            box.append(f(*args))
        return 0

    sort(make_comparator(compare))
    return box[0]


def through_instrumented_ctypes_qsort(f, *args):
    values = (ctypes.c_int * 2)(1, 2)
    return _sort_calling(
        lambda compare: _LIBC.qsort(values, 2, ctypes.sizeof(ctypes.c_int), compare), _COMPARE, f, args
    )


try:
    import cffi

    _FFI = cffi.FFI()
    _FFI.cdef("void qsort(void *, size_t, size_t, int (*)(const void *, const void *));")
    _CFFI_LIBC = fasthost.cffi.instrument(_FFI.dlopen(None))
except ImportError:  # the test extra has cffi; without it, this way is left out
    _CFFI_LIBC = None


def through_instrumented_cffi_qsort(f, *args):
    values = _FFI.new("int[2]", [1, 2])
    return _sort_calling(
        lambda compare: _CFFI_LIBC.qsort(values, 2, _FFI.sizeof("int"), compare),
        lambda compare: fasthost.cffi.callback(_FFI, "int(const void *, const void *)", compare),
        f,
        args,
    )


def through_a_recursion(levels):
    """A way that calls the protocol `levels` key functions of sorted()
    deep: two captured frames a level, so that the captures' side fills
    max_depth and the protocol's calls come from past it."""

    def way(f, *args):
        box = []

        def level(n):
            if n == 0:
                box.append(f(*args))
            else:
                sorted([0], key=lambda _: level(n - 1))
            return 0

        level(levels)
        return box[0]

    way.__name__ = f"through_a_recursion_{levels}_deep"
    return way


WAYS = [direct, through_a_builtin, through_a_partial, through_a_key_function, through_nested_builtins]
WAYS += [through_instrumented_ctypes_qsort] + ([through_instrumented_cffi_qsort] if _CFFI_LIBC is not None else [])
DEEP_WAYS = [*WAYS, through_a_recursion(2), through_a_recursion(5)]


# ---- the model: the protocol alone --------------------------------------


class Protocol:
    """What the core does with protocol calls and nothing else: a stack of
    U and M frames on the manual clock, at most `max_depth` of them; an
    open past that, or on top of such an unrecorded open, is refused and
    remembered (X) so that its close pops it. A new session sets every
    entry aside (A: a frame, whose close is HOST_E_ABANDONED; Y: an
    unrecorded open), taking no room."""

    def __init__(self, max_depth=256):
        self.now = 0
        self.max_depth = max_depth
        self.stack: list[tuple[str, int, int]] = []
        self.targets: dict[int, list[int]] = {}
        self.refused = 0
        self.aside_closed = 0

    def call(self, name, *args):
        if name in ("leave", "reverse_enter"):
            recorded = sum(kind in "UM" for kind, _, _ in self.stack)
            if recorded >= self.max_depth or (self.stack and self.stack[-1][0] == "X"):
                self.stack.append(("X", 0, self.now))
                self.refused += 1
                return HResult.E_OUTOFMEMORY
            self.stack.append(("U", args[0], self.now) if name == "leave" else ("M", 0, self.now))
            return HResult.S_OK
        kind = "U" if name == "enter" else "M"
        if self.stack and self.stack[-1][0] in "XYA":
            entry = self.stack.pop()[0]
            self.aside_closed += entry != "X"
            return HResult.HOST_E_ABANDONED if entry == "A" else HResult.HOST_E_CLRNOTAVAILABLE
        if not self.stack or self.stack[-1][0] != kind:
            return HResult.HOST_E_NOT_OWNER
        _, target, start = self.stack.pop()
        if kind == "U":
            row = self.targets.setdefault(target, [0, 0])
            row[0] += 1
            row[1] += self.now - start
        return HResult.S_OK

    def new_session(self, max_depth):
        """start() or reset(): what is open is set aside, targets start anew."""
        self.stack = [("Y" if kind in "XY" else "A", 0, 0) for kind, _, _ in self.stack]
        self.targets = {}
        self.max_depth = max_depth

    def drain(self):
        """The closes that empty the stack, newest first."""
        return ["reverse_leave" if kind == "M" else "enter" for kind, _, _ in reversed(self.stack)]


def random_steps(rng, n, targets, ways=WAYS):
    steps = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.3:
            steps.append(("advance", rng.randrange(1, 1000)))
        elif roll < 0.55:
            steps.append(("leave", rng.choice(targets)))
        elif roll < 0.8:
            steps.append(("enter",))
        elif roll < 0.9:
            steps.append(("reverse_enter",))
        else:
            steps.append(("reverse_leave",))
    return [(step, rng.choice(ways)) for step in steps]


def new_session(max_depth, current):
    """A new session on the manual clock: a reset() when `max_depth` is the
    `current` one, else a restart with it (the frame array made anew)."""
    if max_depth == current:
        fasthost.reset()
    else:
        fasthost.stop()
        fasthost.start(clock="manual", max_depth=max_depth)
    return 0


def run_steps(steps, model):
    """Runs `steps` for real and in `model`; returns the (step, real, model)
    results that differ."""
    differ = []
    for (name, *args), way in steps:
        if name == "advance":
            way(_testing.advance_manual_time, args[0])
            model.now += args[0]
            continue
        if name == "session":
            way(new_session, args[0], model.max_depth)
            model.new_session(args[0])
            continue
        real, expected = way(PROTOCOL[name], *args), model.call(name, *args)
        if real != expected:
            differ.append((name, way.__name__, real, expected))
    return differ


def run_to_the_end(steps, model, rng, ways=WAYS):
    """run_steps(steps), then the closes that empty the model's stack, each
    made one of `ways`; returns what differs."""
    differ = run_steps(steps, model)
    for name in model.drain():
        differ += run_steps([((name,), rng.choice(ways))], model)
    return differ


def run_against_the_model(steps, model, targets, rng, capture, ways=WAYS):
    """run_to_the_end under `capture` (None: none), asserting that every
    result and each target's calls and total time are the model's.
    Returns the snapshot."""
    with capture() if capture is not None else contextlib.nullcontext():
        differ = run_to_the_end(steps, model, rng, ways)
    assert differ == []
    snap = fasthost.snapshot()
    for target in targets:
        assert target_row(snap, target) == tuple(model.targets.get(target, (0, 0))), hex(target)
    return snap


# ---- the four straddles, one at a time ------------------------------------


@CAPTURES
def test_leave_inside_a_captured_call_and_enter_outside_time_the_protocols_target(manual, capture):
    with capture():
        for _ in range(3):
            assert through_a_builtin(fasthost.leave_runtime, 0x77) == HResult.S_OK
            _testing.advance_manual_time(100)
            assert fasthost.enter_runtime() == HResult.S_OK
    snap = fasthost.snapshot()
    assert target_row(snap, 0x77) == (3, 300)
    assert abandoned(snap) == 3  # sorted's frames, which the three frames outlived
    assert fasthost.depth() == 0


@CAPTURES
def test_leave_outside_and_enter_inside_a_captured_call_time_the_protocols_target(manual, capture):
    with capture():
        for _ in range(3):
            assert fasthost.leave_runtime(0x78) == HResult.S_OK
            _testing.advance_manual_time(100)
            assert through_a_builtin(fasthost.enter_runtime) == HResult.S_OK
        # Inside a captured call with nothing of the protocol's open: refused
        # as it is without a capture, and the captured frame is left alone.
        assert through_a_builtin(fasthost.enter_runtime) == HResult.HOST_E_NOT_OWNER
    snap = fasthost.snapshot()
    assert target_row(snap, 0x78) == (3, 300)
    # Each enter abandons sorted's frame and the M frame of through_a_builtin
    # (a Python function called while 0x78's frame is open: a callback).
    assert abandoned(snap) == 6
    assert fasthost.depth() == 0


def _begin(target):
    return fasthost.leave_runtime(target)


def _end():
    return fasthost.enter_runtime()


@CAPTURES
def test_protocol_calls_wrapped_in_python_helpers_pair_under_a_capture(manual, capture):
    # _end() starts while 0x7C's frame is open, so the capture runs it as a
    # callback (an M frame); its enter_runtime still closes 0x7C, and the
    # callback's frame, which would outlive it, is abandoned.
    with capture():
        for _ in range(4):
            assert _begin(0x7C) == HResult.S_OK
            _testing.advance_manual_time(25)
            assert _end() == HResult.S_OK
    snap = fasthost.snapshot()
    assert target_row(snap, 0x7C) == (4, 100)
    assert abandoned(snap) == 4
    assert fasthost.depth() == 0


@CAPTURES
def test_reverse_enter_inside_a_captured_callback_and_reverse_leave_outside_pair(manual, capture):
    with capture():
        assert fasthost.leave_runtime(0x79) == HResult.S_OK
        assert through_a_key_function(fasthost.reverse_enter_runtime) == HResult.S_OK
        _testing.advance_manual_time(50)
        assert fasthost.reverse_leave_runtime() == HResult.S_OK
        assert fasthost.enter_runtime() == HResult.S_OK
    snap = fasthost.snapshot()
    assert target_row(snap, 0x79) == (1, 50)
    assert fasthost.depth() == 0


@CAPTURES
def test_reverse_enter_outside_and_reverse_leave_inside_a_captured_call_pair(manual, capture):
    with capture():
        assert fasthost.leave_runtime(0x7A) == HResult.S_OK
        assert fasthost.reverse_enter_runtime() == HResult.S_OK
        _testing.advance_manual_time(50)
        assert through_nested_builtins(fasthost.reverse_leave_runtime) == HResult.S_OK
        assert through_a_key_function(fasthost.reverse_leave_runtime) == HResult.HOST_E_NOT_OWNER
        assert through_a_builtin(fasthost.enter_runtime) == HResult.S_OK
    snap = fasthost.snapshot()
    assert target_row(snap, 0x7A) == (1, 50)
    assert fasthost.depth() == 0


@CAPTURES
def test_a_protocol_pair_straddling_libc_qsort_and_its_ctypes_comparator_keeps_its_time(manual, capture):
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    opened = []

    def compare(a, b):
        if not opened:  # LeaveRuntime in the first comparison, EnterRuntime after qsort
            opened.append(fasthost.leave_runtime(0x7B))
        return a[0] - b[0]

    values = (ctypes.c_int * 8)(5, 3, 7, 1, 8, 2, 6, 4)
    with capture():
        comparator = compare_type(compare)
        libc.qsort(values, len(values), ctypes.sizeof(ctypes.c_int), comparator)
        _testing.advance_manual_time(70)
        assert fasthost.enter_runtime() == HResult.S_OK
    assert opened == [HResult.S_OK]
    assert list(values) == [1, 2, 3, 4, 5, 6, 7, 8]
    snap = fasthost.snapshot()
    assert target_row(snap, 0x7B) == (1, 70)
    assert fasthost.depth() == 0


# ---- every interleaving the random sequences reach -----------------------


@CAPTURES
@pytest.mark.parametrize("seed", range(12))
def test_a_capture_changes_no_protocol_result_nor_target_over_random_straddles(manual, capture, seed):
    rng = random.Random(seed)
    targets = [0x7100 + i for i in range(4)]
    model = Protocol()
    snap = run_against_the_model(random_steps(rng, 400, targets), model, targets, rng, capture)
    # Self time still partitions the recorded time: no total past wall time.
    recorded = int(snap.targets["exclusive_ns"].sum()) + int(snap.threads["callback_exclusive_ns"].sum())
    assert recorded <= model.now
    assert fasthost.depth() == 0


@pytest.mark.parametrize(
    "capture", [None, fasthost.capture_builtins, fasthost.capture_native], ids=["alone", "builtins", "native"]
)
@pytest.mark.parametrize("max_depth", [1, 2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_a_capture_changes_no_protocol_result_at_a_small_max_depth(capture, max_depth, seed):
    # The protocol's opens are refused past max_depth frames, and the
    # captures' (sorted's, the key function's, nested, recursions five
    # levels deep) often too. Each side has max_depth of its own: the
    # protocol's refusals must fall exactly where the model of the protocol
    # alone puts them, from inside captured frames past max_depth too.
    rng = random.Random(1000 * max_depth + seed)
    targets = [0x7300 + i for i in range(3)]
    model = Protocol(max_depth=max_depth)
    steps = random_steps(rng, 300, targets, DEEP_WAYS)
    fasthost.start(clock="manual", max_depth=max_depth)
    try:
        run_against_the_model(steps, model, targets, rng, capture, DEEP_WAYS)
        assert model.refused > 0  # the sequence did reach max_depth
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()


@CAPTURES
@pytest.mark.parametrize("seed", range(4))
def test_a_capture_changes_no_protocol_result_across_new_sessions_of_another_max_depth(capture, seed):
    # reset() and restarts with another max_depth (1 to 5), made from
    # inside captured calls too, while frames of both sides are open: the
    # protocol's entries are set aside, the captures' dropped, and the
    # protocol's results stay those of the protocol alone.
    rng = random.Random(2000 + seed)
    targets = [0x7400 + i for i in range(3)]
    model = Protocol(max_depth=2)
    steps = random_steps(rng, 300, targets, DEEP_WAYS)
    for i in rng.sample(range(len(steps)), 15):
        steps[i] = (("session", rng.choice([1, 2, 3, 5])), steps[i][1])
    fasthost.start(clock="manual", max_depth=2)
    try:
        run_against_the_model(steps, model, targets, rng, capture, DEEP_WAYS)
        assert model.aside_closed > 0  # the sequence closed set-aside entries
        assert model.refused > 0  # and reached max_depth
        assert fasthost.depth() == 0
    finally:
        fasthost.stop()


def test_the_random_straddles_reach_every_straddle(manual):
    # The sequences above must meet each case this file is about, or they
    # prove nothing: count them in the model.
    seen = set()
    for seed in range(12):
        rng = random.Random(seed)
        stack = []
        for (name, *_), way in random_steps(rng, 400, [1]):
            inside = way is not direct
            if name in ("leave", "reverse_enter"):
                stack.append(inside)
            elif name in ("enter", "reverse_leave") and stack:
                seen.add((name, stack.pop(), inside))
    assert seen >= {(n, a, b) for n in ("enter", "reverse_leave") for a in (False, True) for b in (False, True)}


# ---- threads ---------------------------------------------------------------


def _check_on_this_thread(seed, failures, max_depth):
    before = fasthost.depth()  # a ctypes callback's own M frame, on 3.9-3.11
    rng = random.Random(seed)
    model = Protocol(max_depth=max_depth)
    steps = [step for step in random_steps(rng, 300, [0x7200 + seed], DEEP_WAYS) if step[0][0] != "advance"]
    differ = run_to_the_end(steps, model, rng, DEEP_WAYS)
    if differ or fasthost.depth() != before:
        failures.append((seed, differ[:3], before, fasthost.depth()))


# max_depth 2: each thread's protocol opens are refused past two frames,
# its captures' often too (a ctypes callback's own frame counts there).
THREAD_MAX_DEPTHS = pytest.mark.parametrize("max_depth", [256, 2])


@THREAD_MAX_DEPTHS
@CAPTURES
def test_python_threads_straddling_captured_calls_get_the_protocols_results(capture, max_depth):
    fasthost.start(clock="monotonic", max_depth=max_depth)
    failures: list = []
    try:
        with capture():
            seeds = iter(range(4))  # one each: next() holds the GIL
            run_threads(lambda: _check_on_this_thread(next(seeds), failures, max_depth), 4)
    finally:
        fasthost.stop()
    assert failures == []


@pytest.mark.filterwarnings("ignore::fasthost.capture.ctypes.NotInstrumentedWarning")  # libcallers, 3.9-3.11
@THREAD_MAX_DEPTHS
@CAPTURES
def test_native_pthreads_straddling_captured_calls_get_the_protocols_results(callers, capture, max_depth):
    fasthost.start(clock="monotonic", max_depth=max_depth)
    failures: list = []
    try:
        with capture():
            callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda i: _check_on_this_thread(i, failures, max_depth))
            assert callers.call_from_threads(callback, 3, 4) == 0
    finally:
        fasthost.stop()
    assert failures == []


@CAPTURES
def test_a_protocol_close_abandoning_a_captured_call_counts_no_time_recorded_inside_it_twice(manual, capture):
    # sorted's first key call records 100 ns (the captured builtin that
    # advances the clock); the second closes 0x7C's frame, abandoning
    # sorted's: those 100 ns are 0x7C's child time, not its self time too.
    closed = []

    def key(x):
        if x == 0:
            _testing.advance_manual_time(100)
        else:
            closed.append(fasthost.enter_runtime())
        return x

    assert fasthost.leave_runtime(0x7C) == HResult.S_OK
    with capture():
        sorted([0, 1], key=key)
    assert closed == [HResult.S_OK]
    snap = fasthost.snapshot()
    assert target_row(snap, 0x7C) == (1, 100)
    recorded = int(snap.targets["exclusive_ns"].sum()) + int(snap.threads["callback_exclusive_ns"].sum())
    assert recorded <= 100


@CAPTURES
def test_a_captured_call_abandoned_under_a_protocol_frame_it_left_open_counts_no_time_twice(manual, capture):
    # Inside 0x7E's frame, sorted's first key call records 100 ns and the
    # second opens 0x7F's frame and returns with it open: sorted's frame is
    # abandoned in place, and its 100 ns are 0x7E's child time.
    def key(x):
        if x == 0:
            _testing.advance_manual_time(100)
        else:
            fasthost.leave_runtime(0x7F)
        return x

    assert fasthost.leave_runtime(0x7E) == HResult.S_OK
    with capture():
        sorted([0, 1], key=key)
    assert [fasthost.enter_runtime(), fasthost.enter_runtime()] == [HResult.S_OK, HResult.S_OK]
    snap = fasthost.snapshot()
    assert target_row(snap, 0x7E) == (1, 100)
    recorded = int(snap.targets["exclusive_ns"].sum()) + int(snap.threads["callback_exclusive_ns"].sum())
    assert recorded <= 100
    assert fasthost.depth() == 0
