"""Capture for ctypes: foreign calls as unmanaged (U) frames, callbacks as
managed (M) frames, without changing how the code uses ctypes.

An instrumented library's functions are instances of a C-level subclass of
the library's own function-pointer class whose call slot brackets
CFuncPtr's call with ``leave_runtime(address)``/``enter_runtime()``. They
stay genuine ctypes function pointers: ``argtypes``, ``restype``,
``errcheck``, ``ctypes.cast``, passing them as arguments, and
``isinstance(f, ctypes._CFuncPtr)`` behave as before.
"""

from __future__ import annotations

import ctypes as _ctypes
import functools
import gc
import os
import threading
import warnings
from typing import Any, TypeVar

from fasthost import _core

__all__ = [
    "NotInstrumentedWarning", "address_of", "callback", "disable", "enable", "enabled", "instrument", "is_instrumented",
    "uninstrument",
]  # fmt: skip

_CFuncPtr: type = getattr(_ctypes, "_CFuncPtr")  # noqa: B009 -- private, not in the stubs
_lock = threading.RLock()
_subclasses: dict[type, type] = {}  # original function-pointer class -> instrumented subclass
_ORIGINAL = "_fasthost_original_"

T = TypeVar("T")


def _instrumented_class(base: type, *, callbacks: bool) -> type:
    """The instrumented subclass of a function-pointer class (one each).

    With ``callbacks``, instances made from a Python callable run it inside
    an M frame (``ManagedCall``)."""
    with _lock:
        cls = _subclasses.get(base)
        if cls is not None:
            return cls
        # The metaclass wants the prototype in the class's own dict.
        namespace: dict[str, Any] = {
            n: getattr(base, n) for n in ("_flags_", "_restype_", "_argtypes_") if hasattr(base, n)
        }
        namespace.update({_ORIGINAL: base, "__module__": base.__module__, "__qualname__": base.__qualname__})
        if callbacks:
            namespace["__new__"] = _callback_new
        cls = type(base)(base.__name__, (base,), namespace)
        _core._ctypes_instrument_type(cls, _CFuncPtr)
        _subclasses[base] = cls
        return cls


def _callback_new(cls: type, *args: Any) -> Any:
    if len(args) == 1 and callable(args[0]) and not isinstance(args[0], int):
        args = (_core.ManagedCall(args[0]),)
    return getattr(cls, _ORIGINAL).__new__(cls, *args)


def _check_library(lib: Any) -> _ctypes.CDLL:
    """The ctypes library ``lib`` is, or wraps in ``._lib`` (llvmlite's
    ``ffi.lib`` does: its functions call the CDLL's under a lock)."""
    if isinstance(lib, _ctypes.CDLL):
        return lib
    inner = getattr(lib, "_lib", None) if not isinstance(lib, (str, bytes, int)) else None
    if isinstance(inner, _ctypes.CDLL):
        return inner
    raise TypeError(
        "expected a ctypes library (CDLL, PyDLL, cdll.LoadLibrary(...)) or an object that wraps one "
        f"in ._lib (as llvmlite's ffi.lib), not {type(lib).__name__}"
    )


class NotInstrumentedWarning(UserWarning):
    """ctypes libraries were loaded before :func:`enable`: their calls are
    not recorded unless they are passed to :func:`instrument`."""


