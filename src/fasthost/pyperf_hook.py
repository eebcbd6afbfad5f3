"""A pyperf hook (``--hook fasthost``, through the ``pyperf.hook`` entry
point): records the transitions a benchmark makes and writes, per
benchmark run, into its metadata:

- ``fasthost_transitions_per_call``: opening calls (leave +
  reverse_enter) per benchmarked call, that is per loop iteration
  (``loops`` x ``inner_loops``), over the values of the run;
- ``fasthost_unmanaged_p50_ns`` / ``fasthost_unmanaged_p99_ns``: quantiles
  of the unmanaged calls' inclusive durations (ns), when there were any;
- ``fasthost_capture``: the capture used.

pyperf calls a hook's ``__enter__``/``__exit__`` around each value's timed
function and ``teardown(metadata)`` once per phase (warmups, then values:
the values' figures are the ones kept). The capture is chosen by the
environment variable ``FASTHOST_PYPERF_CAPTURE`` (``native`` by default,
as ``fasthost run --capture``; pyperf passes the environment to its
workers only for names given with ``--inherit-environ``). Calls made by
pyperf's own code (its timer, its loop) are left out by their call site.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["CAPTURE_VARIABLE", "FasthostHook"]

CAPTURE_VARIABLE = "FASTHOST_PYPERF_CAPTURE"


def _loops_of_current_value() -> int:
    """Benchmarked calls in the value pyperf is about to time: its
    ``WorkerTask``'s loops x inner_loops. pyperf does not pass them to
    hooks, so they are read from the worker's frame up the stack
    (pyperf 2.7-2.11: ``_compute_values`` -> ``ExitStack`` -> here); 1
    when it is not found."""
    from pyperf._worker import WorkerTask

    frame = sys._getframe(1)
    while frame is not None:
        task = frame.f_locals.get("self")
        if isinstance(task, WorkerTask):
            return int(getattr(task, "loops", 1) or 1) * int(getattr(task, "inner_loops", 1) or 1)
        frame = frame.f_back  # type: ignore[assignment]
    return 1


class FasthostHook:
    """The ``fasthost`` pyperf hook (see the module's docstring). Raises
    pyperf's ``HookError`` for a capture name it does not know."""

    def __init__(self) -> None:
        import pyperf._hooks

        import fasthost
        from fasthost.capture.modes import Captures

        spec = os.environ.get(CAPTURE_VARIABLE, "native")
        try:
            self._captures = Captures(spec)
        except ValueError as exc:
            raise pyperf._hooks.HookError(f"{CAPTURE_VARIABLE} {exc}") from None
        self._spec = spec
        self._fasthost = fasthost
        self._owns_session = not fasthost.running()
        if self._owns_session:
            fasthost.start()
        self._before: Any = None
        self._calls = 0
        self._transitions = 0
        self._histogram: Any = None

    def __enter__(self) -> FasthostHook:
        self._calls += _loops_of_current_value()
        self._before = self._fasthost.snapshot()
        self._captures.start()  # last: nothing of the hook's runs under it
        return self

    def __exit__(self, *exc: object) -> None:
        self._captures.stop()  # first, for the same reason
        delta = self._fasthost.snapshot().diff(self._before)
        transitions, histogram = _benchmark_figures(delta)
        self._transitions += transitions
        self._histogram = histogram if self._histogram is None else self._histogram.merge(histogram)

    def teardown(self, metadata: dict[str, Any]) -> None:
        """Writes this phase's figures into pyperf's ``metadata`` and ends
        the recording the hook started."""
        if self._owns_session:
            self._fasthost.stop()
        metadata["fasthost_capture"] = self._spec
        metadata["fasthost_transitions_per_call"] = self._transitions / max(self._calls, 1)
        for key in ("fasthost_unmanaged_p50_ns", "fasthost_unmanaged_p99_ns"):
            metadata.pop(key, None)  # the warmups' figures, when these values had no call
        if self._histogram is not None and self._histogram.total:
            p50, p99 = self._histogram.quantile([0.5, 0.99])
            metadata["fasthost_unmanaged_p50_ns"] = float(p50)
            metadata["fasthost_unmanaged_p99_ns"] = float(p99)


# The ExitStack through which pyperf enters and leaves hooks runs some of
# its own code inside the hook's window.
_EXIT_STACK = frozenset({"enter_context", "_push_cm_exit", "_push_exit_callback", "_create_exit_wrapper", "__exit__"})


def _benchmark_figures(delta: Any) -> tuple[int, Any]:
    """(transitions, inclusive histogram in ns) of ``delta`` without the
    calls pyperf's own code made (its timer and loop, and the ExitStack
    that enters the hooks): by call site where one was recorded; a target
    whose every call came from there is left out of the histogram too."""
    import contextlib

    import numpy as np
    import pyperf

    harness = os.path.dirname(pyperf.__file__) + os.sep
    sites = delta.callsites
    left_out: dict[int, int] = {}
    if len(sites):

        def pyperfs(file: str, function: str) -> bool:
            if file.startswith(harness):
                return True
            return file == contextlib.__file__ and function.rsplit(".", 1)[-1] in _EXIT_STACK

        mine = np.array([pyperfs(str(f), str(g)) for f, g in zip(sites["file"], sites["function"])], dtype=bool)
        for target, n in zip(sites["target"][mine].tolist(), sites["calls"][mine].tolist()):
            left_out[target] = left_out.get(target, 0) + n
    transitions = delta.totals["transitions"] - sum(left_out.values())
    histogram = delta.histogram("inclusive")
    for row in delta.targets:
        target = int(row["target"])
        if not row["overflow"] and left_out.get(target, 0) == int(row["calls"]):
            histogram.counts = histogram.counts - delta.histogram("inclusive", target=target).counts
    return transitions, histogram
