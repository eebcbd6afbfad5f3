"""The plain-C stress harness under ThreadSanitizer and AddressSanitizer."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).parent / "sanitizers" / "run.sh"
# The core's headers from the source tree next to the tests: the wheel ships
# only the public header (include/fasthost.h), not core/.
CORE = Path(__file__).resolve().parent.parent / "src" / "fasthost" / "core"


@pytest.mark.sanitizers
@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
@pytest.mark.skipif(not (CORE / "fh_runtime.h").is_file(), reason="no source tree next to the tests")
def test_core_is_clean_under_tsan_and_asan():
    proc = subprocess.run(["bash", str(RUN), str(CORE)], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    ran = [line for line in proc.stdout.splitlines() if line.startswith("PASS ")]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIP ")]
    if not ran:
        pytest.skip("; ".join(skipped) or "no sanitizer available")
    assert "data race" not in output
    assert "ERROR: AddressSanitizer" not in output
