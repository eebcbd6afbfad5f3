"""A multiprocessing pool and a subprocess, each making libm calls through
ctypes: ``python -m fasthost run examples/pool_workers.py`` records them all."""

import ctypes
import ctypes.util
import multiprocessing
import subprocess
import sys

libm = ctypes.CDLL(ctypes.util.find_library("m"))
libm.cos.restype = ctypes.c_double
libm.cos.argtypes = [ctypes.c_double]


def cos_calls(n):
    for _ in range(n):
        libm.cos(0.5)
    return n


if __name__ == "__main__":
    method = sys.argv[1] if len(sys.argv) > 1 else "spawn"
    with multiprocessing.get_context(method).Pool(2) as pool:
        print("pool:", sum(pool.map(cos_calls, [1000] * 4)), "calls")
    cos_calls(100)
    code = "import ctypes; ctypes.CDLL('libm.so.6').cos(ctypes.c_double(0.5))"
    subprocess.run([sys.executable, "-c", code], check=True)
