"""bench's own extension: the C that fasthost is measured against.

bench/_native.pyx and bench/_native.h (the minimal recorder, the shared-state
recorders, the C loops) are not part of the package: :func:`load` builds them
on first use, against fasthost's public header and the core's small headers
from the source tree, with the flags of setup.py's release profile, into
bench/build/ (one folder per set of sources, flags and interpreter), and
imports the result. Needs Cython, setuptools and a C compiler (the `bench`
extra brings the first two).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

import fasthost

HERE = Path(__file__).resolve().parent
CORE = HERE.parent / "src" / "fasthost" / "core"
NAME = "_fasthost_bench_native"
SOURCES = [HERE / "_native.pyx", HERE / "_native.h"] + [
    CORE / name for name in ("fh_clock.h", "fh_histogram.h", "fh_platform.h")
]
# As setup.py's release profile: the minimal recorder is compiled as the core is.
CFLAGS = ["-fvisibility=hidden", "-std=gnu11", "-O2"]
DIRECTIVES = {"boundscheck": False, "wraparound": False, "initializedcheck": False, "cdivision": True}

BUILD = """
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup

name, pyx, cflags, directives, include_dirs = {args!r}
setup(
    name=name,
    script_args=["build_ext", "--inplace"],
    ext_modules=cythonize(
        [Extension(name, [pyx], include_dirs=include_dirs, extra_compile_args=cflags, libraries=["pthread"])],
        compiler_directives={{"language_level": 3, **directives}},
        quiet=True,
    ),
)
"""

_module: ModuleType | None = None


def _key() -> str:
    digest = hashlib.sha256()
    for path in [*SOURCES, Path(fasthost.get_include()) / "fasthost.h"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(repr((CFLAGS, DIRECTIVES, sys.version, sysconfig.get_platform())).encode())
    return digest.hexdigest()[:16]


def _build(folder: Path) -> None:
    """Builds the extension into `folder`, through a scratch folder next to
    it so that processes building at once never see half a build."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tmp-", dir=folder.parent))
    try:
        shutil.copy2(HERE / "_native.pyx", scratch / f"{NAME}.pyx")
        args = (NAME, f"{NAME}.pyx", CFLAGS, DIRECTIVES, [str(HERE), fasthost.get_include(), str(CORE)])
        proc = subprocess.run(
            [sys.executable, "-c", BUILD.format(args=args)], cwd=scratch, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"could not build bench/_native.pyx:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        try:
            os.replace(scratch, folder)
        except OSError:
            if not folder.is_dir():  # not another process's finished build
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load() -> ModuleType:
    """bench's extension module, built first if need be."""
    global _module
    if _module is None:
        if not CORE.is_dir():
            raise RuntimeError(f"bench/ needs fasthost's source tree ({CORE} is missing)")
        folder = HERE / "build" / _key()
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        if not (folder / f"{NAME}{suffix}").is_file():
            _build(folder)
        spec = importlib.util.spec_from_file_location(NAME, folder / f"{NAME}{suffix}")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {folder}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _module = sys.modules[NAME] = module
    return _module
