"""What users would write instead of fasthost, measured next to it."""

from __future__ import annotations

import threading
from time import perf_counter_ns


class PurePythonRecorder:
    """The pure-Python recorder of the budgets (docs/protocol.md §5): a threading.local stack of
    (target, start) pairs, perf_counter_ns, and a dict histogram keyed by
    (target, power-of-two bucket)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.histogram: dict[tuple[int, int], int] = {}

    def leave_runtime(self, target: int) -> int:
        local = self._local
        try:
            stack = local.stack
        except AttributeError:
            stack = local.stack = []
        stack.append((target, perf_counter_ns()))
        return 0

    def enter_runtime(self) -> int:
        target, start = self._local.stack.pop()
        key = (target, (perf_counter_ns() - start).bit_length())
        self.histogram[key] = self.histogram.get(key, 0) + 1
        return 0
