"""The budgets of docs/protocol.md §5 in instructions instead of seconds: each workload
runs under ``valgrind --tool=callgrind``, whose counts repeat exactly from
run to run whatever else the machine does (wall-clock ratios on a shared
VM move by tens of percent). Needs valgrind.

    python bench/instructions.py

Every workload is measured as (setup + work) minus (setup alone), with
PYTHONHASHSEED fixed so that both runs lay out their dicts alike. fasthost
records on its "manual" clock here: calibrating the TSC is a timed loop
whose length would change from run to run, and reading the manual clock
costs about what one rdtsc does (an instruction, plus two branches to get
there, which count against fasthost).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import math, sys
MONITORING = sys.version_info >= (3, 12)
sys.path.insert(0, {root!r})
import fasthost
from bench.loops import unrolled
from bench.native import load
native = load()
fasthost.start(clock="manual")
builtin_loop = unrolled("cos(x); len(s); abs(-1)", 1000, cos=math.cos, len=len, abs=abs, x=0.5, s="abc")
py_pair = unrolled("leave(t); enter()", 1000, leave=fasthost.leave_runtime, enter=fasthost.enter_runtime, t=0x1234)
py_builtins = unrolled("noop1(t); noop()", 1000, noop1=native.noop1, noop=native.noop, t=0x1234)
py_minimal = unrolled("leave(t); enter()", 1000, leave=native.minimal_leave, enter=native.minimal_enter, t=0x1234)
native.minimal_pair_loop(1); native.capi_pair_loop(1); py_pair(); py_builtins(); py_minimal(); builtin_loop()
if MONITORING:
    import numpy as np
    a = np.ones(4)
    native_loop = unrolled("cos(x); len(s); add(a, a)", 1000, cos=math.cos, len=len, add=np.add, a=a, x=0.5, s="abc")
    native_loop()
"""

# capture_native()'s per-call budget (3.12+): the same loop under fasthost
# and under the minimal sys.monitoring recorder, whose callbacks are builtin
# functions, or objects called through their own vectorcall slot as
# fasthost's are. Each workload also runs with nothing but the switching on
# and off, which is subtracted.
NATIVE_CALLS = 30_000
NATIVE_WORK = {
    "native_loop": "native_loop()",
    "native_capture": "c = fasthost.capture_native().start(); native_loop(); c.stop()",
    "native_capture_only": "c = fasthost.capture_native().start(); c.stop()",
    "native_nosites": "c = fasthost.capture_native(callsites=False).start(); native_loop(); c.stop()",
    "native_nosites_only": "c = fasthost.capture_native(callsites=False).start(); c.stop()",
    "native_minimal": "native.minimal_monitor(True); native_loop(); native.minimal_monitor(False)",
    "native_minimal_only": "native.minimal_monitor(True); native.minimal_monitor(False)",
    "native_minimal_vc": "native.minimal_monitor(True, vectorcall=True); native_loop(); native.minimal_monitor(False)",
    "native_minimal_vc_only": "native.minimal_monitor(True, vectorcall=True); native.minimal_monitor(False)",
}

WORK = {
    "setup": "",
    "c_pairs": "native.capi_pair_loop(100_000)",
    "c_minimal": "native.minimal_pair_loop(100_000)",
    "py_pairs": "py_pair()",
    "py_builtins": "py_builtins()",
    "py_minimal": "py_minimal()",
    "loop": "builtin_loop()",
    "loop_minimal_hook": "native.minimal_profile_hook(True); builtin_loop(); native.minimal_profile_hook(False)",
    "loop_capture": "c = fasthost.capture_builtins().start(); builtin_loop(); c.stop()",
    "loop_capture_only": "c = fasthost.capture_builtins().start(); c.stop()",
}


