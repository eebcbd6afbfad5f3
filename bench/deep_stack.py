"""What code pays at the bottom of a deep stack, where opens go past
``max_depth`` and the core counts each side's frames: callgrind
instructions per statement of a loop run there, against the same loop run
above ``max_depth``. Needs valgrind.

    python bench/deep_stack.py

Two workloads, each under ``capture_native()`` (3.12+; ``capture_builtins()``
before) at ``max_depth=256``, the loop at the bottom of a recursion of 127
levels (below max_depth) and of 128 (at it):

- ``len(s)`` under a recursion through ``sorted()``'s key function (two
  captured frames a level): at 128 levels the captures' side is full and
  every ``len`` is a refused open;
- ``sorted(t, key=k); len(s)`` under a recursion of protocol frames (two
  a level): at 128 levels the protocol's side is full, and each turn opens
  two captured frames past max_depth and closes them.

Each figure is (loop of 10,000 turns) minus (loop of 1,000 turns), all else
equal, so that startup and the recursion cancel out; the difference is
divided by the 9,000 turns (each of 10 unrolled statements). Counts repeat
to about ±50 instructions per statement here.
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

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import fasthost
from bench.loops import unrolled

k = lambda x: x
loop = unrolled({statement!r}, {turns}, len=len, s="abc", sorted=sorted, t=[0], k=k)

def through_sorted(n, work):
    if n == 0:
        work()
    else:
        sorted([0], key=lambda _: through_sorted(n - 1, work))
    return 0

def through_the_protocol(n, work):
    if n == 0:
        work()
        return 0
    fasthost.leave_runtime(0x1234)
    fasthost.reverse_enter_runtime()
    through_the_protocol(n - 1, work)
    fasthost.reverse_leave_runtime()
    fasthost.enter_runtime()
    return 0

fasthost.start(clock="manual", max_depth=256)
capture = fasthost.capture_native() if sys.version_info >= (3, 12) else fasthost.capture_builtins()
with capture:
    {recursion}({levels}, lambda: None)
    {recursion}({levels}, loop)
"""

WORKLOADS = {
    "len(s) under sorted() key functions": ("through_sorted", "len(s)"),
    "sorted(t, key=k); len(s) under protocol frames": ("through_the_protocol", "sorted(t, key=k); len(s)"),
}


def instructions(recursion: str, statement: str, levels: int, turns: int) -> int:
    """Callgrind's instruction count for the whole script."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "work.py"
        script.write_text(
            SCRIPT.format(root=str(ROOT), statement=statement, turns=turns, recursion=recursion, levels=levels)
        )
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=env,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"callgrind failed for {statement!r}:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    if shutil.which("valgrind") is None:
        print("deep_stack.py needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    print("| loop | below max_depth (127 levels) | at max_depth (128 levels) |")
    print("|---|---:|---:|")
    for name, (recursion, statement) in WORKLOADS.items():
        per_statement = []
        for levels in (127, 128):
            long, short = (instructions(recursion, statement, levels, turns) for turns in (10_000, 1_000))
            per_statement.append((long - short) / 90_000)
        print(f"| {name} | {per_statement[0]:.0f} | {per_statement[1]:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
