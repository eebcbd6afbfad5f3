"""Builds fasthost's Cython extensions.

FASTHOST_DEBUG=1 builds the debug profile: every Cython check on (bounds,
negative indices, integer overflow) and the core's C asserts enabled
(-UNDEBUG -O1 -g); .ci/debug-build runs the core's tests against it. The
default is the release profile: those checks off, NDEBUG defined. A build
that cannot compile the extensions fails: there is no pure-Python fallback.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTHOST_DEBUG", "") not in ("", "0")

# The profile decides these; a .pyx overrides one only where its code relies
# on it (histogram_add's 128-bit sum wraps on purpose: no overflowcheck).
RELEASE_DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "overflowcheck": False,
    "initializedcheck": False,
    "cdivision": True,
}
DEBUG_DIRECTIVES = {
    "boundscheck": True,
    "wraparound": True,
    "overflowcheck": True,
    "initializedcheck": True,
    "cdivision": False,
}

PKG = os.path.join("src", "fasthost")
INCLUDE_DIRS = [os.path.join(PKG, folder) for folder in ("core", "capture", "include")]
CFLAGS = ["-fvisibility=hidden", "-std=gnu11"]
# NDEBUG explicitly in release (Python's own CFLAGS usually have it too): the
# core's assert()s cost nothing there. FASTHOST_DEBUG=1 is _core._DEBUG_BUILD.
CFLAGS += ["-UNDEBUG", "-DFASTHOST_DEBUG=1", "-O1", "-g"] if DEBUG else ["-DNDEBUG", "-O2"]


def extension(name):
    return Extension(
        f"fasthost.{name}",
        [os.path.join(PKG, f"{name}.pyx")],
        include_dirs=INCLUDE_DIRS,
        extra_compile_args=CFLAGS,
        libraries=["pthread"],
    )


setup(
    ext_modules=cythonize(
        [extension("_core"), extension("_testing")],
        compiler_directives={"language_level": 3, **(DEBUG_DIRECTIVES if DEBUG else RELEASE_DIRECTIVES)},
        include_path=[os.path.join("src")],
    ),
)
