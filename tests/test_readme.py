"""The README's examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def run_example(name, out):
    """``python -m fasthost run -o out examples/name``, finished."""
    return subprocess.run(
        [sys.executable, "-m", "fasthost", "run", "-o", str(out), str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quickstart_profiles_the_bundled_example_and_prints_its_report(tmp_path):
    out = tmp_path / "run.npz"
    proc = run_example("qsort_callbacks.py", out)
    assert proc.returncode == 0, proc.stderr
    assert "sorted 2000 words 5 times" in proc.stdout  # the script ran
    assert "0 errors" in proc.stdout
    assert re.search(r"libc\.so\.6!qsort\s+5 ", proc.stdout)
    strcmp = re.search(r"libc\.so\.6!strcmp\s+([\d,]+) ", proc.stdout)
    callbacks = re.search(r"reverse_enter ([\d,]+)", proc.stdout)
    assert strcmp is not None
    assert callbacks is not None
    assert strcmp.group(1) == callbacks.group(1)  # one strcmp per comparison: U -> M -> U
    assert out.exists()


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    commands = re.findall(r"^(pip install .*)$", text, re.M)[:2]
    assert commands == [
        "pip install . && python -m fasthost run examples/qsort_callbacks.py",
        'pip install ".[test]" && python -m pytest',
    ]


def test_many_processes_example_records_every_call_of_the_pool_and_the_subprocess(tmp_path):
    proc = run_example("pool_workers.py", tmp_path / "pool.npz")
    assert proc.returncode == 0, proc.stderr
    assert "pool: 4000 calls" in proc.stdout
    assert re.search(r"^fasthost: \d processes, \d thread\(s\), 4,101 transitions, 0 errors$", proc.stdout, re.M)
    assert re.search(r"libm\.so\.6!cos\s+4,101 ", proc.stdout)


def readme_example(heading: str) -> str:
    """The first Python example under the README's ``### heading``."""
    section = README.read_text().split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


@pytest.mark.parametrize(
    ("heading", "module", "printed"),
    [
        ("Prometheus", "prometheus_client", """['fasthost_target_calls_total{target="libm.so.6!cos"} 1000.0']"""),
        ("OpenTelemetry", "opentelemetry.sdk", "libm.so.6!cos 1000 0 1000"),
    ],
)
def test_exporter_examples_run_and_print_what_the_readme_says(tmp_path, heading, module, printed):
    pytest.importorskip(module, reason="the test extra installs the exporters' packages")
    assert f"prints `{printed}`" in " ".join(README.read_text().split())
    script = tmp_path / "example.py"
    script.write_text(readme_example(heading))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == printed
