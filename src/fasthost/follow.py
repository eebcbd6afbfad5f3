"""Following child processes: every Python process that ``fasthost run``
starts, directly or not, records with the run's options and writes its own
snapshot into the run's folder, which the run combines when it ends.

How a process comes to record, as coverage.py does it:

- a new interpreter (``subprocess``, multiprocessing's spawn and forkserver
  start methods) finds ``FASTHOST_FOLLOW`` in its environment; the
  ``fasthost-follow.pth`` file that the wheel installs in site-packages
  calls :func:`_from_environment` at start-up, which starts recording;
- a forked child (``os.fork``, the fork start method, the forkserver's
  children) goes on recording: the core starts it on a fresh, empty
  session, and ``os.register_at_fork`` marks it as a process of its own.

Each follower leaves ``<pid>-<token>.started`` in the folder when it begins
and ``<pid>-<token>.npz`` when it ends (at exit; multiprocessing children,
which leave through ``os._exit``, when their ``Process`` returns or is
terminated), so the run can name the children that wrote nothing: killed
by a signal, or gone through ``os._exit``. A follower never writes the
run's output file. multiprocessing's helper processes (the forkserver, the
resource tracker) record nothing themselves; the forkserver's children do.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["ENVIRONMENT", "Follow", "Outcome", "detach", "write"]

ENVIRONMENT = "FASTHOST_FOLLOW"
"""The variable that makes a Python process record: JSON of the run folder,
the captures and ``fasthost.start``'s options."""

STARTED, DATA = ".started", ".npz"

# multiprocessing's helpers, started with `python -c "from multiprocessing.X import main; ..."`.
_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker", "multiprocessing.semaphore_tracker")


class _Process:
    """What this process does for the run: its options (None: not
    following), whether it is the run itself (which combines instead of
    writing), its file name, and whether it wrote it."""

    options: dict[str, Any] | None = None
    is_run = False
    token: str | None = None  # set once this process records for the run
    written = False
    writing = False
    signal_pending: int | None = None  # a SIGTERM that came while writing
    sigterm_in: int | None = None  # the pid that installed _write_and_die
    sigterm_begun: Any = None  # tells this process's SIGTERM watchdog that the handler runs
    forkserver = False  # multiprocessing's forkserver: each fork is a Process
    captures: Any = None
    hooks_installed = False


def _install(options: dict[str, Any], is_run: bool) -> None:
    """Makes this process (and the forks it makes) follow ``options``."""
    _Process.options, _Process.is_run = options, is_run
    _Process.token, _Process.written = None, False
    if not _Process.hooks_installed:  # inherited by forks: once per lineage
        _Process.hooks_installed = True
        os.register_at_fork(after_in_child=_after_fork)
        atexit.register(write)
        _patch_multiprocessing()


