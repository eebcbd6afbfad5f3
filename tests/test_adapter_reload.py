"""fasthost.ctypes and fasthost.cffi are the adapters' very modules
(fasthost.capture.*): importing, reloading and pickling them behave as the
modules of those names did. Each case runs in its own interpreter, since a
reload makes new classes that other tests hold the old ones of."""

import subprocess
import sys
import textwrap

PRELUDE = """
import ctypes, ctypes.util, importlib, pickle, sys
import fasthost

def libm():
    lib = ctypes.CDLL(ctypes.util.find_library("m"))
    lib.cos.argtypes = [ctypes.c_double]
    lib.cos.restype = ctypes.c_double
    return lib

def recorded(lib):
    fasthost.start()
    lib.cos(0.5)
    fasthost.stop()
    return fasthost.snapshot().totals["calls"]["leave"]
"""


def run(code):
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_every_spelling_of_the_import_is_one_module():
    run("""
        import fasthost.ctypes, fasthost.cffi
        from fasthost import ctypes as a, cffi as b
        import fasthost.capture.ctypes, fasthost.capture.cffi
        assert a is fasthost.ctypes is sys.modules["fasthost.ctypes"] is fasthost.capture.ctypes
        assert b is fasthost.cffi is sys.modules["fasthost.cffi"] is fasthost.capture.cffi
        assert pickle.loads(pickle.dumps(fasthost.ctypes.enable)) is fasthost.ctypes.enable
    """)


def test_reloading_the_ctypes_adapter_while_enabled_keeps_ctypes_working():
    # Before: the module run again took its own CDLL.__init__ replacement
    # for the original, so every later CDLL() recursed until RecursionError.
    out = run("""
        import fasthost.ctypes
        fasthost.ctypes.enable()
        before = recorded(libm())
        module = importlib.reload(fasthost.ctypes)
        assert module is fasthost.ctypes is sys.modules["fasthost.ctypes"]
        assert fasthost.ctypes.enabled()
        after = recorded(libm())  # a library loaded after the reload
        fasthost.ctypes.disable()
        assert not fasthost.ctypes.enabled()
        assert recorded(libm()) == 0
        print(before, after)
    """)
    assert out.split() == ["1", "1"]


def test_reloading_the_ctypes_adapter_while_disabled_changes_nothing():
    out = run("""
        import fasthost.ctypes
        original = ctypes.CDLL.__init__, ctypes.CFUNCTYPE
        importlib.reload(fasthost.ctypes)
        assert (ctypes.CDLL.__init__, ctypes.CFUNCTYPE) == original
        fasthost.ctypes.enable()
        n = recorded(libm())
        fasthost.ctypes.disable()
        assert (ctypes.CDLL.__init__, ctypes.CFUNCTYPE) == original
        print(n)
    """)
    assert out.split() == ["1"]
