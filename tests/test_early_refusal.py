"""Bad input is refused before anything runs: the CLI checks its output and
input paths before running the script or reading a snapshot, and the
pytest plugin checks the ``--fasthost-compare`` baseline before the first
test. Everything through real subprocesses."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from .test_cli import fasthost_cli, one_error_line

# A script that leaves a marker file behind when it runs at all.
MARKER_SCRIPT = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
"""


def marker_script(tmp_path):
    marker = tmp_path / "ran.txt"
    script = tmp_path / "work.py"
    script.write_text(MARKER_SCRIPT.format(marker=str(marker)))
    return script, marker


# ---- run: the output file is checked before the script runs ----------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/nonexistent/dir/out.npz", "no such directory: /nonexistent/dir"),
        ("{tmp}", "is a directory"),  # an existing directory as the output file
    ],
)
def test_run_refuses_an_unwritable_output_before_running_the_script(tmp_path, output, message):
    script, marker = marker_script(tmp_path)
    proc = fasthost_cli("run", "-o", output.format(tmp=tmp_path), script)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "cannot write" in line
    assert message in line
    assert not marker.exists(), "the script ran although its output could not be written"
    assert proc.stdout == ""  # no report either: nothing was recorded


def test_run_with_a_writable_output_still_runs_the_script(tmp_path):
    script, marker = marker_script(tmp_path)
    proc = fasthost_cli("run", "-o", tmp_path / "out.npz", script)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
    assert (tmp_path / "out.npz").exists()


def test_plot_refuses_an_unwritable_png_before_reading_the_snapshot(tmp_path):
    # The snapshot is corrupt: had it been read first, the error would say so.
    corrupt = tmp_path / "bad.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    proc = fasthost_cli("plot", corrupt, "-o", "/nonexistent/dir/hist.png")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "cannot write /nonexistent/dir/hist.png: no such directory" in line
    assert "not a fasthost snapshot" not in line


# ---- report, plot, diff: inputs must be regular files ------------------------------


@pytest.mark.parametrize("command", [["report"], ["plot", "-o", "x.png"], ["diff", "{good}"]])
def test_a_fifo_input_is_refused_without_hanging(tmp_path, command):
    fifo = tmp_path / "snapshot.fifo"
    os.mkfifo(fifo)
    good = tmp_path / "good.npz"
    good.write_bytes(b"")  # a regular file: only the FIFO may be refused
    args = [arg.format(good=good) for arg in command]
    # Nothing ever writes to the FIFO: opening it to read would block forever.
    proc = fasthost_cli(args[0], fifo, *args[1:], cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert f"not a regular file: {fifo}" in one_error_line(proc)


def test_diff_checks_both_inputs_before_reading_either(tmp_path):
    fifo = tmp_path / "after.fifo"
    os.mkfifo(fifo)
    corrupt = tmp_path / "before.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    proc = fasthost_cli("diff", corrupt, fifo, timeout=30)
    assert proc.returncode == 2
    assert f"not a regular file: {fifo}" in one_error_line(proc)


def test_a_directory_input_is_refused(tmp_path):
    proc = fasthost_cli("report", tmp_path)
    assert proc.returncode == 2
    assert f"not a regular file: {tmp_path}" in one_error_line(proc)


# ---- the program name in usage errors ---------------------------------------------------


def console_script():
    script = shutil.which("fasthost", path=os.path.dirname(sys.executable))
    assert script is not None, "the fasthost console script is not installed"
    return script


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["bogus"], "--help)"),
        (["report"], "report --help)"),  # a subcommand's own error names the subcommand once
    ],
)
def test_usage_errors_name_the_program_as_it_was_invoked(tmp_path, args, hint):
    python_m = f"{os.path.basename(sys.executable)} -m fasthost"
    proc = fasthost_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc).endswith(f"(see {python_m} {hint}")

    proc = subprocess.run([console_script(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.endswith(f"(see fasthost {hint}")
    assert "fasthost fasthost" not in line


# ---- the pytest plugin: the baseline is read before the first test ------------------------

MARKER_TEST = """
import pathlib

def test_leaves_a_marker():
    pathlib.Path("ran.txt").write_text("ran")
"""


def run_with_baseline(pytester, *options):
    pytester.makepyfile(test_marker=MARKER_TEST)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *options)


def error_lines(result):
    return [line for line in result.stderr.lines if line.strip()]


def test_missing_baseline_file_is_a_usage_error_before_any_test(pytester):
    result = run_with_baseline(pytester, "--fasthost-compare=missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    (line,) = error_lines(result)
    assert "--fasthost-compare: cannot read missing.json" in line


def test_no_saved_benchmark_run_is_a_usage_error_before_any_test(pytester):
    pytest.importorskip("pytest_benchmark")
    result = run_with_baseline(pytester, "--benchmark-storage=store", "--fasthost-compare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    (line,) = error_lines(result)
    assert "--fasthost-compare: no saved benchmark run" in line


@pytest.mark.parametrize(
    ("baseline", "problem"),
    [
        ("{", "not JSON"),
        ([], "not an object with a 'benchmarks' list"),
        ({}, "not an object with a 'benchmarks' list"),
        ({"benchmarks": 3}, "'benchmarks' is int, not a list"),
        ({"benchmarks": ["x"]}, "benchmarks[0] is str, not an object"),
        ({"benchmarks": [{"extra_info": {}}]}, "benchmarks[0] has no 'fullname'"),
        ({"benchmarks": [{"fullname": "t.py::t"}]}, "benchmarks[0] (t.py::t) has no 'extra_info' object"),
        ({"benchmarks": [{"fullname": "t.py::t", "extra_info": []}]}, "has no 'extra_info' object"),
        (
            {"benchmarks": [{"fullname": "t.py::t", "extra_info": {"fasthost": {"calls": 1}}}]},
            "benchmarks[0] (t.py::t): its fasthost figures have no 'transitions_per_call' number",
        ),
        (
            {"benchmarks": [{"fullname": "t", "extra_info": {"fasthost": {"transitions_per_call": 1.0}}}]},
            "benchmarks[0] (t): its fasthost figures have no 'unmanaged_ns' p99",
        ),
    ],
)
def test_baseline_of_the_wrong_shape_is_one_usage_error_line(pytester, baseline, problem):
    text = baseline if isinstance(baseline, str) else json.dumps(baseline)
    (pytester.path / "base.json").write_text(text)
    result = run_with_baseline(pytester, "--fasthost-compare=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    (line,) = error_lines(result)
    assert "--fasthost-compare: base.json: " in line
    assert problem in line
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_baseline_without_fasthost_figures_is_accepted(pytester):
    # Plain --benchmark-json output: benchmarks without fasthost figures are skipped.
    (pytester.path / "base.json").write_text(json.dumps({"benchmarks": [{"fullname": "t", "extra_info": {}}]}))
    result = run_with_baseline(pytester, "--fasthost-compare=base.json")
    assert result.ret == pytest.ExitCode.OK
    assert (pytester.path / "ran.txt").exists()
