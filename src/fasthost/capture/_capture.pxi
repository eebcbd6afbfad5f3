# The capture adapters' native side, compiled into fasthost._core (included
# by _core.pyx) so that the hook and the call slots reach the core's inline
# transitions directly. The Python-facing adapters are fasthost.ctypes,
# fasthost.cffi and fasthost.capture.builtins.

import sys
import types

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

    ctypedef struct PyFrameObject:
        pass
    uint64_t fh_hook_generation
    int fh_hook_active
    int fh_hook_setting
    uint64_t fh_hook_thread_generation
    int (*fh_hook_slow)(int what, PyFrameObject *frame, PyObject *arg) noexcept
    int fh_hook_dispatch(int what, PyFrameObject *frame, PyObject *arg) noexcept
    int fh_hook_drain(int what, PyFrameObject *frame, PyObject *arg) noexcept
    uint32_t fh_hook_open_count() noexcept
    uint64_t fh_hook_abandon_all() noexcept
    uint64_t fh_adapter_open_unmanaged(uint64_t target) noexcept nogil
    uint64_t fh_adapter_open_managed() noexcept nogil
    void fh_adapter_close_unmanaged(uint64_t position) noexcept nogil
    void fh_adapter_close_managed(uint64_t position) noexcept nogil
    int fh_hook_audit_once() except -1

    int fh_sites_on
    int fh_hook_paused
    PyObject *fh_site_codes
    PyObject *fh_target_objects
    uint64_t fh_site_codes_age
    ctypedef struct PyCodeObject:
        pass
    int PyCode_Addr2Line(PyCodeObject *code, int offset)

    int fh_ctypes_instrument_type(PyTypeObject *type, PyTypeObject *cfuncptr) except -1
    size_t fh_ctypes_address(object funcptr)
    int fh_hook_init()
    int fh_hook_installed(PyThreadState *tstate)
    int fh_set_own_profile(Py_tracefunc func, PyObject *obj) except -1
    int fh_set_profile_all(Py_tracefunc func, PyObject *obj) except -1
    Py_tracefunc FH_PROFILE_HOOK


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
        if fh_hook_active and not fh_hook_installed(PyThreadState_Get()):
            # A thread Python did not create, calling back into Python (a
            # ctypes callback from a native pthread gets a fresh thread
            # state each time): the builtins it calls are captured too.
            fh_set_own_profile(FH_PROFILE_HOOK, NULL)
        cdef uint64_t position = fh_adapter_open_managed()
        try:
            return self.function(*args, **kwargs)
        finally:
            fh_adapter_close_managed(position)

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
        cdef uint64_t position = fh_adapter_open_unmanaged(self.target)
        try:
            return self.function(*args, **kwargs)
        finally:
            fh_adapter_close_unmanaged(position)

    def __repr__(self):
        return f"<fasthost unmanaged frame (0x{self.target:x}) around {self.function!r}>"


# ---- builtins: the C-level profile hook -------------------------------------------

if fh_hook_init() != 0:
    raise ImportError("fasthost: could not find its own code segment (dl_iterate_phdr)")

# Each thread's profile hook from before fasthost's, by (tstate address,
# thread id), kept until that thread gets it back: at stop() for the calling
# thread with no frame pending, later for the others (by the thread itself,
# see _hook_slow).
cdef dict _saved_profile_hooks = {}
# Threads whose hook was already fasthost's (still draining) when the
# current capture was installed: their pending frames are still theirs.
cdef set _continuing_threads = set()
# What a thread started during the capture had before: threading's hook
# (threading.setprofile) as it was when the capture was installed. Such
# threads are not in _saved_profile_hooks, so threads that come and go
# during a long capture leave nothing behind.
_threading_previous = None


cdef tuple _thread_key(PyThreadState *tstate):
    return (<size_t>tstate, PyThreadState_GetID(tstate))


cdef int _give_back_hook(PyThreadState *tstate) except -1:
    """Puts back the hook `tstate`, the calling thread, had before fasthost's:
    the one saved at install, or threading's for a thread started since."""
    global fh_hook_setting
    func, previous, python_hook = _saved_profile_hooks.pop(_thread_key(tstate), (0, None, _threading_previous))
    fh_set_own_profile(<Py_tracefunc><size_t>func, <PyObject *>previous if previous is not None else NULL)
    if python_hook is not None:  # a Python-level hook: set the way Python sets it
        fh_hook_setting = 1
        try:
            sys.setprofile(python_hook)
        finally:
            fh_hook_setting = 0
    return 0


cdef int _hook_slow(int what, PyFrameObject *frame, PyObject *arg) noexcept:
    """The hook's path for a thread's first event under a new capture, and
    for every event once the capture has ended (draining)."""
    global fh_hook_thread_generation
    cdef PyThreadState *tstate = PyThreadState_Get()
    if fh_hook_thread_generation != fh_hook_generation:
        # Frames this thread's hook opened under an earlier capture are still
        # its own only if the hook stayed installed in between; if another
        # hook came and went without telling (set from another thread in C),
        # their returns went elsewhere.
        if <size_t>tstate not in _continuing_threads:
            fh_hook_abandon_all()
        fh_hook_thread_generation = fh_hook_generation
    if fh_hook_active:
        return fh_hook_dispatch(what, frame, arg)
    fh_hook_drain(what, frame, arg)
    if fh_hook_open_count() == 0:
        try:
            _give_back_hook(tstate)
        except BaseException as error:  # a profile hook must not raise
            sys.unraisablehook(sys.UnraisableHookArgs(type(error), error, error.__traceback__, None, "fasthost hook"))
    return 0


