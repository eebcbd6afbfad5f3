"""The core when a target finds no memory, in plain C (tests/native/out_of_memory.c):
an open refused that way stays open, unrecorded, and nothing is recorded
inside it, on the fast path neither, so that unrecorded opens are always
the newest entries (the captures' closes find their frames by that)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "native" / "out_of_memory.c"
# The core's headers from the source tree next to the tests: the wheel ships
# only the public header.
CORE = Path(__file__).resolve().parent.parent / "src" / "fasthost" / "core"
COMPILER = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.mark.skipif(COMPILER is None, reason="no C compiler")
@pytest.mark.skipif(not (CORE / "fh_runtime.h").is_file(), reason="no source tree next to the tests")
def test_nothing_is_recorded_inside_an_open_refused_for_want_of_memory(tmp_path):
    program = tmp_path / "out_of_memory"
    subprocess.run(
        [
            COMPILER,
            "-g",
            "-O1",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{CORE}",
            str(SOURCE),
            "-o",
            str(program),
            "-lpthread",
        ],
        check=True,
    )
    proc = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("out_of_memory: ok")