def _loaded_before() -> list[_ctypes.CDLL]:
    """The ctypes libraries alive now that are not instrumented (ctypes'
    own ``pythonapi`` aside)."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, _ctypes.CDLL) and obj is not _ctypes.pythonapi and not is_instrumented(obj)
    ]


def instrument(lib: T) -> T:
    """Brackets every foreign call of ``lib`` (a ``CDLL``/``PyDLL``) with
    leave/enter, the C function's address as target: functions fetched
    from it from now on, and those it already handed out, by attribute
    (``lib.cos``) or item access (``lib["cos"]``): they change class in
    place, so references held elsewhere are instrumented too. Finding the
    latter takes two passes over the objects the garbage collector tracks
    (some 20 ms per million objects in all).

    ``lib`` may also be an object that wraps its library in ``._lib``
    (llvmlite's ``ffi.lib``); its library is instrumented.

    Returns ``lib``. Instrumenting twice does nothing. Raises ``TypeError``
    for anything else, naming what to pass."""
    library = _check_library(lib)
    base = library._FuncPtr
    if getattr(base, _ORIGINAL, None) is not None:
        return lib
    _swap_function_class(library, base, _instrumented_class(base, callbacks=False))
    return lib


def uninstrument(lib: T) -> T:
    """Undoes :func:`instrument` for ``lib`` and the functions it handed
    out. Returns ``lib``; does nothing for a library that is not
    instrumented."""
    library = _check_library(lib)
    cls = library._FuncPtr
    base = getattr(cls, _ORIGINAL, None)
    if base is None:
        return lib
    _swap_function_class(library, cls, base)
    return lib


def _swap_function_class(library: _ctypes.CDLL, old: type, new: type) -> None:
    """Makes `new` the class of the functions `library` hands out from now
    on (attribute and item access both make them from ``_FuncPtr``) and of
    those it already handed out (in place: references held elsewhere
    change too)."""
    library._FuncPtr = new
    for function in _handed_out(library, old):
        function.__class__ = new


def _handed_out(library: _ctypes.CDLL, cls: type) -> list[Any]:
    """The live functions of class `cls` that `library` handed out.

    Attribute access caches them in the library's ``__dict__``; item access
    caches nothing, so those are found the way they keep the library alive:
    ctypes stores the library in each function's ``_objects`` (a dict
    ``{"0": library}``, or the library itself), so they are among the
    objects referring to the library or to a dict that does."""
    found = {id(f): f for f in vars(library).values() if type(f) is cls}
    referrers = gc.get_referrers(library)
    holders = [r for r in referrers if type(r) is dict]
    if holders:
        referrers += gc.get_referrers(*holders)
    # Only exact instances of the library's own class are kept: the other
    # referrers (module dicts, frames, even objects still being built, which
    # get_referrers may return) are looked at, never changed.
    found.update((id(r), r) for r in referrers if type(r) is cls)
    return list(found.values())


def is_instrumented(obj: Any) -> bool:
    """True for an instrumented library, function or callback type."""
    if isinstance(obj, _ctypes.CDLL):
        obj = obj._FuncPtr
    elif isinstance(obj, _CFuncPtr):
        obj = type(obj)
    return isinstance(obj, type) and getattr(obj, _ORIGINAL, None) is not None


def address_of(function: Any) -> int:
    """The C address a ctypes function pointer calls: the target its calls
    are recorded under. Raises ``TypeError`` for a non-function-pointer."""
    if not isinstance(function, _CFuncPtr):
        raise TypeError(f"expected a ctypes function pointer, not {type(function).__name__}")
    return _core._ctypes_address(function)


def callback(prototype: type) -> type:
    """A callback type like ``prototype`` (a ``CFUNCTYPE(...)`` class) whose
    instances, made from a Python callable, run it inside an M frame
    (reverse enter/leave) whenever native code calls them. Calling such an
    instance from Python is a U frame, like any instrumented function.

    Returns the same class for the same prototype (and ``prototype`` itself
    if it is already instrumented). Raises ``TypeError`` for anything but a
    ctypes function-pointer class."""
    if not (isinstance(prototype, type) and issubclass(prototype, _CFuncPtr)):
        raise TypeError(f"expected a ctypes function type such as CFUNCTYPE(...), not {prototype!r}")
    if getattr(prototype, _ORIGINAL, None) is not None:
        return prototype
    return _instrumented_class(prototype, callbacks=True)


# ---- the global opt-in -----------------------------------------------------------

# What enable() replaces, marked with what it replaced, so that a module run
# again (importlib.reload) while enabled finds the originals, not its own
# replacements (which would then call themselves).
_REPLACES = "_fasthost_replaces_"
_original_init = getattr(_ctypes.CDLL.__init__, _REPLACES, _ctypes.CDLL.__init__)
_original_cfunctype = getattr(_ctypes.CFUNCTYPE, _REPLACES, _ctypes.CFUNCTYPE)


@functools.wraps(_original_init)
def _instrumenting_init(self: _ctypes.CDLL, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    # A library being made has handed out nothing yet: swapping the class it
    # makes functions from is all instrument() would do, without its scan.
    self._FuncPtr = _instrumented_class(self._FuncPtr, callbacks=False)


@functools.wraps(_original_cfunctype)
def _instrumenting_cfunctype(restype: Any, *argtypes: Any, **kwargs: Any) -> type:
    return callback(_original_cfunctype(restype, *argtypes, **kwargs))


setattr(_instrumenting_init, _REPLACES, _original_init)
setattr(_instrumenting_cfunctype, _REPLACES, _original_cfunctype)


def enable() -> None:
    """Instruments every ctypes library loaded from now on (``CDLL``,
    ``PyDLL``, ``cdll.LoadLibrary``, ``cdll.<name>``) and makes
    ``ctypes.CFUNCTYPE`` return callback types (see :func:`callback`).

    Code that bound ``CFUNCTYPE`` by name before (``from ctypes import
    CFUNCTYPE``) keeps the original. Calling it twice does nothing.

    Warns (:class:`NotInstrumentedWarning`) when libraries loaded before
    are alive: they are not instrumented by this."""
    with _lock:
        if enabled():
            return
        _ctypes.CDLL.__init__ = _instrumenting_init  # type: ignore[method-assign]
        _ctypes.CFUNCTYPE = _instrumenting_cfunctype
    before = _loaded_before()
    if before:
        names = ", ".join(sorted({os.path.basename(str(lib._name)) for lib in before}))
        warnings.warn(
            f"fasthost.ctypes.enable(): {len(before)} ctypes librar{'y' if len(before) == 1 else 'ies'} "
            f"loaded before ({names}) will not be recorded; pass them to fasthost.ctypes.instrument(), "
            "or use fasthost.capture_native() (Python 3.12+), which needs no patching",
            NotInstrumentedWarning,
            stacklevel=2,
        )


def disable() -> None:
    """Stops instrumenting libraries loaded from now on and restores
    ``ctypes.CFUNCTYPE``. Libraries instrumented meanwhile stay instrumented
    (use :func:`uninstrument`)."""
    with _lock:
        _ctypes.CDLL.__init__ = _original_init  # type: ignore[method-assign]
        _ctypes.CFUNCTYPE = _original_cfunctype


def enabled() -> bool:
    """True between :func:`enable` and :func:`disable`."""
    return getattr(_ctypes.CDLL.__init__, _REPLACES, None) is _original_init
