"""The README's examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_api_example_runs_and_shows_nesting(tmp_path):
    section = README.read_text().split("## The API in ten lines", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = eval(proc.stdout.strip().split("] ", 1)[1])  # the totals dict printed last
    assert calls["leave"] == calls["enter"] == 1
    assert calls["reverse_enter"] == calls["reverse_leave"] >= 4  # qsort of 5 values compares at least 4 times


def test_bundled_example_prints_its_report():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "qsort_callbacks.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 errors" in proc.stdout
    assert re.search(r"qsort\s+calls=\s+5 ", proc.stdout)
    assert re.search(r"strcmp\s+calls=\s+\d+", proc.stdout)
