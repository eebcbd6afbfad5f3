"""Builds fasthost's Cython extensions.

FASTHOST_DEBUG=1 builds with every Cython check on and assertions enabled
(-UNDEBUG -O1 -g), for debugging; the default is the release profile. A build
that cannot compile the extensions fails: there is no pure-Python fallback.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTHOST_DEBUG", "") not in ("", "0")

RELEASE_DIRECTIVES = {
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
}
DEBUG_DIRECTIVES = {
    "boundscheck": True,
    "wraparound": True,
    "initializedcheck": True,
    "cdivision": False,
}

PKG = os.path.join("src", "fasthost")
INCLUDE_DIRS = [os.path.join(PKG, folder) for folder in ("core", "capture", "include")]
CFLAGS = ["-fvisibility=hidden", "-std=gnu11"]
CFLAGS += ["-UNDEBUG", "-O1", "-g"] if DEBUG else ["-O2"]


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