def _from_environment() -> None:
    """Start-up hook of ``fasthost-follow.pth``: records this process for
    the run named in ``FASTHOST_FOLLOW``. Never raises: a problem is one
    line on stderr, and the program runs unrecorded."""
    if _Process.options is not None:  # a second site folder holding the .pth
        return
    try:
        from fasthost.capture.modes import Captures

        options = json.loads(os.environ[ENVIRONMENT])
        if not isinstance(options, dict) or not os.path.isdir(options["dir"]):
            return  # the run is over (its folder is gone), or this is not ours
        _install(options, is_run=False)
        command = _command_line()
        if "from multiprocessing.forkserver import" in command:
            # Records nothing itself, but its children are forks of it: the
            # program's modules it preloads must be instrumented already.
            _Process.captures = Captures(options["capture"]).start()
            _Process.forkserver = True
        elif not any(f"from {helper} import" in command for helper in _HELPERS):
            if "from multiprocessing.spawn import" in command:
                _write_on_sigterm()  # from now: a pool may end it before it runs a task
            _begin()
    except Exception as exc:
        print(f"fasthost: pid {os.getpid()} not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)


def _command_line() -> str:
    """This process's command line, as it was started (multiprocessing's
    helpers and spawned children are ``python -c "from multiprocessing.X
    import ..."``): they live as long as the run and make no calls of the
    program's."""
    argv = getattr(sys, "orig_argv", None)  # 3.10+
    if argv is None:
        try:
            with open("/proc/self/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            return ""
    return " ".join(argv)


def _begin() -> None:
    """Starts recording with the run's options and marks this process as
    one that will write a file."""
    import fasthost
    from fasthost.capture.modes import Captures

    options = _Process.options
    assert options is not None
    if not fasthost.running():
        fasthost.start(**options["start"])
        if _Process.captures is None:  # a forkserver's children have its captures
            _Process.captures = Captures(options["capture"]).start()
    _mark_started()


def _mark_started() -> None:
    _Process.token = f"{os.getpid()}-{os.urandom(6).hex()}"
    _Process.written = False
    assert _Process.options is not None
    with open(os.path.join(_Process.options["dir"], _Process.token + STARTED), "wb"):
        pass


def _after_fork() -> None:
    """In a forked child of a follower: a process of its own from here on.
    The core already gave it a fresh session if the parent was recording
    (a helper's children start one)."""
    if _Process.options is None:
        return
    _Process.is_run = False
    # A fork of a process that writes on SIGTERM inherits the handler but
    # not the watchdog thread (fork copies only the forking thread): it
    # needs one of its own, or a native wait would keep it alive for good.
    if _Process.forkserver or _forked_by_multiprocessing() or signal.getsignal(signal.SIGTERM) is _write_and_die:
        _Process.forkserver = False
        _write_on_sigterm()  # from now: a pool may end it before it runs a task
    try:
        _begin()
    except Exception as exc:
        _Process.token = None
        print(f"fasthost: pid {os.getpid()} not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)


def _forked_by_multiprocessing() -> bool:
    """In a forked child: whether the fork start method made it (its
    ``Popen._launch`` is on the stack), so that it is a ``Process``, which
    SIGTERM may end before ``_bootstrap`` installs the writer."""
    popen_fork = sys.modules.get("multiprocessing.popen_fork")
    if popen_fork is None:
        return False
    launch = popen_fork.Popen._launch.__code__
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code is not launch:
        frame = frame.f_back
    return frame is not None


def write() -> None:
    """Stops recording and writes this process's snapshot into the run's
    folder, once (later calls do nothing); nothing in the run itself or in
    a process that is not following. A SIGTERM that comes meanwhile ends
    the process once the file is whole. A failure is one line on stderr:
    the run reports this process as one that wrote no data."""
    if _Process.options is None or _Process.is_run or _Process.token is None or _Process.written:
        return
    _Process.writing = True  # first: a SIGTERM from here on waits for the file
    _Process.written = True
    try:
        if not os.path.isdir(_Process.options["dir"]):
            return  # the run ended first and named this process as still running
        import fasthost

        captures, _Process.captures = _Process.captures, None
        if captures is not None:
            try:
                captures.stop()
            except Exception as exc:  # what was recorded is still worth writing
                print(f"fasthost: pid {os.getpid()} could not stop a capture: {_described(exc)}", file=sys.stderr)
        fasthost.stop()
        path = os.path.join(_Process.options["dir"], _Process.token + DATA)
        fasthost.snapshot().save(path)  # whole or absent: save() renames a complete file into place
    except Exception as exc:
        print(f"fasthost: pid {os.getpid()} could not write its data: {_described(exc)}", file=sys.stderr)
    finally:
        _Process.writing = False
        if _Process.signal_pending is not None:
            _die(_Process.signal_pending)


def detach() -> None:
    """Stops following in this process, which records nothing for the run
    that started it and writes no file for it (``fasthost run`` started by
    a followed program: the inner run records on its own, into its own
    output). Does nothing in a process that is not following."""
    if _Process.options is None or _Process.is_run:
        return
    import fasthost

    if _Process.captures is not None:
        _Process.captures.stop()
        _Process.captures = None
    fasthost.stop()
    if _Process.token is not None:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(_Process.options["dir"], _Process.token + STARTED))
    _Process.options, _Process.token = None, None


def _write_and_die(signum: int, frame: Any) -> None:
    """SIGTERM in a multiprocessing child (``Pool`` ends its workers with
    ``terminate()``): write, then die of the signal as before. Blocking the
    signal while writing would not do: the kernel hands it to another
    thread (numpy's OpenBLAS starts some), and Python runs the handler in
    the main thread all the same."""
    # Nothing here may import: the signal can come in the middle of an
    # import of fasthost itself, and an exception raised here would be
    # taken for that import's (the child then lived on, and terminate()
    # waited for it for good).
    if _Process.sigterm_begun is not None:
        _Process.sigterm_begun()
    if _Process.writing:
        _Process.signal_pending = signum
        return
    try:
        with _imports_set_aside(frame):
            write()
    finally:  # a KeyboardInterrupt meanwhile (Ctrl-C signals the whole group) must not let it run on
        _die(signum)


@contextlib.contextmanager
def _imports_set_aside(frame: Any) -> Iterator[None]:
    """Takes out of ``sys.modules``, for the time of the block, the modules
    whose import the interrupted code (``frame`` and its callers) is in the
    middle of. A signal handler runs between any two bytecodes of the main
    thread, imports included (``ctypes.util`` importing ``shutil`` importing
    ``fnmatch``): writing imports the same modules, and would get them half
    made ("partially initialized module 'fnmatch' has no attribute
    'translate'"); without them it imports whole copies of its own. An
    import is ours when our stack holds its module, its namespace or its
    spec. A module that another thread is importing stays: that import
    expects to find it there when done."""
    on_stack: set[int] = set()
    while frame is not None:
        on_stack.add(id(frame.f_globals))
        on_stack.update(id(value) for value in frame.f_locals.values())
        frame = frame.f_back
    aside = {}
    for name, module in list(sys.modules.items()):
        try:  # past the class's own __getattribute__: a lazy module would load
            namespace = object.__getattribute__(module, "__dict__")
        except AttributeError:
            continue
        spec = namespace.get("__spec__")
        if getattr(spec, "_initializing", False) and on_stack & {id(module), id(namespace), id(spec)}:
            aside[name] = module
    for name in aside:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(aside)  # the interrupted imports go on with their own modules


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _write_on_sigterm() -> None:
    """Writes this process's file when SIGTERM ends it, unless the program
    handles SIGTERM itself."""
    handler = signal.getsignal(signal.SIGTERM)
    # Ours but from another process: inherited by a fork, without the
    # watchdog. Installing it again in the same process would take the
    # watchdog's C handler out of the chain.
    if handler == signal.SIG_DFL or (handler is _write_and_die and _Process.sigterm_in != os.getpid()):
        from fasthost import _core  # before the handler is in place (see _write_and_die)

        _Process.sigterm_in = os.getpid()
        _Process.sigterm_begun = None
        signal.signal(signal.SIGTERM, _write_and_die)
        try:
            # Python runs the handler only when the main thread is back in
            # the interpreter; the watchdog (fh_follow.h) makes sure that a
            # SIGTERM ends the process all the same, as it did before.
            _core._follow_arm_sigterm()
            _Process.sigterm_begun = _core._follow_sigterm_begun
        except OSError as exc:
            print(f"fasthost: pid {os.getpid()}: {_described(exc)}", file=sys.stderr)


def _patch_multiprocessing() -> None:
    """multiprocessing's children leave through ``os._exit``, past atexit:
    they write when ``Process._bootstrap`` (the child's whole life) ends, or
    when terminated, as coverage.py's multiproc.py does."""
    from multiprocessing import process

    original = process.BaseProcess._bootstrap  # type: ignore[attr-defined]
    if getattr(original, "fasthost", False):
        return

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _Process.options is not None:
            _write_on_sigterm()
        try:
            return original(self, *args, **kwargs)
        finally:
            write()

    _bootstrap.fasthost = True  # type: ignore[attr-defined]
    process.BaseProcess._bootstrap = _bootstrap  # type: ignore[attr-defined]


class Outcome:
    """What the children of a run left: their snapshots, and the pids of
    those that wrote none (``silent``; ``running``: those still alive)."""

    def __init__(self, snapshots: list[Any], silent: list[int], running: list[int]):
        self.snapshots, self.silent, self.running = snapshots, silent, running


class Follow:
    """The run's side: ``start()`` makes every Python child record into a
    fresh folder, ``finish()`` stops following and reads what they left."""

    def __init__(self, capture: list[str], start_options: dict[str, Any]):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="fasthost-run-")
        self.options = {"dir": self.dir, "capture": capture, "start": start_options}
        self._saved_environment: str | None = None

    def start(self) -> None:
        """Sets ``FASTHOST_FOLLOW`` and the fork and multiprocessing hooks."""
        self._saved_environment = os.environ.get(ENVIRONMENT)
        os.environ[ENVIRONMENT] = json.dumps(self.options)
        _install(self.options, is_run=True)

    def finish(self) -> Outcome:
        """Lets multiprocessing end its children as it would at exit (daemons
        terminated, the rest joined), stops following, and reads the
        children's files. Removes the folder. Raises ``ValueError`` for a
        child's file that does not load."""
        import shutil

        import fasthost

        multiprocessing_util = sys.modules.get("multiprocessing.util")
        if multiprocessing_util is not None:
            multiprocessing_util._exit_function()  # runs once: a no-op at exit
        _Process.options = None
        if self._saved_environment is None:
            os.environ.pop(ENVIRONMENT, None)
        else:
            os.environ[ENVIRONMENT] = self._saved_environment
        try:
            names = os.listdir(self.dir)
            # A file without its mark: SIGTERM came between the token and the mark.
            tokens = sorted({name[: -len(end)] for end in (STARTED, DATA) for name in names if name.endswith(end)})
            snapshots = [fasthost.load(os.path.join(self.dir, t + DATA)) for t in tokens if t + DATA in names]
            silent = [int(t.split("-")[0]) for t in tokens if t + DATA not in names]
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        return Outcome(snapshots, sorted(silent), [pid for pid in sorted(silent) if _alive(pid)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