fh_hook_slow = _hook_slow


def _builtins_hook_install(threading_previous=None):
    """Installs the C profile hook on every thread of this interpreter,
    remembering each thread's previous hook. A thread whose hook is still
    fasthost's (draining a frame from the last capture) keeps its frames and
    its first saved hook. Threads started later install the hook themselves
    (fasthost.capture.builtins passes _builtins_hook_thread_start to
    threading.setprofile, and what threading had before as
    ``threading_previous``, which those threads get back)."""
    global _saved_profile_hooks, _continuing_threads, fh_hook_generation, fh_hook_active, _threading_previous
    if fh_hook_active:
        raise RuntimeError("the builtins profile hook is already installed")
    fh_hook_audit_once()
    saved = {}
    continuing = set()
    cdef PyThreadState *tstate = PyInterpreterState_ThreadHead(PyThreadState_Get().interp)
    while tstate != NULL:
        key = _thread_key(tstate)
        if fh_hook_installed(tstate):
            continuing.add(<size_t>tstate)
            # Started during the last capture if not saved: threading's hook.
            saved[key] = _saved_profile_hooks.get(key, (0, None, _threading_previous))
        else:
            previous = None if tstate.c_profileobj == NULL else <object>tstate.c_profileobj
            saved[key] = (<size_t>tstate.c_profilefunc, previous, None)
        tstate = PyThreadState_Next(tstate)
    _saved_profile_hooks = saved  # threads that ended are forgotten here
    _continuing_threads = continuing
    _threading_previous = threading_previous
    fh_hook_generation += 1
    fh_hook_active = 1
    fh_set_profile_all(FH_PROFILE_HOOK, NULL)


def _builtins_hook_thread_start(frame, event, arg):
    """threading.setprofile() target: on a new thread's first event, swaps
    this Python-level hook for the C one."""
    fh_set_own_profile(FH_PROFILE_HOOK, NULL)  # gives back threading's hook (_give_back_hook)


def _builtins_hook_remove():
    """Ends the capture. Every thread gets back the hook it had before: the
    calling thread at once if its hook has no frame pending; every other
    thread on its next event, or, if it is inside a builtin, once that
    builtin returns and its frame is closed (the hook drains meanwhile)."""
    global fh_hook_active
    if not fh_hook_active:
        return
    fh_hook_active = 0
    cdef PyThreadState *current = PyThreadState_Get()
    if fh_hook_thread_generation != fh_hook_generation and <size_t>current not in _continuing_threads:
        fh_hook_abandon_all()  # left over from a hook that went without telling
    if not fh_hook_installed(current):
        # Another profiler took this thread's hook inside the capture; the
        # audit hook abandoned the frames open then.
        _saved_profile_hooks.pop(_thread_key(current), None)
    elif fh_hook_open_count() == 0:
        _give_back_hook(current)
    # Other threads put their hook back themselves on their next event
    # (_hook_slow): only then is it known whether a frame is pending.


def _builtins_hook_installed():
    """True when the calling thread's profile hook is fasthost's."""
    return bool(fh_hook_installed(PyThreadState_Get()))


def _hook_open_count():
    """Entries on the calling thread's hook stack: the frames its captures
    opened and the placeholders between them (tests)."""
    return fh_hook_open_count()


def _builtins_hook_saved_count():
    """How many threads' previous hooks the profile hook keeps (tests)."""
    return len(_saved_profile_hooks)



# ---- call sites -------------------------------------------------------------------

# The code objects call sites were recorded in, by address, alive as long
# as the session's data (emptied by start() and reset()): an address in the
# core's site records always names the same code.
_site_codes = {}
fh_site_codes = <PyObject *>_site_codes
# Likewise the objects whose address is a target (ufuncs, numpy's array
# functions, C types, seen by sys.monitoring): a freed one's address would
# pass, with its calls, to the next object made there.
_target_objects = {}
fh_target_objects = <PyObject *>_target_objects


def _sites_enable(on):
    """Whether the captures record the call site of each U frame."""
    global fh_sites_on
    fh_sites_on = 1 if on else 0


def _site_codes_clear():
    """Forgets the code objects and the target objects (a new session: no
    record refers to them)."""
    global fh_site_codes_age
    _site_codes.clear()
    _target_objects.clear()
    fh_site_codes_age += 1


def _site_code_objects():
    """Address -> code object, for every code a call site was recorded in."""
    return dict(_site_codes)


def _pause():
    """Stops the captures recording this thread's calls (fasthost's own
    work: a snapshot, a report) until ``_resume``; returns what to pass it."""
    global fh_hook_paused
    outer = fh_hook_paused
    fh_hook_paused = 1
    return outer


def _resume(int outer):
    """Undoes ``_pause`` (given what it returned)."""
    global fh_hook_paused
    fh_hook_paused = outer


def _code_line(code, int offset):
    """The source line of the instruction at byte ``offset`` in ``code``."""
    if not isinstance(code, types.CodeType):
        raise TypeError(f"_code_line needs a code object, not {type(code).__name__}")
    return PyCode_Addr2Line(<PyCodeObject *><PyObject *>code, offset)
