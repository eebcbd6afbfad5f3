"""Runs a script or a module as ``__main__`` the way ``python script.py`` and
``python -m module`` do, for ``fasthost run``, without putting a builtin
call around the user's code.

runpy ends in ``exec(code, globals)``: under a builtins capture that
``exec`` would be one unmanaged frame around the whole program, topping
every report at 100 %. Here everything that calls builtins (finding,
reading and compiling the code) happens in ``prepare``, before any capture
starts, and ``Main.call`` calls the module's code as a plain Python
function, which no capture records.
"""

from __future__ import annotations

import builtins
import importlib.util
import io
import os
import pkgutil
import sys
import types
from dataclasses import dataclass
from typing import Any

__all__ = ["Main", "prepare_module", "prepare_script"]


@dataclass
class Main:
    """A program ready to run as ``__main__``."""

    code: types.CodeType
    globals: dict[str, Any]
    argv: list[str]
    path0: str | None  # what sys.path[0] becomes (the script's folder), or None
    _module: types.ModuleType | None = None
    _function: Any = None
    _saved: tuple[Any, ...] = ()

    def enter(self) -> None:
        """Sets ``sys.argv``, ``sys.path[0]`` and ``sys.modules["__main__"]``
        as Python sets them for a program, remembering what they were."""
        module = types.ModuleType("__main__")
        module.__dict__.update(self.globals)
        self._module = module
        self._saved = (sys.argv, sys.modules.get("__main__"), sys.path[0] if sys.path else None)
        sys.argv = self.argv
        if self.path0 is not None and sys.path:
            sys.path[0] = self.path0
        sys.modules["__main__"] = module
        # A module's code object called as a function runs with its
        # globals as locals, exactly as exec(code, globals) would. Made
        # here: calling a type under a native capture would be recorded.
        self._function = types.FunctionType(self.code, module.__dict__)

    def call(self) -> None:
        """Runs the program's code (after ``enter()``) and nothing else: no
        native call is made here. Exceptions (SystemExit too) propagate."""
        self._function()

    def exit(self) -> None:
        """Puts back what ``enter()`` changed."""
        argv, main, path0 = self._saved
        sys.argv = argv
        if main is not None:
            sys.modules["__main__"] = main
        if path0 is not None and sys.path:
            sys.path[0] = path0


def prepare_script(path: str, args: list[str]) -> Main:
    """Reads and compiles the script at ``path`` (source or .pyc). Raises
    ``OSError`` if it cannot be read, ``SyntaxError`` if it does not compile."""
    if path.endswith((".pyc", ".pyo")):
        with io.open_code(path) as f:
            code = pkgutil.read_code(f)
        if code is None:
            raise SyntaxError(f"{path} is not a compiled Python file for this interpreter")
    else:
        with io.open_code(path) as f:
            code = compile(f.read(), path, "exec")
    main_globals = {"__name__": "__main__", "__file__": path, "__cached__": None, "__doc__": None,
                    "__loader__": None, "__package__": None, "__spec__": None, "__builtins__": builtins}  # fmt: skip
    return Main(code, main_globals, [path, *args], os.path.dirname(os.path.abspath(path)))


def prepare_module(name: str, args: list[str]) -> Main:
    """Finds module ``name`` (a package runs its ``__main__``) and gets its
    code. Raises ``ImportError`` when there is no such module or no code."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"no module named {name!r}")
    if spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(name + ".__main__")
        if spec is None:
            raise ImportError(f"{name!r} is a package and cannot be run directly (no {name}.__main__)")
    loader = spec.loader
    code = loader.get_code(spec.name) if loader is not None and hasattr(loader, "get_code") else None
    if code is None:
        raise ImportError(f"no code object available for {name!r}")
    origin = spec.origin if spec.has_location else None
    main_globals = {"__name__": "__main__", "__file__": origin, "__cached__": spec.cached, "__doc__": None,
                    "__loader__": loader, "__package__": spec.parent, "__spec__": spec,
                    "__builtins__": builtins}  # fmt: skip
    return Main(code, main_globals, [origin or name, *args], None)
