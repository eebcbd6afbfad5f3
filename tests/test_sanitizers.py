"""The plain-C stress harness under ThreadSanitizer and AddressSanitizer."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fasthost

RUN = Path(__file__).parent / "sanitizers" / "run.sh"


@pytest.mark.sanitizers
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_core_is_clean_under_tsan_and_asan():
    core = Path(fasthost.__file__).parent / "core"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(RUN), str(core)], capture_output=True, text=True, env=env, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    ran = [line for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIP ")]
    if not ran:
        pytest.skip("; ".join(skipped) or "no sanitizer available")
    assert "data race" not in output
    assert "ERROR: AddressSanitizer" not in output
