"""How much memory the core holds for its thread states."""

from __future__ import annotations

from typing import Any

import numpy as np

from fasthost import _core

__all__ = ["MEMORY_DTYPE", "memory_usage"]

MEMORY_DTYPE = np.dtype(
    [("tid", np.uint64), ("alive", np.bool_), ("in_session", np.bool_), ("bytes", np.uint64), ("targets", np.uint32)]
)


def memory_usage() -> dict[str, Any]:
    """Bytes of heap the C core holds, now.

    Returns ``{"total_bytes": int, "threads": array}``: one row per thread
    state (``MEMORY_DTYPE``: tid, alive, in_session, bytes, targets),
    including states of threads that ended and are kept until the next
    ``start()``/``reset()``. Each state counts its stack, callback
    histogram, target index, and the per-target records and histogram rows
    it allocated (docs/protocol.md §5: at defaults, at most 64 KiB per thread plus
    4 KiB per active target)."""
    raw = _core._memory()
    threads = np.zeros(len(raw), dtype=MEMORY_DTYPE)
    for i, name in enumerate(MEMORY_DTYPE.names or ()):
        threads[name] = raw[:, i]
    return {"total_bytes": int(threads["bytes"].sum()), "threads": threads}
