"""The command line: ``python -m fasthost`` (or ``fasthost``).

    fasthost run [--capture ctypes,cffi,builtins,native|none] [-o OUT.npz] [--html OUT.html] [--serve PORT]
                 [--no-follow] script.py [args ...]
    fasthost run [...] -m module [args ...]
    fasthost report OUT.npz [--top N] [--json | --html OUT.html]
    fasthost plot OUT.npz -o plot.png [--top N]
    fasthost diff A.npz B.npz [--top N] [--plot OUT.png]
    fasthost combine DIR_OR_FILE... -o OUT.npz

Errors (a missing or corrupt file, bad arguments) print one line on stderr
and exit with status 2. Paths are checked before any work starts: an
output file whose folder is missing or that is a directory stops ``run``
before the script runs (and ``plot`` before it reads the snapshot), and an
input that is not a regular file (a FIFO, a directory) is refused before
it is opened. ``run`` exits with the script's own status, after writing
what was recorded up to its end, even when it raised.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
from typing import Any, Callable, NoReturn

import fasthost
from fasthost.capture.modes import Captures
from fasthost.follow import Follow
from fasthost.follow import detach as follow_detach
from fasthost.follow import write as follow_write
from fasthost.runner import Main, prepare_module, prepare_script

__all__ = ["main"]

DEFAULT_OUTPUT = "fasthost.npz"


class UsageError(Exception):
    """Bad input from the command line: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # A subcommand's prog already starts with the program's ("fasthost run").
        raise UsageError(f"{message} (see {self.prog} --help)")


