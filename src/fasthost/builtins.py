"""Capture for builtin C functions: every call of a ``PyCFunction`` (module
functions such as ``math.cos``, and methods of builtin types such as
``list.append``) made from Python, in every thread, as an unmanaged (U)
frame whose target is the C function's address.

It is a C-level profile hook, installed the way cProfile installs its own
(``PyEval_SetProfile``), never a Python-level callback: the interpreter
calls it on every call and return, and it records the builtin ones. A
thread started while capturing installs it on its first event
(``threading.setprofile``).
"""

from __future__ import annotations

import threading
from typing import Any

import fasthost
from fasthost import _core

__all__ = ["capture_builtins"]

_lock = threading.Lock()
_active: capture_builtins | None = None


class capture_builtins:  # lower case: used like a function, with fasthost.capture_builtins(): ...
    """Records every builtin C function call made from Python while active:
    a context manager, or ``start()``/``stop()``.

    If fasthost is not recording, ``start()`` starts a session (defaults)
    and ``stop()`` stops it; otherwise it records into the running one.
    Another profiler's hook (cProfile, yappi) is set aside meanwhile and
    given back to each thread when the capture stops (a thread inside a
    builtin then keeps fasthost's hook until that builtin returns and its
    frame is closed). One capture at a time: starting a second raises
    ``RuntimeError``.

    Builtin calls nest to any depth (past ``max_depth`` they are refused
    and still pair), and fasthost's own functions are never targets.
    """

    def __init__(self) -> None:
        self._owns_session = False
        self._threading_hook: Any = None
        self._started = False

    def start(self) -> capture_builtins:
        """Installs the hook in every thread. Returns ``self``."""
        global _active
        with _lock:
            if _active is not None:
                raise RuntimeError("builtin calls are already being captured (stop() that capture first)")
            _active = self
            if not fasthost.running():
                fasthost.start()
                self._owns_session = True
            self._threading_hook = _threading_profile_hook()
            threading.setprofile(_core._builtins_hook_thread_start)
        self._started = True
        # Last, outside the lock: fasthost's own calls (the lock's release)
        # are never under the hook, so they are never targets.
        _core._builtins_hook_install()
        return self

    def stop(self) -> None:
        """Removes the hook from every thread, giving back their previous
        hooks (and threading's), and stops the session if ``start()``
        started it. Does nothing if not started."""
        global _active
        if not self._started:
            return
        _core._builtins_hook_remove()  # first, for the same reason
        with _lock:
            if not self._started:
                return
            if _threading_profile_hook() is _core._builtins_hook_thread_start:
                # Not if the code under capture set a hook of its own meanwhile.
                threading.setprofile(self._threading_hook)
            self._started = False
            _active = None
            if self._owns_session:
                fasthost.stop()
                self._owns_session = False

    @property
    def active(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._started

    def __enter__(self) -> capture_builtins:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _threading_profile_hook() -> Any:
    getprofile = getattr(threading, "getprofile", None)  # Python 3.10+
    return getprofile() if getprofile is not None else getattr(threading, "_profile_hook", None)
