"""The capture adapters as one switch, for the command line and the pytest
plugin: ``Captures("ctypes,builtins")`` turns the named adapters on and,
whatever happens, off again. Imports the adapters only when started."""

from __future__ import annotations

from typing import Any

__all__ = ["CAPTURES", "Captures", "parse_captures"]

CAPTURES = ("ctypes", "cffi", "builtins")


def parse_captures(spec: str | None) -> list[str]:
    """The adapters a comma-separated ``spec`` names ("none" or empty: no
    adapter). Raises ``ValueError`` naming the valid choices."""
    chosen = [c.strip() for c in (spec or "").split(",") if c.strip()]
    if chosen in ([], ["none"]):
        return []
    unknown = [c for c in chosen if c not in CAPTURES]
    if unknown:
        raise ValueError(f"takes {', '.join(CAPTURES)} or none, not {', '.join(unknown)}")
    return chosen


class Captures:
    """Turns adapters on (``start``, or ``with``) and off (``stop``): the
    ctypes and cffi opt-ins, and a builtins capture for every thread."""

    def __init__(self, spec: str | list[str] | None):
        self.captures = parse_captures(spec) if not isinstance(spec, list) else spec
        self._builtins: Any = None
        self._started: list[str] = []

    def start(self) -> Captures:
        """Raises ``ImportError`` (cffi missing) after undoing what it did."""
        if not self.captures:
            return self  # nothing to import either
        import fasthost
        from fasthost import cffi, ctypes

        try:
            for name in self.captures:
                if name == "ctypes":
                    ctypes.enable()
                elif name == "cffi":
                    cffi.enable()
                else:
                    self._builtins = fasthost.capture_builtins().start()
                self._started.append(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Turns off what ``start`` turned on, in reverse order."""
        if not self._started:
            return
        from fasthost import cffi, ctypes

        while self._started:
            name = self._started.pop()
            if name == "ctypes":
                ctypes.disable()
            elif name == "cffi":
                cffi.disable()
            else:
                self._builtins.stop()
                self._builtins = None

    def __enter__(self) -> Captures:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
