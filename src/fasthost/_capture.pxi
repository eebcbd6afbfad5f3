# The capture adapters' native side, compiled into fasthost._core (included
# by _core.pyx) so that the hook and the call slots reach the core's inline
# transitions directly. The Python-facing adapters are fasthost.ctypes,
# fasthost.cffi and fasthost.builtins.

from cpython.object cimport PyObject, PyTypeObject

cdef extern from "fh_capture.h":
    ctypedef struct PyInterpreterState:
        pass
    ctypedef void *Py_tracefunc
    ctypedef struct PyThreadState:
        Py_tracefunc c_profilefunc
        PyObject *c_profileobj
        PyInterpreterState *interp
    PyThreadState *PyThreadState_Get()
    PyThreadState *PyInterpreterState_ThreadHead(PyInterpreterState *interp)
    PyThreadState *PyThreadState_Next(PyThreadState *tstate)
    unsigned long long PyThreadState_GetID(PyThreadState *tstate)

    int fh_ctypes_instrument_type(PyTypeObject *type, PyTypeObject *cfuncptr) except -1
    size_t fh_ctypes_address(object funcptr)
    int fh_hook_init()
    int fh_hook_installed(PyThreadState *tstate)
    int fh_set_profile(PyThreadState *tstate, Py_tracefunc func, PyObject *obj) except -1
    int fh_set_profile_all(Py_tracefunc func, PyObject *obj) except -1
    Py_tracefunc FH_PROFILE_HOOK
    bint FH_PER_THREAD_PROFILE


# ---- ctypes -----------------------------------------------------------------

def _ctypes_instrument_type(cls, cfuncptr):
    """Gives `cls`, a heap subclass of `cfuncptr` (_ctypes.CFuncPtr), the
    call slot that brackets every call with leave/enter on the function's
    address. Raises TypeError for any other class."""
    if not isinstance(cls, type) or not isinstance(cfuncptr, type):
        raise TypeError("_ctypes_instrument_type needs two classes")
    fh_ctypes_instrument_type(<PyTypeObject *>cls, <PyTypeObject *>cfuncptr)


def _ctypes_address(funcptr):
    """The C address a ctypes function pointer calls (what instrumented calls
    record as their target)."""
    return fh_ctypes_address(funcptr)


# ---- callables that open a frame around another callable ----------------------

@cython.final
cdef class ManagedCall:
    """Calls ``function`` inside a managed (M) frame: reverse_enter_runtime()
    before, reverse_leave_runtime() after, also when it raises. What native
    code calls back into, e.g. the Python side of a ctypes callback."""
    cdef readonly object function

    def __cinit__(self, function):
        if not callable(function):
            raise TypeError(f"ManagedCall needs a callable, not {type(function).__name__}")
        self.function = function

    def __call__(self, *args, **kwargs):
        cdef bint opened = fh_reverse_enter_runtime() == FH_OK
        try:
            return self.function(*args, **kwargs)
        finally:
            if opened:
                fh_reverse_leave_runtime()

    def __repr__(self):
        return f"<fasthost callback frame around {self.function!r}>"


@cython.final
cdef class UnmanagedCall:
    """Calls ``function`` inside an unmanaged (U) frame with ``target`` (the
    C address it reaches): leave_runtime(target) before, enter_runtime()
    after, also when it raises. What fasthost.cffi puts in front of a
    library's functions."""
    cdef readonly object function
    cdef readonly size_t target

    def __cinit__(self, function, target):
        if not callable(function):
            raise TypeError(f"UnmanagedCall needs a callable, not {type(function).__name__}")
        self.function = function
        self.target = _as_target(target)

    def __call__(self, *args, **kwargs):
        cdef bint opened = fh_leave_runtime(self.target) == FH_OK
        try:
            return self.function(*args, **kwargs)
        finally:
            if opened:
                fh_enter_runtime()

    def __repr__(self):
        return f"<fasthost unmanaged frame (0x{self.target:x}) around {self.function!r}>"


# ---- builtins: the C-level profile hook -------------------------------------------

if fh_hook_init() != 0:
    raise ImportError("fasthost: could not find its own code segment (dl_iterate_phdr)")
cdef dict _saved_profile_hooks = None            # (tstate address, thread id) -> (func, obj)


def _builtins_hook_install():
    """Installs the C profile hook on every thread of this interpreter,
    remembering each thread's previous hook. Threads started later install
    it themselves (fasthost.builtins passes _builtins_hook_thread_start to
    threading.setprofile)."""
    global _saved_profile_hooks
    if _saved_profile_hooks is not None:
        raise RuntimeError("the builtins profile hook is already installed")
    saved = {}
    cdef PyThreadState *tstate = PyInterpreterState_ThreadHead(PyThreadState_Get().interp)
    while tstate != NULL:
        previous = None if tstate.c_profileobj == NULL else <object>tstate.c_profileobj
        saved[(<size_t>tstate, PyThreadState_GetID(tstate))] = (<size_t>tstate.c_profilefunc, previous)
        tstate = PyThreadState_Next(tstate)
    _saved_profile_hooks = saved
    fh_set_profile_all(FH_PROFILE_HOOK, NULL)


def _builtins_hook_thread_start(frame, event, arg):
    """threading.setprofile() target: on a new thread's first event, swaps
    this Python-level hook for the C one."""
    fh_set_profile(PyThreadState_Get(), FH_PROFILE_HOOK, NULL)


def _builtins_hook_remove():
    """Removes the C profile hook from every thread that has it, giving back
    the hook each thread had before (where the Python version allows it per
    thread; otherwise only the calling thread's)."""
    global _saved_profile_hooks
    saved = _saved_profile_hooks
    if saved is None:
        return
    _saved_profile_hooks = None
    cdef PyThreadState *tstate
    cdef PyThreadState *current = PyThreadState_Get()
    cdef size_t func
    if not FH_PER_THREAD_PROFILE:
        fh_set_profile_all(NULL, NULL)
        func, previous = saved.get((<size_t>current, PyThreadState_GetID(current)), (0, None))
        fh_set_profile(current, <Py_tracefunc>func, <PyObject *>previous if previous is not None else NULL)
        return
    tstate = PyInterpreterState_ThreadHead(current.interp)
    while tstate != NULL:
        if fh_hook_installed(tstate):
            func, previous = saved.get((<size_t>tstate, PyThreadState_GetID(tstate)), (0, None))
            fh_set_profile(tstate, <Py_tracefunc>func, <PyObject *>previous if previous is not None else NULL)
        tstate = PyThreadState_Next(tstate)


def _builtins_hook_installed():
    """True when the calling thread's profile hook is fasthost's."""
    return bool(fh_hook_installed(PyThreadState_Get()))
