"""The capture adapters as one switch, for the command line and the pytest
plugin: ``Captures("ctypes,builtins")`` turns the named adapters on and,
whatever happens, off again. Imports the adapters only when started."""

from __future__ import annotations

from typing import Callable

__all__ = ["CAPTURES", "INTERPRETER_CAPTURES", "Captures", "parse_captures"]

CAPTURES = ("ctypes", "cffi", "builtins", "native")
INTERPRETER_CAPTURES = ("builtins", "native")  # the captures that hook the interpreter: one at a time


def parse_captures(spec: str | None) -> list[str]:
    """The adapters a comma-separated ``spec`` names ("none" or empty: no
    adapter). Raises ``ValueError`` naming the valid choices."""
    if spec is None:
        return []
    chosen = [c.strip() for c in spec.split(",")]
    if chosen == ["none"]:
        return []
    if "" in chosen:
        raise ValueError(f"takes {', '.join(CAPTURES)} or none, not {spec!r}")
    unknown = [c for c in chosen if c not in CAPTURES]
    if unknown:
        raise ValueError(f"takes {', '.join(CAPTURES)} or none, not {', '.join(unknown)}")
    if "native" in chosen:  # it sees these calls itself: each would count twice
        chosen = [c for c in chosen if c not in ("builtins", "ctypes", "cffi")]
    return chosen


class Captures:
    """Turns adapters on (``start``, or ``with``) and off (``stop``): the
    ctypes and cffi opt-ins, and a builtins capture for every thread."""

    def __init__(self, spec: str | list[str] | None):
        self.captures = parse_captures(spec) if not isinstance(spec, list) else spec
        self._stops: list[Callable[[], None]] = []  # of what is on, in start order

    def start(self) -> Captures:
        """Raises ``ImportError`` (cffi missing) after undoing what it did.
        The builtins or native capture starts last and stops first, so that
        nothing of fasthost's own runs under it."""
        if not self.captures:
            return self  # nothing to import either
        import fasthost
        from fasthost.capture import cffi, ctypes

        try:
            for name in sorted(self.captures, key=lambda c: c in INTERPRETER_CAPTURES):
                if name == "ctypes":
                    self._stops.append(ctypes.disable)
                    ctypes.enable()
                elif name == "cffi":
                    self._stops.append(cffi.disable)
                    cffi.enable()
                else:
                    capture = fasthost.capture_native() if name == "native" else fasthost.capture_builtins()
                    self._stops.append(capture.stop)
                    capture.start()  # last: no builtin call of ours after it
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Turns off what ``start`` turned on, in reverse order. The first
        thing it calls is the builtins capture's stop (a builtin call before
        it would be recorded as the program's). One that raises does not
        keep the others on: the first error is raised once all were
        called."""
        stops, self._stops = self._stops, []
        failure: BaseException | None = None
        for stop in stops[::-1]:
            try:
                stop()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def __enter__(self) -> Captures:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
