"""The package's layers point one way: no module imports one that imports it
back (directly or through others), and each module imports on its own.

The graph is read from the sources: every ``import fasthost...`` and
``from fasthost... import ...`` of a module, wherever it stands (a lazy
import inside a function is still a dependency), except those under
``if TYPE_CHECKING:``, which only the type checker runs."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fasthost

PACKAGE = Path(fasthost.__file__).resolve().parent
CYTHON_IMPORT = re.compile(
    r"^\s*(?:from\s+(fasthost[\w.]*)\s+(?:c?import)\s+([\w, ]+)|import\s+(fasthost[\w.]*))", re.M
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*"):
        if path.suffix in (".py", ".pyx") and "__pycache__" not in path.parts:
            found[module_name(path)] = path
    return found


def resolve(base: str, names: list[str], modules: dict[str, Path]) -> set[str]:
    """What ``from base import names`` depends on: the submodules named, or
    the module itself for plain attributes."""
    out = set()
    for name in names:
        sub = f"{base}.{name}"
        out.add(sub if sub in modules else base)
    return {m for m in out if m in modules}


def type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    text = path.read_text()
    found: set[str] = set()
    if path.suffix == ".pyx":  # Cython: read the import lines (no .pxi: cimports of C only)
        for match in CYTHON_IMPORT.finditer(text):
            base, names, plain = match.groups()
            if plain:
                found |= {plain} & set(modules)
            else:
                found |= resolve(base, [n.strip() for n in names.split(",") if n.strip()], modules)
        return found - {name}
    tree = ast.parse(text)
    skip = type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("fasthost"):
                found |= resolve(base, [alias.name for alias in node.names], modules)
    return found - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    modules = sources()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    # Implicit package imports (fasthost.export for fasthost.export.schema)
    # are not edges: a package's __init__ may gather its modules.
    assert graph["fasthost.export.snapshot"] >= {"fasthost.export.schema", "fasthost.export.combine"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_on_its_own():
    skip = {"fasthost.__main__"}  # runs the CLI
    names = sorted(set(sources()) - skip)

    def fresh_import(name: str) -> tuple[str, int, str]:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, check=False)
        return name, proc.returncode, proc.stderr[-600:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(n, err) for n, code, err in pool.map(fresh_import, names) if code != 0]
    assert not failed, failed


CORE = Path(__file__).resolve().parent.parent / "src" / "fasthost" / "core"


@pytest.mark.skipif(not CORE.is_dir() or shutil.which("cc") is None, reason="needs the source tree and a C compiler")
@pytest.mark.parametrize("header", sorted(p.name for p in CORE.glob("*.h")) if CORE.is_dir() else [])
def test_each_core_header_compiles_on_its_own(header, tmp_path):
    # Each header includes what it builds on, so a reader can start from
    # any of them. _GNU_SOURCE: what Python.h defines for every extension.
    source = tmp_path / "one.c"
    source.write_text(f'#include "{header}"\n')
    flags = ["-std=gnu11", "-D_GNU_SOURCE", "-fsyntax-only", "-Wall", "-Wno-unused-function", "-Werror"]
    proc = subprocess.run(["cc", *flags, f"-I{CORE}", str(source)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
