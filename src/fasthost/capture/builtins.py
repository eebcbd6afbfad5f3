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

import os
import threading
from typing import Any

import fasthost
from fasthost import _core

__all__ = ["capture_builtins"]

# Reentrant: a signal handler that stops the captures (a followed
# multiprocessing child that SIGTERM ends writes its data) may interrupt
# its own thread while it holds the lock in start() or stop().
_lock = threading.RLock()
_active: _Capture | None = None


def _new_lock_after_fork() -> None:
    """A fork made while another thread held the lock leaves it held for
    ever in the child, where that thread does not exist: the child (which
    may record, followed by ``fasthost run``) gets a fresh one."""
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


class _Capture:
    """What capture_builtins and capture_native share: one capture at a
    time, the session they start when none runs, and the order that keeps
    fasthost's own calls out of the recording (install last, remove first).
    Subclasses say what to install and remove."""

    #: The legacy profile hook (Python < 3.12) rather than sys.monitoring.
    _legacy = not _core.MONITORING

    def __init__(self, *, callsites: bool = True) -> None:
        if not isinstance(callsites, bool):
            raise TypeError(f"callsites must be True or False, not {type(callsites).__name__}")
        self.callsites = callsites
        self._owns_session = False
        self._threading_hook: Any = None
        self._started = False
        self._installed = False

    def _install(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        """Starts capturing in every thread. Returns ``self``. Raises
        ``RuntimeError`` if another capture is on. A ``stop()`` made from
        another thread while this runs leaves the capture off."""
        global _active
        with _lock:
            if _active is not None:
                raise RuntimeError(f"{type(_active).__name__} is already capturing (stop() that capture first)")
            _active = self
            if not fasthost.running():
                fasthost.start()
                self._owns_session = True
            if self._legacy:
                self._threading_hook = _threading_profile_hook()
                threading.setprofile(_core._builtins_hook_thread_start)
            self._started = True
        # fasthost's lazily loaded names, loaded now: their first lookup
        # under the capture would be recorded as the program's calls.
        from fasthost.export import report  # noqa: F401

        for name in fasthost.__all__:
            getattr(fasthost, name)

        # Installed under the lock, so that a stop() from another thread
        # either comes first (and nothing is installed) or finds it
        # installed and removes it; paused, so that fasthost's own calls
        # (the lock's release) are never targets.
        failed = False
        outer = _core._pause()
        try:
            with _lock:
                if _active is self and self._started:
                    try:
                        _core._sites_enable(self.callsites)
                        self._installed = True  # what a failed install did is removed by stop() too
                        self._install()
                    except BaseException:
                        failed = True
                        raise
        finally:
            _core._resume(outer)
            if failed:
                self.stop()
        return self

    def stop(self) -> None:
        """Stops capturing: every thread gets back the profile hook it had
        before (on Python 3.12+ the sys.monitoring tool id is given back),
        and the session stops if ``start()`` started it. A thread inside a
        call keeps fasthost's hook until that call returns and its frame is
        closed. Does nothing if not started. Any thread may stop a capture."""
        global _active
        if not self._started:
            return
        outer = _core._pause()  # removed first: fasthost's own calls are never targets
        try:
            with _lock:
                if not self._started:
                    return
                if self._installed:
                    self._installed = False
                    self._remove()
                _core._sites_enable(False)
                if self._legacy and _threading_profile_hook() is _core._builtins_hook_thread_start:
                    # Not if the code under capture set a hook of its own meanwhile.
                    threading.setprofile(self._threading_hook)
                self._started = False
                _active = None
                if self._owns_session:
                    fasthost.stop()
                    self._owns_session = False
        finally:
            _core._resume(outer)

    @property
    def active(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._started

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class capture_builtins(_Capture):  # lower case: used like a function, with fasthost.capture_builtins(): ...
    """Records every call of a builtin C function (``math.cos``,
    ``sorted``, ``list.append``) made from Python, in every thread, as a U
    frame, and every Python function such a call runs (a key function, a
    sqlite3 function, a generator it resumes) as a callback (M frame): a
    context manager, or ``start()``/``stop()``.

    If fasthost is not recording, ``start()`` starts a session (defaults)
    and ``stop()`` stops it; otherwise it records into the running one.
    On Python 3.9-3.11 it is a C profile hook: another profiler's hook
    (cProfile, yappi) is set aside meanwhile and given back to each thread
    when the capture stops. On 3.12+ it uses sys.monitoring with a tool id
    of its own, so cProfile keeps running alongside. One capture at a time:
    starting a second raises ``RuntimeError``.

    Calls nest to any depth (past ``max_depth`` they are refused and still
    pair), and fasthost's own functions are never targets. With
    ``callsites`` (the default) each call's Python code location is kept
    too: :attr:`fasthost.Snapshot.callsites`.
    """

    def _install(self) -> None:
        if self._legacy:
            _core._builtins_hook_install(self._threading_hook)
        else:
            _core._monitor_install(False)

    def _remove(self) -> None:
        if self._legacy:
            _core._builtins_hook_remove()
        else:
            _core._monitor_remove()


def _threading_profile_hook() -> Any:
    getprofile = getattr(threading, "getprofile", None)  # Python 3.10+
    return getprofile() if getprofile is not None else getattr(threading, "_profile_hook", None)
