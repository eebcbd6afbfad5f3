"""fasthost: count and time the transitions between Python and native code.

The protocol is the .NET CLR's host protocol for P/Invoke transitions:
``leave_runtime(target)`` before an unmanaged call, ``enter_runtime()`` when
it returns, ``reverse_enter_runtime()``/``reverse_leave_runtime()`` around a
callback from native code into Python. Each returns an :class:`HResult`.
All durations are in nanoseconds.

The names below are loaded on first use (PEP 562): ``import fasthost``
itself is cheap, which matters because the pytest plugin imports this
package in every pytest run of an environment that has fasthost.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from fasthost._version import __version__

if TYPE_CHECKING:
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
    from fasthost.capture.builtins import capture_builtins
    from fasthost.capture.native import capture_native
    from fasthost.export.histogram import Histogram
    from fasthost.export.memory import memory_usage
    from fasthost.export.prometheus import serve
    from fasthost.export.snapshot import Snapshot, load, merge, snapshot
    from fasthost.export.symbols import register_target, unregister_target
    from fasthost.hresult import HResult

_CORE = (
    "callback", "depth", "enter_runtime", "function_pointers", "leave_runtime", "reset", "reverse_enter_runtime",
    "reverse_leave_runtime", "running", "start", "stop", "unmanaged",
)  # fmt: skip
_EXPORT = ("Histogram", "Snapshot", "load", "memory_usage", "merge", "register_target", "snapshot", "unregister_target")
_WHERE = {
    **dict.fromkeys(_CORE, "fasthost._core"),
    **dict.fromkeys(_EXPORT, "fasthost.export"),
    "capture_builtins": "fasthost.capture.builtins",
    "capture_native": "fasthost.capture.native",
    "serve": "fasthost.export.prometheus",
    "HResult": "fasthost.hresult",
}

__all__ = [
    "HResult",
    "Histogram",
    "Snapshot",
    "__version__",
    "callback",
    "capture_builtins",
    "capture_native",
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
    "serve",
    "snapshot",
    "start",
    "stop",
    "unmanaged",
    "unregister_target",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        # A submodule (fasthost.ctypes, fasthost._core for PyCapsule_Import):
        # importing it sets the attribute.
        try:
            return importlib.import_module(f"fasthost.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fasthost.{name}":
                raise
            raise AttributeError(f"module 'fasthost' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def get_include() -> str:
    """The folder holding ``fasthost.h`` (and ``capi.pxd``'s header), for
    ``include_dirs`` when building an extension that uses the C API."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")
