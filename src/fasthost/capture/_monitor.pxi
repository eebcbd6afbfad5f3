# The native capture's sys.monitoring side (Python 3.12+), compiled into
# fasthost._core (included by _core.pyx after capture/_capture.pxi). The callbacks
# are C functions (capture/fh_monitor.h); this file only picks a tool id,
# registers them and gives the id back. fasthost.capture.native is the Python face.

cdef extern from "fh_monitor.h":
    int FH_HAVE_MONITORING
    int FH_MON_BUILTINS
    int FH_MON_NATIVE
    int fh_mon_mode
    PyObject *fh_mon_drained
    PyTypeObject *fh_mon_cfuncptr
    PyTypeObject *fh_mon_ufunc
    PyTypeObject *fh_mon_cffi_cdata
    int fh_mon_call_function_ex
    ctypedef void (*destructor)(PyObject *)
    ctypedef struct PyTypeObjectDealloc "PyTypeObject":
        destructor tp_dealloc
    ctypedef struct PyTypeObjectCall "PyTypeObject":
        void *tp_call
    destructor fh_mon_subtype_dealloc
    object fh_mon_callback(int i)
    int fh_hook_all_closed()
    size_t fh_mon_target(object callable, int mode)

from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.type cimport PyType_Check

MONITORING = bool(FH_HAVE_MONITORING)

# Tool ids fasthost may take: PEP 669 gives 0 to debuggers, 1 to coverage,
# 2 to profilers (cProfile) and 5 to optimizers; 3 and 4 are nobody's.
_TOOL_IDS = (3, 4)
_tool_id = None  # held from install until the last frame closes after remove
_TOOL_NAME = "fasthost"


class _PythonClass:
    pass


fh_mon_subtype_dealloc = (<PyTypeObjectDealloc *><PyObject *>_PythonClass).tp_dealloc
fh_mon_ufunc = <PyTypeObject *>np.ufunc
import _ctypes

fh_mon_cfuncptr = <PyTypeObject *>_ctypes.CFuncPtr
try:
    import _cffi_backend
except ImportError:  # cffi is optional
    _cffi_backend = None
else:
    fh_mon_cffi_cdata = <PyTypeObject *>_cffi_backend._CDataBase


def _type_call_target(cls):
    """The C function that calling an instance of the class ``cls`` runs,
    or 0. Raises TypeError for anything but a class."""
    if not PyType_Check(cls):
        raise TypeError(f"_type_call_target needs a class, not {type(cls).__name__}")
    return <size_t>(<PyTypeObjectCall *><PyObject *>cls).tp_call


def _callable_target(callable):
    """The target address a native capture records for a call of
    ``callable``, or 0 when such a call is no U frame (Python functions and
    classes, fasthost's own functions)."""
    return fh_mon_target(callable, FH_MON_NATIVE)


def _monitor_events():
    events = sys.monitoring.events
    return (
        (events.CALL, 0),
        (events.C_RETURN, 1), (events.C_RAISE, 1),
        (events.PY_START, 2), (events.PY_RESUME, 2), (events.PY_THROW, 2),
        (events.PY_RETURN, 3), (events.PY_YIELD, 3), (events.PY_UNWIND, 3),
    )


def _monitor_install(native):
    """Registers the C callbacks under a free sys.monitoring tool id and
    turns their events on: every call of a builtin (or, if ``native``, of
    anything that is not a Python function) is a U frame, every Python
    function started under one an M frame. Raises RuntimeError when no tool
    id is free, naming who holds them."""
    global _tool_id
    if not MONITORING:
        raise RuntimeError("sys.monitoring needs Python 3.12 or later")
    if fh_mon_mode:
        raise RuntimeError("the monitoring capture is already on")
    global fh_mon_call_function_ex
    import dis

    fh_mon_call_function_ex = dis.opmap.get("CALL_FUNCTION_EX", -1)
    monitoring = sys.monitoring
    if _tool_id is not None and monitoring.get_tool(_tool_id) != _TOOL_NAME:
        _tool_id = None  # freed by someone else while draining: not ours any more
    if _tool_id is None:  # else: still draining the last capture, same id
        for tool in _TOOL_IDS:
            if monitoring.get_tool(tool) is None:
                monitoring.use_tool_id(tool, _TOOL_NAME)
                _tool_id = tool
                break
        else:
            held = ", ".join(f"{t} by {monitoring.get_tool(t)!r}" for t in _TOOL_IDS)
            raise RuntimeError(f"no sys.monitoring tool id is free for fasthost (held: {held})")
        for event, which in _monitor_events():
            monitoring.register_callback(_tool_id, event, fh_mon_callback(which))
    _clear_drained()
    everything = 0
    for event, _ in _monitor_events():
        everything |= event
    global fh_mon_mode
    fh_mon_mode = FH_MON_NATIVE if native else FH_MON_BUILTINS
    monitoring.set_events(_tool_id, everything)


def _monitor_remove():
    """Ends the capture: nothing more is opened; the events stay on
    until every thread's open frames are closed, then the tool id is given
    back (at once if none is open)."""
    global fh_mon_mode, fh_mon_drained, _tool_id
    if not fh_mon_mode:
        return
    fh_mon_mode = 0
    if sys.monitoring.get_tool(_tool_id) != _TOOL_NAME:
        # Freed by someone else mid-capture: no event reaches fasthost any
        # more, so this thread's open frames are given up (another thread's
        # stay open until it ends), and the id is left to its new owner.
        fh_hook_abandon_all()
        _tool_id = None
        return
    # Every event stays on while frames drain: C_RETURN and C_RAISE only
    # come with CALL, and a Python function started inside a draining call
    # gets a placeholder at its PY_START (a capture started again before it
    # returns would take its return for its caller's). They open nothing.
    if fh_hook_all_closed():
        _monitor_release()
    else:
        _clear_drained()
        release = _monitor_release
        Py_INCREF(release)
        fh_mon_drained = <PyObject *>release


cdef _clear_drained():
    global fh_mon_drained
    if fh_mon_drained != NULL:
        Py_DECREF(<object>fh_mon_drained)
        fh_mon_drained = NULL


def _monitor_release():
    """Turns every event off and gives the tool id back."""
    global _tool_id
    if _tool_id is None or fh_mon_mode:
        return
    monitoring = sys.monitoring
    if monitoring.get_tool(_tool_id) != _TOOL_NAME:
        _tool_id = None  # not ours any more: leave it alone
        return
    monitoring.set_events(_tool_id, 0)
    for event, _ in _monitor_events():
        monitoring.register_callback(_tool_id, event, None)
    monitoring.free_tool_id(_tool_id)
    _tool_id = None


def _monitor_tool_id():
    """The sys.monitoring tool id fasthost holds, or None."""
    return _tool_id