def instructions(work: str, tool: tuple[str, ...] = ("valgrind", "--tool=callgrind")) -> int:
    """The instructions the setup plus `work` run under callgrind (0 when
    `tool` is empty: the script then only runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "work.py"
        script.write_text(SETUP.format(root=str(ROOT)) + work + "\n")
        # numpy's OpenBLAS threads spin while idle: their instructions would
        # be counted, and vary.
        env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
        out = (f"--callgrind-out-file={tmp}/out",) if tool else ()
        proc = subprocess.run([*tool, *out, sys.executable, str(script)], capture_output=True, text=True, env=env)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or (tool and match is None):
        raise RuntimeError(f"{'callgrind' if tool else 'python'} failed for {work!r}:\n{proc.stderr[-2000:]}")
    return int(match.group(1)) if match else 0


def main() -> int:
    if shutil.which("valgrind") is None:
        print("instructions.py needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from bench.native import load

    load()  # built here if need be, not under callgrind
    # Once without it: a module whose .pyc is stale would otherwise be
    # compiled in the first measured run only, and move every difference.
    instructions("", tool=())
    counts = {}
    work_items = {**WORK, **(NATIVE_WORK if sys.version_info >= (3, 12) else {})}
    for name, work in work_items.items():
        print(f"instructions: {name}", file=sys.stderr, flush=True)
        counts[name] = instructions(work)
    cost = {name: n - counts["setup"] for name, n in counts.items()}
    hooked_fasthost = cost["loop_capture"] - cost["loop_capture_only"]
    rows = [
        ("C API pair / minimal pair (per pair)", cost["c_pairs"] / cost["c_minimal"], "≤ 1.25x"),
        ("Python pair / minimal pair as builtins", cost["py_pairs"] / cost["py_minimal"], "≤ 1.15x"),
        (
            "capture_builtins slowdown / minimal hook slowdown",
            (hooked_fasthost / cost["loop"]) / (cost["loop_minimal_hook"] / cost["loop"]),
            "≤ 1.1x",
        ),
    ]
    if "native_loop" in cost:

        def per_native_call(name: str) -> float:
            """Instructions a recorder adds to each native call of the loop."""
            return (cost[name] - cost[f"{name}_only"] - cost["native_loop"]) / NATIVE_CALLS

        fasthost, nosites = per_native_call("native_capture"), per_native_call("native_nosites")
        minimal, minimal_vc = per_native_call("native_minimal"), per_native_call("native_minimal_vc")
        rows += [
            ("capture_native per native call / minimal monitoring recorder", fasthost / minimal, "≤ 1.2x"),
            ("  the same, against the minimal recorder called through vectorcall", fasthost / minimal_vc, "-"),
            ("  without call sites, against the minimal recorder", nosites / minimal, "-"),
            ("  without call sites, against the minimal recorder called through vectorcall", nosites / minimal_vc, "-"),
        ]
    print("| figure (callgrind instructions) | ratio | budget |")
    print("|---|---:|---:|")
    for name, ratio, budget in rows:
        print(f"| {name} | {ratio:.3f}x | {budget} |")
    print()
    print(
        f"per pair: C API {cost['c_pairs'] / 100_000:.0f}, minimal {cost['c_minimal'] / 100_000:.0f} instructions; "
        f"per builtin call under the hooks: fasthost {hooked_fasthost / 30_000:.0f}, "
        f"minimal {cost['loop_minimal_hook'] / 30_000:.0f}, none {cost['loop'] / 30_000:.0f}; "
        f"per Python pair: fasthost {cost['py_pairs'] / 10_000:.0f}, minimal as builtins "
        f"{cost['py_minimal'] / 10_000:.0f}, two empty builtins {cost['py_builtins'] / 10_000:.0f}"
    )
    if "native_loop" in cost:
        print(
            f"per native call (cos, len, numpy.add): the loop alone {cost['native_loop'] / NATIVE_CALLS:.0f}; added by "
            f"capture_native {fasthost:.0f} (without call sites {nosites:.0f}), by the minimal recorder {minimal:.0f} "
            f"(through vectorcall {minimal_vc:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
