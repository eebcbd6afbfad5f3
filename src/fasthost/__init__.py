"""fasthost: count and time the transitions between Python and native code.

The protocol is the .NET CLR's host protocol for P/Invoke transitions:
``leave_runtime(target)`` before an unmanaged call, ``enter_runtime()`` when
it returns, ``reverse_enter_runtime()``/``reverse_leave_runtime()`` around a
callback from native code into Python. Each returns an :class:`HResult`.
All durations are in nanoseconds.
"""

from __future__ import annotations

import os

from fasthost._core import (
    callback,
    depth,
    enter_runtime,
    function_pointers,
    leave_runtime,
    reset,
    reverse_enter_runtime,
    reverse_leave_runtime,
    running,
    start,
    stop,
    unmanaged,
)
from fasthost._version import __version__
from fasthost.builtins import capture_builtins
from fasthost.export import (
    Histogram,
    Snapshot,
    load,
    memory_usage,
    merge,
    register_target,
    snapshot,
    unregister_target,
)
from fasthost.hresult import HResult

__all__ = [
    "HResult",
    "Histogram",
    "Snapshot",
    "__version__",
    "callback",
    "capture_builtins",
    "depth",
    "enter_runtime",
    "function_pointers",
    "get_include",
    "leave_runtime",
    "load",
    "memory_usage",
    "merge",
    "register_target",
    "reset",
    "reverse_enter_runtime",
    "reverse_leave_runtime",
    "running",
    "snapshot",
    "start",
    "stop",
    "unmanaged",
    "unregister_target",
]


def get_include() -> str:
    """The folder holding ``fasthost.h`` (and ``capi.pxd``'s header), for
    ``include_dirs`` when building an extension that uses the C API."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")