def _program_name() -> str:
    """The command as the user typed it, for usage and help: ``python -m
    fasthost`` (named by the interpreter's file name, as Python 3.14's
    argparse does) when run as a module, else ``fasthost`` (the console
    script, or :func:`main` called from Python)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "fasthost.__main__":
        return f"{os.path.basename(sys.executable) or 'python'} -m fasthost"
    return "fasthost"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_program_name(), description="Count and time Python <-> native transitions.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a script or module and profile its transitions")
    run.add_argument(
        "--capture",
        default="ctypes",
        help="what to record, comma-separated: ctypes (libraries and callbacks loaded by the script), "
        "cffi (ffi.dlopen libraries), builtins (every builtin C function call and the Python "
        "callbacks it makes), native (every call to anything that is not a Python function: "
        "builtins, ufuncs, C types, ctypes and cffi functions; Python 3.12+); 'none' for only "
        "the script's own fasthost calls (default: ctypes)",
    )
    run.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f"snapshot file to write (default: {DEFAULT_OUTPUT})"
    )
    run.add_argument("--html", metavar="OUT.html", help="also write the self-contained HTML report there")
    run.add_argument("--top", type=int, default=20, help="targets in the report (default: 20)")
    run.add_argument("--clock", default="auto", choices=("auto", "tsc", "monotonic"), help="time source")
    run.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="record only this process, not the Python processes it starts (fork, multiprocessing, "
        "subprocess), which by default record with the same options and are combined into the output",
    )
    run.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="serve the live recording to Prometheus on 127.0.0.1:PORT/metrics while the program runs "
        "(0: a free port, printed on stderr; needs fasthost[prometheus])",
    )
    run.add_argument("-m", dest="module", help="run a module as a script, like python -m")
    run.add_argument("script", nargs="?", help="the script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")

    report = commands.add_parser("report", help="print the report of a saved snapshot")
    report.add_argument("file")
    report.add_argument("--top", type=int, default=20, help="targets in the report (default: 20)")
    shape = report.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the JSON summary instead")
    shape.add_argument("--html", metavar="OUT.html", help="write the self-contained HTML report there instead")
    report.add_argument("--progress", action="store_true", help="show progress on stderr (default: on a terminal)")

    plot = commands.add_parser(
        "plot", help="draw a saved snapshot as PNG: percentile curves per target, time per target, histograms"
    )
    plot.add_argument("file")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.add_argument("--top", type=int, default=10, help="targets in the per-target panel (default: 10)")
    plot.add_argument("--progress", action="store_true", help="show progress on stderr (default: on a terminal)")

    combine = commands.add_parser(
        "combine", help="combine snapshots (files, or folders of .npz files) into one, each session once"
    )
    combine.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE")
    combine.add_argument("-o", "--output", required=True, help="the snapshot file to write")
    combine.add_argument("--progress", action="store_true", help="show progress on stderr (default: on a terminal)")

    diff = commands.add_parser("diff", help="compare two saved snapshots target by target")
    diff.add_argument("before")
    diff.add_argument("after")
    diff.add_argument("--top", type=int, default=20, help="targets in the table (default: 20)")
    diff.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw the before/after percentile curves of the targets with the most time as PNG",
    )
    diff.add_argument("--progress", action="store_true", help="show progress on stderr (default: on a terminal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        module_args = _split_module_args(argv)
        args = _parser().parse_args(argv)
        if module_args is not None:
            args.args = module_args
        if getattr(args, "top", 0) < 0:
            raise UsageError("--top must be >= 0")
        command = {"run": _run, "report": _report, "plot": _plot, "diff": _diff, "combine": _combine}[args.command]
        return command(args)
    except UsageError as exc:
        print(f"fasthost: error: {exc}", file=sys.stderr)
        return 2


# ---- run ----------------------------------------------------------------------


_RUN_OPTIONS_WITH_VALUES = frozenset({"-o", "--output", "--html", "--capture", "--clock", "--top", "--serve"})


def _split_module_args(argv: list[str]) -> list[str] | None:
    """For ``run ... -m module args``: everything after the module name is
    the module's (as with ``python -m``), options included, and is cut
    from ``argv``; None when there is no ``-m``."""
    if not argv or argv[0] != "run":
        return None
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "-m" and i + 1 < len(argv):
            rest = argv[i + 2 :]
            del argv[i + 2 :]
            return rest
        if word == "--" or not word.startswith("-"):
            return None  # a script: argparse's REMAINDER keeps its options
        i += 2 if word in _RUN_OPTIONS_WITH_VALUES else 1
    return None


def _run(args: argparse.Namespace) -> int:
    try:
        captures = Captures(args.capture)
    except ValueError as exc:
        raise UsageError(f"--capture {exc}") from None
    if not args.module and not args.script:
        raise UsageError("run needs a script or -m module")
    if args.script and not args.module and not os.path.isfile(args.script):
        raise UsageError(f"no such script: {args.script}")
    follow_detach()  # a run started by a followed program records on its own
    if fasthost.running():
        raise UsageError("fasthost is already recording in this process")
    # Before the script runs: finding out afterwards would lose its run.
    script = (args.script,) if args.script and not args.module else ()
    _check_output(args.output, script, "script")
    if args.html:
        _check_output(args.html, script, "script")
        if _same_file(args.html, args.output):
            raise UsageError(f"--html and -o name the same file: {args.html}")
    try:
        main = prepare_module(args.module, args.args) if args.module else prepare_script(args.script, args.args)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.script}: {exc.strerror or exc}") from None
    except (SyntaxError, ValueError) as exc:
        raise UsageError(f"cannot compile {args.script}: {exc}") from None

    # The paths checked above, fixed now: the program may chdir, and the
    # files must land where they were checked (and where the user looks).
    output = os.path.abspath(args.output)
    html = os.path.abspath(args.html) if args.html else None
    status = 0
    run_pid = os.getpid()
    start_options = {"clock": args.clock}
    follow = Follow(captures.captures, start_options) if args.follow else None
    if follow is not None:
        follow.start()
    server = _serve(args.serve)
    fasthost.start(**start_options)
    try:
        status = _run_captured(main, captures)
    finally:
        if os.getpid() != run_pid:
            # A child forked by the program ended here (it returned or raised
            # SystemExit): its data is its own file's, never the run's output
            # (nor the run's server: its thread is not in the child).
            follow_write()
            return status  # noqa: B012  # the child's own status, whatever ends it
        if server is not None:
            server.stop()
        fasthost.stop()
        snap = fasthost.snapshot()
        if follow is not None:
            snap = _with_children(snap, follow)
        try:
            snap.save(output)
        except OSError as exc:
            print(f"fasthost: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            status = status or 2
        else:
            print(f"fasthost: wrote {args.output}", file=sys.stderr)
        if html:
            failure = _write_html(snap, html, args.top, shown=args.html)
            if failure:
                print(f"fasthost: error: {failure}", file=sys.stderr)
                status = status or 2
        if captures.captures and snap.totals["transitions"] == 0:
            print(_nothing_seen(captures.captures), file=sys.stderr)
        sys.stdout.write("\n" + snap.report(top=args.top))
        sys.stdout.flush()
    return status


def _with_children(snap: fasthost.Snapshot, follow: Follow) -> fasthost.Snapshot:
    """The run's snapshot and its children's, combined; says on stderr how
    many processes contributed and which children wrote nothing."""
    try:
        outcome = follow.finish()
    except ValueError as exc:
        print(f"fasthost: error: a child's data is unreadable, left out: {exc}", file=sys.stderr)
        return snap
    if not outcome.snapshots and not outcome.silent:
        return snap
    from fasthost.export.combine import merge

    parts = merge([snap, *outcome.snapshots])
    if outcome.silent:
        parts["meta"]["children_without_data"] = outcome.silent
    combined = fasthost.Snapshot(**parts)
    if outcome.silent:
        running = f" ({len(outcome.running)} still running)" if outcome.running else ""
        print(
            f"fasthost: {len(outcome.silent)} child process(es) wrote no data{running}: "
            f"pid {', '.join(map(str, outcome.silent))} (killed, os._exit, or not finished)",
            file=sys.stderr,
        )
    print(
        f"fasthost: combined {combined.totals['processes']} processes ({len(outcome.snapshots)} children wrote data)",
        file=sys.stderr,
    )
    return combined


def _serve(port: int | None) -> Any:
    """The Prometheus endpoint ``run --serve PORT`` asks for (None
    without it), started before the program so that a scrape never
    misses its start."""
    if port is None:
        return None
    try:
        server = fasthost.serve(port)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"--serve: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--serve: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    print(f"fasthost: serving Prometheus metrics at {server.url}", file=sys.stderr)
    return server


# Why a capture can record nothing, and what to use instead.
_WHY_NOTHING = {
    "ctypes": "it sees ctypes libraries loaded while it runs (CDLL, cdll.<name>); for other native code "
    "use builtins, or native on Python 3.12+",
    "cffi": "it sees libraries opened with ffi.dlopen() (ABI mode); for compiled cffi modules (API mode) "
    "use builtins or native",
    "builtins": "the program called no builtin function from Python code",
    "native": "the program made no call from Python code to native code",
}


def _nothing_seen(captures: list[str]) -> str:
    """One line saying why ``captures`` recorded nothing."""
    return f"fasthost: --capture {','.join(captures)} recorded nothing: " + "; ".join(
        f"{name}: {_WHY_NOTHING[name]}" for name in captures
    )


def _run_captured(main: Main, captures: Captures) -> int:
    """Runs ``main`` with ``captures`` on; its exit status. Nothing but the
    program runs while they are on: no builtin of the runner's is a target."""
    main.enter()
    try:
        captures.start()
    except ImportError as exc:
        main.exit()
        raise UsageError(str(exc)) from None
    try:
        main.call()
    except BaseException as exc:  # handled once the captures are off
        error: BaseException | None = exc
    else:
        error = None
    finally:
        captures.stop()
        main.exit()
    if error is None:
        return 0
    if isinstance(error, SystemExit):
        return _exit_status(error.code)
    traceback.print_exception(type(error), error, error.__traceback__)
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _exit_status(code: object) -> int:
    """What Python itself exits with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# ---- paths, checked before any work ----------------------------------------------


def _check_output(path: str, inputs: tuple[str, ...] = (), kind: str = "snapshot") -> None:
    """Raises UsageError (one line) for an output file that surely cannot
    be written: its folder is missing or not a folder, it is a directory,
    or it (or, for a new file, its folder) is not writable; or that is one
    of the files ``inputs`` (of ``kind``: the snapshots read, the script
    run), which writing it would destroy.
    Creates nothing; the write itself can still fail (a full disk), and
    says so."""
    for source in inputs:
        if _same_file(path, source):
            raise UsageError(f"cannot write {path}: it is the {kind} {source} (writing it would destroy it)")
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(folder):
        why = "not a directory" if os.path.exists(folder) else "no such directory"
        raise UsageError(f"cannot write {path}: {why}: {folder}")
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(folder, os.W_OK | os.X_OK)
    if not writable:
        raise UsageError(f"cannot write {path}: permission denied")


def _same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one file: the same path
    through symbolic links, or, when both exist, the same inode (a hard
    link, which no path comparison sees)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def _input_size(path: str) -> int:
    """The size in bytes of the snapshot file ``path``. Raises UsageError
    (one line) unless it is a regular file: opening a FIFO would wait for a
    writer for ever, and a directory or device is no snapshot either."""
    try:
        info = os.stat(path)  # does not open it, so a FIFO cannot block here
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"not a regular file: {path}")
    return info.st_size


# ---- reading saved snapshots ------------------------------------------------------


def _progress(args: argparse.Namespace, message: str) -> None:
    if args.progress or sys.stderr.isatty():
        print(f"fasthost: {message}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace, path: str, size: int) -> fasthost.Snapshot:
    """Reads the snapshot ``path`` (``size`` bytes, from _input_size)."""
    _progress(args, f"loading {path} ({size / 1e6:.1f} MB)")
    try:
        snap = fasthost.load(path)
    except ValueError as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    _progress(args, f"loaded {len(snap.threads)} threads, {len(snap.targets)} targets")
    return snap


def _report(args: argparse.Namespace) -> int:
    size = _input_size(args.file)
    if args.html:
        _check_output(args.html, (args.file,))  # before reading what may be a large snapshot
    snap = _load(args, args.file, size)
    _progress(args, "computing percentiles")
    if args.html:
        failure = _write_html(snap, args.html, args.top)
        if failure:
            raise UsageError(failure)
    elif args.json:
        print(json.dumps(snap.to_dict(top=args.top), indent=2))
    else:
        sys.stdout.write(snap.report(top=args.top))
    return 0


def _check_png(path: str, inputs: tuple[str, ...]) -> None:
    """Raises UsageError (one line) for a PNG output that cannot be
    written (see _check_output, ``inputs`` are the snapshots read) or is
    not named .png; and, before any snapshot is read, when matplotlib is
    missing."""
    if not path.lower().endswith(".png"):
        raise UsageError(f"the plot is a PNG: its file name must end in .png, got {path!r}")
    _check_output(path, inputs)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'fasthost[plot]' (or pip install matplotlib)") from None


def _draw(args: argparse.Namespace, path: str, draw: Callable[[], object]) -> None:
    """Runs ``draw``, which writes the PNG ``path``; a failure to write it
    is one line."""
    _progress(args, f"drawing {path}")
    try:
        draw()
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"fasthost: wrote {path}", file=sys.stderr)


def _write_html(snap: fasthost.Snapshot, path: str, top: int, shown: str | None = None) -> str | None:
    """Writes the HTML report of ``snap`` to ``path`` and says so on
    stderr, naming it ``shown`` (default: ``path``); the one-line reason
    when it cannot be written, else None."""
    shown = shown or path
    try:
        size = snap.html(path, top=top)
    except OSError as exc:
        return f"cannot write {shown}: {exc.strerror or exc}"
    print(f"fasthost: wrote {shown} ({size / 1000:.1f} kB)", file=sys.stderr)
    return None


def _plot(args: argparse.Namespace) -> int:
    size = _input_size(args.file)
    _check_png(args.output, (args.file,))  # before reading what may be a large snapshot
    snap = _load(args, args.file, size)
    _draw(args, args.output, lambda: snap.plot(args.output, top=args.top))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from fasthost.export.compare import compare_targets

    # Both checked before either is read: a bad second file is not found
    # out only after loading the first.
    before_size, after_size = _input_size(args.before), _input_size(args.after)
    if args.plot is not None:
        _check_png(args.plot, (args.before, args.after))
    before, after = _load(args, args.before, before_size), _load(args, args.after, after_size)
    _progress(args, "comparing targets")
    sys.stdout.write(compare_targets(before, after, top=args.top))
    if args.plot is not None:
        from fasthost.export.plot import DIFF_PANELS, plot_diff

        labels = (os.path.basename(args.before), os.path.basename(args.after))
        panels = min(args.top, DIFF_PANELS)
        _draw(args, args.plot, lambda: plot_diff(before, after, args.plot, top=panels, labels=labels))
    return 0


def _combine(args: argparse.Namespace) -> int:
    from fasthost.export.combine import distinct

    _check_output(args.output)
    paths = _snapshot_files(args.inputs)
    sizes = [_input_size(path) for path in paths]  # all checked before any is read
    snaps = [_load(args, path, size) for path, size in zip(paths, sizes)]
    precisions = {snap.precision for snap in snaps}
    if len(precisions) > 1:
        first = {snap.precision: path for path, snap in zip(paths, snaps)}
        raise UsageError(
            "cannot combine snapshots of different precisions exactly: "
            + ", ".join(f"{first[p]} has precision {p}" for p in sorted(first))
        )
    try:
        kept, dropped = distinct(snaps, paths)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for index, instead in dropped:
        print(f"fasthost: left out {paths[index]}: its session is in {paths[instead]}", file=sys.stderr)
    combined = fasthost.merge([snaps[i] for i in kept])
    try:
        combined.save(args.output)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(
        f"fasthost: wrote {args.output}: {len(kept)} file(s), {combined.totals['processes']} process(es), "
        f"{combined.totals['transitions']:,} transitions",
        file=sys.stderr,
    )
    return 0


def _snapshot_files(inputs: list[str]) -> list[str]:
    """The files ``inputs`` name: a folder stands for the ``.npz`` files in
    it (not below), in name order. Raises UsageError for a folder without
    any."""
    paths = []
    for name in inputs:
        if os.path.isdir(name):
            found = sorted(os.path.join(name, f) for f in os.listdir(name) if f.endswith(".npz"))
            if not found:
                raise UsageError(f"no .npz files in {name}")
            paths += found
        else:
            paths.append(name)
    return paths
