"""The pyperf hook, through real pyperf runs (``--hook fasthost``, a
worker process per run): figures read back from pyperf's JSON."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .test_readme import readme_example

pyperf = pytest.importorskip("pyperf", reason="the test extra installs pyperf")

# The README's example, so that it is known to work as written.
BENCH = readme_example("pyperf")


def run_pyperf(tmp_path, *options, capture=None):
    (tmp_path / "bench.py").write_text(BENCH)
    env = dict(os.environ)
    if capture is not None:
        env["FASTHOST_PYPERF_CAPTURE"] = capture
    # Few processes, values and loops: the figures are counts, not timings.
    return subprocess.run(
        [sys.executable, "-W", "ignore", str(tmp_path / "bench.py"), "--hook", "fasthost", "--processes", "2",
         "--values", "2", "--warmups", "1", "--inherit-environ", "FASTHOST_PYPERF_CAPTURE",
         "-o", str(tmp_path / "out.json"), "--quiet", *options],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(("loops", "capture"), [(20, None), (7, "none")])
def test_pyperf_run_records_transitions_per_call_and_unmanaged_quantiles(tmp_path, loops, capture):
    proc = run_pyperf(tmp_path, "--loops", str(loops), capture=capture)
    assert proc.returncode == 0, proc.stderr
    bench = pyperf.Benchmark.load(str(tmp_path / "out.json"))
    runs = [run for run in bench.get_runs() if run.values]  # the calibration run has none
    assert len(runs) == 2
    for run in runs:
        metadata = run.get_metadata()
        assert metadata["hooks"] == "fasthost"
        assert metadata["loops"] == loops
        assert metadata["fasthost_capture"] == (capture or "native")
        # Three libm calls per benchmarked call, pyperf's own timer and loop left out.
        assert metadata["fasthost_transitions_per_call"] == 3.0
        assert 0 < metadata["fasthost_unmanaged_p50_ns"] <= metadata["fasthost_unmanaged_p99_ns"]


def test_an_unknown_capture_stops_the_worker_with_pyperfs_hook_error(tmp_path):
    proc = run_pyperf(tmp_path, "--loops", "3", capture="ctypez")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ERROR setting up hook 'fasthost'" in output
    assert "FASTHOST_PYPERF_CAPTURE takes ctypes, cffi, builtins, native or none, not ctypez" in output
