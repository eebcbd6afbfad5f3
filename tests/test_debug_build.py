"""The build profile is the one asked for (setup.py: FASTHOST_DEBUG=1 is the
debug profile, anything else the release one). .ci/debug-build runs this
file with FASTHOST_DEBUG=1 set against a debug build; the ordinary suite
runs it against the release build."""

import os

from fasthost import _core

DEBUG_ASKED = os.environ.get("FASTHOST_DEBUG", "") not in ("", "0")


def test_the_build_profile_is_the_one_asked_for():
    assert _core._DEBUG_BUILD is DEBUG_ASKED, (
        f"fasthost._core is a {'debug' if _core._DEBUG_BUILD else 'release'} build, but FASTHOST_DEBUG="
        f"{os.environ.get('FASTHOST_DEBUG', '')!r}: rebuild it (pip install .) with the same FASTHOST_DEBUG"
    )


def test_the_core_asserts_are_on_in_the_debug_profile_only():
    # Release builds define NDEBUG, so the asserts in core/fh_runtime.h cost
    # nothing on the hot path; the debug profile undefines it.
    assert _core._ASSERTS is _core._DEBUG_BUILD
