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
from setuptools.command.build_py import build_py

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


# fasthost-follow.pth goes beside the package, in site-packages itself, where
# Python runs it at start-up: with FASTHOST_FOLLOW set (by `fasthost run`), a
# Python child process records (see fasthost/follow.py). pytest-cov ships its
# .pth the same way.
FOLLOW_PTH = "fasthost-follow.pth"


class BuildWithFollowPth(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join("src", FOLLOW_PTH), os.path.join(self.build_lib, FOLLOW_PTH))

    def get_outputs(self, include_bytecode=1):
        # What an editable install links or copies: the .pth too.
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, FOLLOW_PTH)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[os.path.join(self.build_lib, FOLLOW_PTH)] = os.path.join("src", FOLLOW_PTH)
        return mapping


class _PthToo:
    """An editable wheel's strategy that also writes the .pth (an editable
    install puts no file of build_lib's into site-packages itself)."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        with open(os.path.join("src", FOLLOW_PTH)) as f:
            wheel.writestr(FOLLOW_PTH, f.read())


COMMANDS = {"build_py": BuildWithFollowPth}
try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools without PEP 660: no editable wheels to make
    pass
else:

    class EditableWithFollowPth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _PthToo(super()._select_strategy(*args, **kwargs))

    COMMANDS["editable_wheel"] = EditableWithFollowPth


setup(
    cmdclass=COMMANDS,
    ext_modules=cythonize(
        [extension("_core"), extension("_testing")],
        compiler_directives={"language_level": 3, **(DEBUG_DIRECTIVES if DEBUG else RELEASE_DIRECTIVES)},
        include_path=[os.path.join("src")],
    ),
)
