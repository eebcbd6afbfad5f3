"""Capture for cffi's ABI mode: functions of an ``ffi.dlopen()`` library as
unmanaged (U) frames, ``ffi.callback()`` functions as managed (M) frames.

``instrument(lib)`` puts an :class:`fasthost._core.UnmanagedCall` (a C-level
callable: leave(address), call, enter) in front of each function of the
library, those already fetched and those fetched later. The original cdata
stays reachable as ``lib.func.function``, e.g. to pass the function itself
as a function-pointer argument, which the wrapper cannot be. (API-mode
modules are compiled extensions: their functions are builtins, recorded by
``fasthost.capture_builtins()``.)

``callback(ffi, cdecl, python_callable)`` is ``ffi.callback(cdecl,
python_callable)`` with the Python function inside a
:class:`fasthost._core.ManagedCall` (reverse enter, call, reverse leave),
so each call from native code is an M frame; without ``python_callable``
it is a decorator, like ``ffi.callback``. :func:`enable` makes
``FFI.callback`` itself do that, in both its direct and its decorator
form (``@ffi.callback("int(int)")``), for every ``cffi.FFI``.

Not covered: callbacks made before :func:`enable`, or through a reference
to ``ffi.callback`` bound before it; the ``ffi`` of a compiled
(out-of-line) module, a ``_cffi_backend.FFI`` whose methods cannot be
replaced (pass it to :func:`callback` instead); and ``@ffi.def_extern()``
functions of API mode. A callback's ``onerror`` handler runs after its M
frame has closed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from fasthost._core import ManagedCall, UnmanagedCall

__all__ = ["callback", "disable", "enable", "enabled", "instrument", "is_instrumented", "uninstrument"]

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


# ---- callbacks ----------------------------------------------------------------------


def _managed(function: Any) -> Any:
    """``function`` inside a ManagedCall. A ManagedCall is left as it is
    (the helper under :func:`enable` would otherwise open two frames), and
    so is anything not callable, for cffi to refuse in its own words."""
    if callable(function) and not isinstance(function, ManagedCall):
        return ManagedCall(function)
    return function


def _make_callback(
    make: Callable[..., Any], ffi: Any, cdecl: Any, python_callable: Any, error: Any, onerror: Any
) -> Any:
    """``make(ffi, cdecl, ...)`` (an ``FFI.callback``) with the Python
    function managed, in the direct or the decorator form."""
    if python_callable is None:
        # cffi's own decorator: it parses `cdecl` now, so a bad one fails
        # where it is written, as without fasthost.
        decorate = make(ffi, cdecl, None, error, onerror)

        def decorator(function: Any) -> Any:
            return decorate(_managed(function))

        return decorator
    return make(ffi, cdecl, _managed(python_callable), error, onerror)


def callback(ffi: Any, cdecl: Any, python_callable: Any = None, error: Any = None, onerror: Any = None) -> Any:
    """``ffi.callback(cdecl, python_callable, error, onerror)`` whose Python
    function runs inside an M frame (reverse enter/leave) whenever native
    code calls it; called from Python through a function of an
    instrumented library, it nests in that function's U frame. Without
    ``python_callable``, a decorator, as ``ffi.callback(cdecl)`` is.

    Returns the callback cdata, which must be kept alive for as long as
    native code may call it, as with ``ffi.callback``. ``ffi`` is a
    ``cffi.FFI`` or the ``ffi`` of a compiled cffi module. Raises
    ``TypeError`` for another ``ffi``, ``ImportError`` without cffi, and
    whatever ``ffi.callback`` raises (a bad ``cdecl``, a ``python_callable``
    that is not callable)."""
    backend = _backend()
    import cffi

    if not isinstance(ffi, (cffi.FFI, backend.FFI)):
        raise TypeError(f"expected a cffi FFI object, not {type(ffi).__name__}")
    # type(ffi).callback: under enable() that is the managing one, which
    # leaves the ManagedCall made here alone.
    return _make_callback(type(ffi).callback, ffi, cdecl, python_callable, error, onerror)


# ---- the global opt-in -----------------------------------------------------------

_original_dlopen: Any = None
_original_callback: Any = None


def enable() -> None:
    """Instruments every library opened with ``FFI.dlopen()`` from now on
    and makes ``FFI.callback()`` (direct and decorator form) return
    callbacks whose Python function runs in an M frame (see
    :func:`callback`). Calling it twice does nothing. Raises
    ``ImportError`` without cffi."""
    global _original_dlopen, _original_callback
    _backend()
    import cffi

    if _original_dlopen is not None:
        return
    original_dlopen = _original_dlopen = cffi.FFI.dlopen
    original_callback = _original_callback = cffi.FFI.callback

    @functools.wraps(original_dlopen)
    def dlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        return instrument(original_dlopen(self, *args, **kwargs))

    @functools.wraps(original_callback)
    def callback(self: Any, cdecl: Any, python_callable: Any = None, error: Any = None, onerror: Any = None) -> Any:
        return _make_callback(original_callback, self, cdecl, python_callable, error, onerror)

    cffi.FFI.dlopen = dlopen
    cffi.FFI.callback = callback


def disable() -> None:
    """Stops instrumenting libraries opened and callbacks made from now on
    (those made meanwhile stay instrumented)."""
    global _original_dlopen, _original_callback
    if _original_dlopen is None:
        return
    import cffi

    cffi.FFI.dlopen = _original_dlopen
    cffi.FFI.callback = _original_callback
    _original_dlopen = _original_callback = None


def enabled() -> bool:
    """True between :func:`enable` and :func:`disable`."""
    return _original_dlopen is not None
