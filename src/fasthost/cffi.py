"""Capture for cffi's ABI mode: functions of an ``ffi.dlopen()`` library as
unmanaged (U) frames.

``instrument(lib)`` puts an :class:`fasthost._core.UnmanagedCall` (a C-level
callable: leave(address), call, enter) in front of each function of the
library, those already fetched and those fetched later. The original cdata
stays reachable as ``lib.func.function``, e.g. to pass the function itself
as a function-pointer argument, which the wrapper cannot be. (API-mode
modules are compiled extensions: their functions are builtins, recorded by
``fasthost.capture_builtins()``.)
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from fasthost._core import UnmanagedCall

__all__ = ["disable", "enable", "enabled", "instrument", "is_instrumented", "uninstrument"]

T = TypeVar("T")
_ORIGINAL_GETATTR = "_fasthost_original_getattr_"


def _backend() -> Any:
    try:
        import _cffi_backend
    except ImportError:
        raise ImportError("fasthost.cffi needs cffi: pip install cffi") from None
    return _cffi_backend


def _check_library(lib: Any) -> type:
    """The per-library class ``ffi.dlopen()`` made for ``lib``."""
    cls = type(lib)
    if not cls.__name__.startswith("FFILibrary") or not hasattr(cls, "__getattr__"):
        raise TypeError(f"expected a library from cffi's ffi.dlopen(), not {cls.__name__}")
    return cls


def _wrap(backend: Any, value: Any) -> Any:
    """An UnmanagedCall around a function cdata; anything else unchanged."""
    if isinstance(value, backend._CDataBase) and backend.typeof(value).kind == "function":
        return UnmanagedCall(value, int(backend.cast(backend.new_primitive_type("uintptr_t"), value)))
    return value


def instrument(lib: T) -> T:
    """Brackets every function of ``lib`` (from ``ffi.dlopen()``) with
    leave/enter, the C function's address as target. Returns ``lib``;
    instrumenting twice does nothing. Raises ``TypeError`` for anything
    else and ``ImportError`` without cffi."""
    backend = _backend()
    cls = _check_library(lib)
    if _ORIGINAL_GETATTR in vars(cls):
        return lib
    original = getattr(cls, "__getattr__")  # noqa: B009 -- cffi's class defines it

    @functools.wraps(original)
    def __getattr__(self: Any, name: str) -> Any:
        value = _wrap(backend, original(self, name))
        if self.__dict__.get(name) is not None:
            self.__dict__[name] = value  # cffi caches what it loaded there
        return value

    setattr(cls, _ORIGINAL_GETATTR, original)
    setattr(cls, "__getattr__", __getattr__)  # noqa: B010
    for name, value in list(vars(lib).items()):
        vars(lib)[name] = _wrap(backend, value)
    return lib


def uninstrument(lib: T) -> T:
    """Undoes :func:`instrument`. Returns ``lib``."""
    cls = _check_library(lib)
    original = vars(cls).get(_ORIGINAL_GETATTR)
    if original is None:
        return lib
    setattr(cls, "__getattr__", original)  # noqa: B010
    delattr(cls, _ORIGINAL_GETATTR)
    for name, value in list(vars(lib).items()):
        if isinstance(value, UnmanagedCall):
            vars(lib)[name] = value.function
    return lib


def is_instrumented(lib: Any) -> bool:
    """True for a library :func:`instrument` has instrumented."""
    return _ORIGINAL_GETATTR in vars(type(lib))


# ---- the global opt-in -----------------------------------------------------------

_original_dlopen: Any = None


def enable() -> None:
    """Instruments every library opened with ``FFI.dlopen()`` from now on.
    Calling it twice does nothing. Raises ``ImportError`` without cffi."""
    global _original_dlopen
    _backend()
    import cffi

    if _original_dlopen is not None:
        return
    original = _original_dlopen = cffi.FFI.dlopen

    @functools.wraps(original)
    def dlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        return instrument(original(self, *args, **kwargs))

    cffi.FFI.dlopen = dlopen


def disable() -> None:
    """Stops instrumenting libraries opened from now on."""
    global _original_dlopen
    if _original_dlopen is None:
        return
    import cffi

    cffi.FFI.dlopen = _original_dlopen
    _original_dlopen = None


def enabled() -> bool:
    """True between :func:`enable` and :func:`disable`."""
    return _original_dlopen is not None
