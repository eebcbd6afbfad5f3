"""What the sdist and the wheel carry.

The wheel holds the package's Python modules, its two compiled modules, the
stubs, py.typed, and the C API for third-party extensions (capi.pxd and the
header that fasthost.get_include() points at); never the build's sources.
The sdist holds everything that builds and tests the project.

Both are built once per session from a copy of the source tree next to the
tests (python -m build without isolation: the sdist, then the wheel from it),
about 20 s on two cores.
"""

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "fasthost"

# Everything the wheel may hold under fasthost/, besides the Python modules.
WHEEL_EXTRAS = {"py.typed", "_core.pyi", "_testing.pyi", "capi.pxd", "include/fasthost.h", "export/report.html"}
EXTENSIONS = ("_core", "_testing")
BUILD_SOURCES = re.compile(r"\.(c|h|pyx|pxi|pxd)$")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel member names, sdist member names relative to its top folder)."""
    if not (ROOT / "pyproject.toml").is_file() or not PKG.is_dir():
        pytest.skip("no source tree next to the tests")
    pytest.importorskip("build", reason="the packaging test needs `build` (in the [test] extra)")
    tree = tmp_path_factory.mktemp("tree")
    junk = shutil.ignore_patterns(
        # Cython's annotation pages (cython -a), not the HTML report's page
        "__pycache__",
        "*.py[cod]",
        "*.so",
        "*.egg-info",
        "build",
        "_core.c",
        "_testing.c",
        "_core.html",
        "_testing.html",
    )
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for name in ("src", "tests", "examples", "bench", "docs"):
        shutil.copytree(ROOT / name, tree / name, ignore=junk)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = set(zf.namelist())
    with tarfile.open(sdist) as tf:
        sdist_names = {m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()}
    return wheel_names, sdist_names


def package_files(wheel_names):
    return {name[len("fasthost/") :] for name in wheel_names if name.startswith("fasthost/")}


def test_wheel_holds_only_what_belongs_in_a_package(dists):
    files = package_files(dists[0])
    compiled = {f for f in files if f.endswith(".so")}
    unexpected = {f for f in files - compiled - WHEEL_EXTRAS if not f.endswith(".py")}
    assert not unexpected, f"not for the wheel: {sorted(unexpected)}"
    sources = {f for f in files - WHEEL_EXTRAS if BUILD_SOURCES.search(f)}
    assert not sources, f"build sources in the wheel: {sorted(sources)}"
    assert {f.split(".", 1)[0] for f in compiled} == set(EXTENSIONS)
    assert files >= WHEEL_EXTRAS


def test_wheel_holds_every_python_module(dists):
    modules = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= package_files(dists[0])


def test_wheel_puts_the_follow_hook_in_site_packages(dists):
    """``run`` makes Python child processes record through this .pth,
    which only works at the top of site-packages."""
    assert "fasthost-follow.pth" in dists[0]
    assert "src/fasthost-follow.pth" in dists[1]


def test_wheel_has_the_license(dists):
    assert any(re.fullmatch(r"fasthost-[^/]+\.dist-info/(licenses/)?LICENSE", name) for name in dists[0])


def test_public_header_stands_alone():
    """fasthost.h includes only system headers, so the wheel needs no other."""
    text = (PKG / "include" / "fasthost.h").read_text()
    assert re.findall(r'#\s*include\s*"', text) == []
    pxd = (PKG / "capi.pxd").read_text()
    assert set(re.findall(r'cdef extern from "([^"]+)"', pxd)) == {"fasthost.h"}


def test_sdist_builds_and_tests_the_project(dists):
    names = dists[1]
    for needed in (
        "LICENSE",
        "README.md",
        "setup.py",
        "pyproject.toml",
        "src/fasthost/_core.pyx",
        "src/fasthost/_testing.pyx",
        "src/fasthost/_testing_native.h",
        "src/fasthost/export/report.html",
        "src/fasthost/core/fh_runtime.h",
        "src/fasthost/capture/fh_capture.h",
        "tests/conftest.py",
        "tests/test_packaging.py",
        "tests/sanitizers/run.sh",
        "tests/sanitizers/stress.c",
        "tests/native/callers.c",
        "examples/qsort_callbacks.py",
        "bench/compare.py",
        "bench/native.py",
        "bench/_native.pyx",
        "bench/_native.h",
        "docs/protocol.md",
    ):
        assert needed in names, needed
    generated = {
        n for n in names if n.endswith((".so", ".pyc")) or n in ("src/fasthost/_core.c", "src/fasthost/_testing.c")
    }
    assert not generated, sorted(generated)
