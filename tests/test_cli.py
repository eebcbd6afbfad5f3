"""``python -m fasthost`` end to end, through real subprocesses."""

import json
import subprocess
import sys
import textwrap

import pytest

import fasthost

WORKLOAD = """
import ctypes, ctypes.util, sys
libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]
for _ in range({calls}):
    libm.cos(0.5)
print("args", sys.argv[1:])
{tail}
"""


def fasthost_cli(*args, cwd=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "fasthost", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def script(tmp_path, calls=10, tail="", name="work.py"):
    path = tmp_path / name
    path.write_text(WORKLOAD.format(calls=calls, tail=textwrap.dedent(tail)))
    return path


def one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fasthost: error: ")
    return lines[0]


def test_run_profiles_the_script_saves_and_prints_the_report(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, script(tmp_path, calls=25), "--flag", "x")
    assert proc.returncode == 0, proc.stderr
    assert "args ['--flag', 'x']" in proc.stdout  # the script's own arguments
    assert "libm.so.6!cos" in proc.stdout
    snap = fasthost.load(out)
    (row,) = snap.targets
    assert row["symbol"] == "libm.so.6!cos"
    assert row["calls"] == 25


def test_run_module_with_m(tmp_path):
    script(tmp_path, calls=4, name="workmod.py")
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, "-m", "workmod", "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "args ['a']" in proc.stdout
    assert fasthost.load(out).targets["calls"].tolist() == [4]


def test_run_capture_none_records_nothing_but_the_scripts_own_calls(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "--capture", "none", "-o", out, script(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert len(fasthost.load(out).targets) == 0


def test_run_capture_builtins_sees_builtin_calls(tmp_path):
    out = tmp_path / "out.npz"
    work = script(tmp_path, calls=1, tail="import math\nfor i in range(50): math.hypot(i, 1.0)")
    proc = fasthost_cli("run", "--capture", "builtins", "-o", out, work)
    assert proc.returncode == 0, proc.stderr
    rows = {str(r["symbol"]): int(r["calls"]) for r in fasthost.load(out).targets}
    assert [calls for symbol, calls in rows.items() if symbol == "math.hypot"] == [50]


def test_script_that_raises_keeps_its_data_and_exits_1(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, script(tmp_path, calls=7, tail="raise RuntimeError('boom')"))
    assert proc.returncode == 1
    assert "RuntimeError: boom" in proc.stderr
    assert fasthost.load(out).targets["calls"].tolist() == [7]
    assert "libm.so.6!cos" in proc.stdout


def test_script_exit_status_is_passed_on(tmp_path):
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "-o", out, script(tmp_path, calls=2, tail="sys.exit(3)"))
    assert proc.returncode == 3
    assert fasthost.load(out).targets["calls"].tolist() == [2]


def test_report_prints_text_and_json(tmp_path):
    out = tmp_path / "out.npz"
    assert fasthost_cli("run", "-o", out, script(tmp_path, calls=12)).returncode == 0
    text = fasthost_cli("report", out, "--top", "1")
    assert text.returncode == 0
    assert "libm.so.6!cos" in text.stdout
    encoded = fasthost_cli("report", out, "--json")
    summary = json.loads(encoded.stdout)
    assert summary["targets"][0]["calls"] == 12
    assert summary["latency"]["inclusive"]["count"] == 12


def test_report_progress_is_visible_on_request(tmp_path):
    out = tmp_path / "out.npz"
    assert fasthost_cli("run", "-o", out, script(tmp_path)).returncode == 0
    proc = fasthost_cli("report", out, "--progress")
    assert proc.returncode == 0
    assert "fasthost: loading" in proc.stderr
    assert "fasthost: loaded 1 threads, 1 targets" in proc.stderr


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "out.npz", tmp_path / "hist.png"
    assert fasthost_cli("run", "-o", out, script(tmp_path, calls=50)).returncode == 0
    proc = fasthost_cli("plot", out, "-o", png)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diff_compares_targets_by_symbol(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert fasthost_cli("run", "-o", a, script(tmp_path, calls=10)).returncode == 0
    assert fasthost_cli("run", "-o", b, script(tmp_path, calls=15)).returncode == 0
    proc = fasthost_cli("diff", a, b)
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("libm.so.6!cos")]
    assert "10 -> 15" in line
    assert "+50.0%" in line


def test_top_0_shows_the_summary_without_targets(tmp_path):
    a = tmp_path / "a.npz"
    run = fasthost_cli("run", "--top", "0", "-o", a, script(tmp_path, calls=3))
    assert run.returncode == 0, run.stderr
    report = fasthost_cli("report", a, "--top", "0")
    assert report.returncode == 0, report.stderr
    assert "top 0 of 1 targets" in report.stdout
    as_json = fasthost_cli("report", a, "--top", "0", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["targets"] == []
    diff = fasthost_cli("diff", a, a, "--top", "0")
    assert diff.returncode == 0, diff.stderr
    assert "transitions: 3 -> 3" in diff.stdout
    assert "1 more targets (--top)" in diff.stdout


@pytest.mark.parametrize("command", [["report"], ["plot", "-o", "x.png"], ["diff", "a.npz"]])
def test_missing_file_is_one_line_and_exit_2(tmp_path, command):
    proc = fasthost_cli(*command[:1], tmp_path / "missing.npz", *command[1:], cwd=tmp_path)
    assert proc.returncode == 2
    assert "no such file" in one_error_line(proc)


def test_corrupt_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    proc = fasthost_cli("report", bad)
    assert proc.returncode == 2
    assert "not a fasthost snapshot" in one_error_line(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required"),
        (["run"], "needs a script"),
        (["run", "missing_script.py"], "no such script"),
        (["run", "--capture", "dtrace", "x.py"], "--capture takes"),
        (["report", "a.npz", "--top", "-1"], "--top must be"),
        (["frobnicate"], "invalid choice"),
        (["run", "-m", "no_such_module_here"], "no module named"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
    proc = fasthost_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in one_error_line(proc)


def test_console_script_is_installed_next_to_python(tmp_path):
    import os
    import shutil

    script = shutil.which("fasthost", path=os.path.dirname(sys.executable))
    assert script is not None, "the fasthost console script is not installed"
    proc = subprocess.run([script, "report", tmp_path / "missing.npz"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no such file" in one_error_line(proc)


@pytest.mark.parametrize("how", ["script", "module", "raises", "exits"])
def test_run_records_only_the_programs_own_builtins_not_the_runners(tmp_path, how):
    program = tmp_path / "plain.py"
    tail = {"raises": "raise KeyError('x')", "exits": "raise SystemExit(3)"}.get(how, "")
    program.write_text(f"sorted([3, 1, 2])\nsorted([2, 1], key=lambda v: -v)\n{tail}\n")
    out = tmp_path / "out.npz"
    target = ["-m", "plain"] if how == "module" else [program]
    proc = fasthost_cli("run", "--capture", "builtins", "-o", out, *target, cwd=tmp_path)
    assert proc.returncode == {"raises": 1, "exits": 3}.get(how, 0), proc.stderr
    snap = fasthost.load(out)
    # No exec around the program, no lock or traceback printing of fasthost's.
    assert [str(s) for s in snap.targets["symbol"]] == ["sorted"]
    assert int(snap.targets["calls"][0]) == 2
    assert int(snap.threads["callback_calls"].sum()) == 2
    assert ("KeyError" in proc.stderr) == (how == "raises")


def test_run_gives_the_program_main_argv_and_its_folder_on_the_path(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    program = tmp_path / "prog.py"
    program.write_text(
        "import sys, helper\nVALUE_SEEN = helper.VALUE\n"
        "print('seen', sys.modules['__main__'].VALUE_SEEN, __name__, sys.argv[1:], __file__ == sys.argv[0])\n"
    )
    proc = fasthost_cli("run", "-o", tmp_path / "o.npz", program, "x", cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "seen 42 __main__ ['x'] True" in proc.stdout


def test_run_capture_native_sees_c_types_and_ufuncs(tmp_path):
    program = tmp_path / "numeric.py"
    program.write_text("import numpy as np, operator\na = np.arange(4.0)\nfor _ in range(6):\n    np.add(a, a)\n"
                       "second = operator.itemgetter(1)\nfor _ in range(3):\n    second((1, 2))\n")  # fmt: skip
    out = tmp_path / "out.npz"
    proc = fasthost_cli("run", "--capture", "native", "-o", out, program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {str(r["symbol"]): int(r["calls"]) for r in fasthost.load(out).targets}
    if sys.version_info >= (3, 12):
        assert (rows["numpy.add"], rows["operator.itemgetter.__call__"]) == (6, 3)
    else:  # the profile hook reports builtin functions only
        assert "numpy.add" not in rows
        assert "operator.itemgetter.__call__" not in rows


@pytest.mark.parametrize(
    ("capture", "why"),
    [("cffi", "compiled cffi modules (API mode) use builtins or native"), ("ctypes", "for other native code")],
)
def test_run_says_in_one_line_why_a_capture_recorded_nothing(tmp_path, capture, why):
    program = tmp_path / "pure.py"
    program.write_text("total = 0\nfor i in [1, 2, 3]:\n    total += i\n")
    proc = fasthost_cli("run", "--capture", capture, "-o", tmp_path / "o.npz", program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "recorded nothing" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"fasthost: --capture {capture} recorded nothing: ")
    assert why in lines[0]


def test_run_says_nothing_more_when_the_capture_recorded_something(tmp_path):
    proc = fasthost_cli("run", "-o", tmp_path / "o.npz", script(tmp_path, calls=3))
    assert proc.returncode == 0, proc.stderr
    assert "recorded nothing" not in proc.stderr


def test_run_m_passes_every_argument_after_the_module_to_it(tmp_path):
    (tmp_path / "echoargs.py").write_text("import sys\nprint('args', sys.argv[1:])\n")
    proc = fasthost_cli("run", "-o", tmp_path / "o.npz", "-m", "echoargs", "--sort-keys", "-o", "x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "args ['--sort-keys', '-o', 'x']" in proc.stdout
    assert (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("capture", ["native", "builtins"])
def test_run_of_an_empty_script_records_nothing_and_says_so(tmp_path, capture):
    program = tmp_path / "empty.py"
    program.write_text("pass\n")
    proc = fasthost_cli("run", "--capture", capture, "-o", tmp_path / "o.npz", program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(fasthost.load(tmp_path / "o.npz").targets) == 0
    assert f"--capture {capture} recorded nothing" in proc.stderr


@pytest.mark.parametrize("spec", ["", ","])
def test_an_empty_capture_list_is_a_usage_error(tmp_path, spec):
    proc = fasthost_cli("run", "--capture", spec, "-o", tmp_path / "o.npz", script(tmp_path))
    assert proc.returncode == 2
    assert "--capture takes" in one_error_line(proc)
