"""Capture for every native call: each call from Python to something that
is not a Python function (builtins, methods of C types, numpy ufuncs,
Cython functions, C types and their instances, ctypes and cffi functions)
as an unmanaged (U) frame, and every Python function run under one as a
callback (M frame).

On Python 3.12+ this is sys.monitoring (PEP 669) with C callbacks, and it
needs no patching: a library loaded before the capture, or by a thread
Python did not create, is seen all the same. On 3.9-3.11 the interpreter
reports only builtin calls, so it is the builtins profile hook together
with the ctypes and cffi adapters (libraries loaded before the capture are
not seen there; see fasthost.ctypes.instrument).
"""

from __future__ import annotations

from fasthost import _core
from fasthost.capture.builtins import _Capture

__all__ = ["capture_native"]


class capture_native(_Capture):  # lower case: used like a function
    """Records every native call made from Python while active, in every
    thread: a context manager, or ``start()``/``stop()``. Starts and stops a
    session like :class:`fasthost.capture_builtins`; one capture at a time
    (``RuntimeError`` otherwise). On 3.12+ ``start()`` raises
    ``RuntimeError`` when no sys.monitoring tool id is free. With
    ``callsites`` (the default) each call's Python code location is kept
    too: :attr:`fasthost.Snapshot.callsites`."""

    def __init__(self, *, callsites: bool = True) -> None:
        super().__init__(callsites=callsites)
        self._enabled_adapters: list[str] = []

    def _install(self) -> None:
        if not self._legacy:
            _core._monitor_install(True)
            return
        from fasthost.capture import cffi, ctypes

        if not ctypes.enabled():
            ctypes.enable()
            self._enabled_adapters.append("ctypes")
        if not cffi.enabled():
            try:
                cffi.enable()
            except ImportError:  # no cffi installed: nothing of it to see
                pass
            else:
                self._enabled_adapters.append("cffi")
        _core._builtins_hook_install(self._threading_hook)  # last: the adapters' own calls are not recorded

    def _remove(self) -> None:
        if not self._legacy:
            _core._monitor_remove()
            return
        _core._builtins_hook_remove()  # first
        from fasthost.capture import cffi, ctypes

        adapters, self._enabled_adapters = self._enabled_adapters, []
        if "cffi" in adapters:
            cffi.disable()
        if "ctypes" in adapters:
            ctypes.disable()
