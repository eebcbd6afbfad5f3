"""Plain C programs built against the core's headers from the source tree
next to the tests (the wheel ships only the public header) and run: the
core checked where Python cannot reach it (calloc failing, millions of
random steps against a model)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).parent / "native"
CORE = Path(__file__).resolve().parent.parent / "src" / "fasthost" / "core"
COMPILER = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")

needs_the_core = [
    pytest.mark.skipif(COMPILER is None, reason="no C compiler"),
    pytest.mark.skipif(not (CORE / "fh_runtime.h").is_file(), reason="no source tree next to the tests"),
]


def run_core_program(name: str, tmp_path: Path, *args: str) -> str:
    """Builds tests/native/`name`.c with warnings as errors and runs it with
    `args`; returns its output. Fails the test if the program exits
    non-zero (it prints what differed)."""
    program = tmp_path / name
    compile_line = [COMPILER, "-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{CORE}"]
    subprocess.run([*compile_line, str(NATIVE / f"{name}.c"), "-o", str(program), "-lpthread"], check=True)
    proc = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
