"""A third-party extension built against fasthost's C API (fasthost.h via
capi.pxd), calling it from native code without the GIL."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fasthost

EXTENSION = """
from fasthost.capi cimport (fasthost_import, FH_LeaveRuntime, FH_EnterRuntime,
                            FH_ReverseEnterRuntime, FH_ReverseLeaveRuntime)

fasthost_import()

def nested(size_t outer, size_t inner):
    cdef int results[4]
    with nogil:
        results[0] = FH_LeaveRuntime(outer)
        results[1] = FH_ReverseEnterRuntime()
        results[2] = FH_ReverseLeaveRuntime()
        results[3] = FH_EnterRuntime()
    return [results[i] for i in range(4)]
"""

SETUP = """
import os
import fasthost
from Cython.Build import cythonize
from setuptools import Extension, setup

package_root = os.path.dirname(os.path.dirname(fasthost.__file__))
setup(
    name="capi_user",
    ext_modules=cythonize(
        [Extension("capi_user", ["capi_user.pyx"], include_dirs=[fasthost.get_include()])],
        include_path=[package_root],
        compiler_directives={"language_level": 3},
    ),
)
"""

USE = """
import fasthost, capi_user
fasthost.start(clock="monotonic")
print(capi_user.nested(0x1234, 0x5678))
snap = fasthost.snapshot()
fasthost.stop()
print(snap.totals["calls"], [hex(t) for t in snap.thread_targets["target"]])
print(fasthost.HResult.from_int32(capi_user.nested(1, 2)[0]).name)
"""


@pytest.fixture(scope="module")
def built_extension(tmp_path_factory):
    folder = tmp_path_factory.mktemp("capi_user")
    (folder / "capi_user.pyx").write_text(EXTENSION)
    (folder / "setup.py").write_text(SETUP)
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


def test_header_is_found_with_get_include():
    assert (Path(fasthost.get_include()) / "fasthost.h").is_file()


def test_extension_built_against_the_c_api_records_through_it(built_extension):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(USE)], cwd=built_extension, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    results, totals, last = proc.stdout.strip().splitlines()
    assert results == "[0, 0, 0, 0]"
    assert totals == "{'leave': 1, 'enter': 1, 'reverse_leave': 1, 'reverse_enter': 1} ['0x1234']"
    assert last == "HOST_E_CLRNOTAVAILABLE"  # stopped: the C API says so too
