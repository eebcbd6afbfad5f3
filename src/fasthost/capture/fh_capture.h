/* fh_capture.h -- the C side of fasthost's capture adapters.
 *
 * Included by fasthost._core right after fh_runtime.h, so the transitions
 * below are the core's inline functions, not calls through the C API table.
 * Unlike the core this file needs Python.h: it is the glue between the
 * interpreter's call paths and the protocol.
 *
 *   ctypes    a call slot for subclasses of a library's CFuncPtr type:
 *             leave(address) / CFuncPtr's own call / enter.
 *   builtins  a C-level profile hook (as cProfile's): every call of a
 *             builtin function from Python is a U frame whose target is
 *             the C function's address.
 *
 * Both pair every open with a close, as the CLR's stubs do: the core keeps
 * the nesting of opens it refused or did not record, so a close always pops
 * its own open and never the caller's frame.
 */
#ifndef FASTHOST_CAPTURE_H
#define FASTHOST_CAPTURE_H

#include <Python.h>
#include <link.h>
#include "fh_runtime.h"

/* ---- ctypes ---------------------------------------------------------------- */

/* The head of ctypes' CDataObject (Modules/_ctypes/ctypes.h), unchanged
 * since Python 2.5: after the object header, b_ptr points at the object's
 * value, which for a function pointer is the function's address. */
typedef struct {
    PyObject_HEAD
    char *b_ptr;
} fh_cdata_head;

static ternaryfunc fh_cfuncptr_call; /* _ctypes.CFuncPtr's own tp_call */

static PyObject *fh_ctypes_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    size_t target = (size_t) * (void **)((fh_cdata_head *)self)->b_ptr;
    fh_leave_runtime(target);
    /* Argument conversion, the foreign call and errcheck all happen in
     * here; a NULL result (an exception) still closes the frame, as the
     * CLR's stubs do when they unwind. */
    PyObject *result = fh_cfuncptr_call(self, args, kwargs);
    fh_enter_runtime();
    return result;
}

/* Gives `type` (a heap subclass of _ctypes.CFuncPtr) the bracketing call
 * slot. Instances keep CFuncPtr's layout, so they stay real function
 * pointers (argtypes, restype, errcheck, cast, passing as arguments). */
static int fh_ctypes_instrument_type(PyTypeObject *type, PyTypeObject *cfuncptr)
{
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || !PyType_IsSubtype(type, cfuncptr)) {
        PyErr_SetString(PyExc_TypeError, "fasthost: not a heap subclass of _ctypes.CFuncPtr");
        return -1;
    }
    if (cfuncptr->tp_call == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fasthost: _ctypes.CFuncPtr has no call slot");
        return -1;
    }
    fh_cfuncptr_call = cfuncptr->tp_call;
    type->tp_call = fh_ctypes_call;
#ifdef Py_TPFLAGS_HAVE_VECTORCALL
    /* A vectorcall entry point would bypass tp_call. */
    type->tp_flags &= ~Py_TPFLAGS_HAVE_VECTORCALL;
#endif
    PyType_Modified(type);
    return 0;
}

static inline size_t fh_ctypes_address(PyObject *funcptr)
{
    return (size_t) * (void **)((fh_cdata_head *)funcptr)->b_ptr;
}

/* ---- builtins: the profile hook -------------------------------------------- */

/* Each capture (install) has a generation. A thread remembers the
 * generation it last saw and how many frames its hook has opened and not
 * closed yet (`pending`), which is how a C_RETURN for a call that began
 * before the hook was installed is told apart (pending is 0) and how a
 * capture that ends while the thread is inside a builtin still closes that
 * frame: the hook stays on such a thread, draining (it opens nothing more),
 * until its pending frames are closed, then puts back the thread's own
 * previous hook. Everything unusual goes to fh_hook_slow, set by _core. */
static uint64_t fh_hook_generation;
static int fh_hook_active;
static FH_TLS uint64_t fh_hook_thread_generation;
static FH_TLS uint32_t fh_hook_pending;
/* While draining: builtins called since the capture ended, not opened, whose
 * returns must not close the pending frame beneath them. */
static FH_TLS uint32_t fh_hook_unopened;
static int (*fh_hook_slow)(int what, PyObject *arg);

/* fasthost's own builtins are not targets: recording leave_runtime as a U
 * frame around the U frame it opens would break the caller's nesting. They
 * are the functions in this module's executable segment. */
static uintptr_t fh_own_code_start, fh_own_code_end;

static int fh_find_own_code(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uintptr_t inside = (uintptr_t)data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type != PT_LOAD || !(segment->p_flags & PF_X))
            continue;
        uintptr_t start = info->dlpi_addr + segment->p_vaddr;
        if (inside >= start && inside < start + segment->p_memsz) {
            fh_own_code_start = start;
            fh_own_code_end = start + segment->p_memsz;
            return 1;
        }
    }
    return 0;
}

static inline int fh_hook_wants(PyObject *callable)
{
    /* The two exact types CPython reports C calls for (PyCFunction_Check
     * would call PyType_IsSubtype for the second, on every call). */
    if (!Py_IS_TYPE(callable, &PyCFunction_Type) && !Py_IS_TYPE(callable, &PyCMethod_Type))
        return 0;
    uintptr_t code = (uintptr_t)PyCFunction_GET_FUNCTION(callable);
    return code < fh_own_code_start || code >= fh_own_code_end;
}

/* The two halves of the hook are separate functions so that each saves
 * only the registers it needs; the hook itself only dispatches (two tail
 * calls). Every open is followed by its close: the core keeps the nesting
 * of opens it refuses (max_depth) or does not record (stopped). */
static FH_NOINLINE int fh_hook_call(PyObject *callable)
{
    if (!fh_hook_wants(callable))
        return 0;
    fh_leave_runtime((size_t)PyCFunction_GET_FUNCTION(callable));
    fh_hook_pending++;
    return 0;
}

static FH_NOINLINE int fh_hook_return(PyObject *callable)
{
    /* Nothing pending: a call that began before the hook was installed. */
    if (fh_hook_pending == 0 || !fh_hook_wants(callable))
        return 0;
    fh_hook_pending--;
    fh_enter_runtime();
    return 0;
}

/* The draining hook: pairs the calls it does not open with their returns,
 * and closes a pending frame only at its own return. */
static int fh_hook_drain(int what, PyObject *arg)
{
    /* Only C events carry the callable in `arg`. */
    int returns = what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION;
    if ((what != PyTrace_C_CALL && !returns) || !fh_hook_wants(arg))
        return 0;
    if (!returns)
        fh_hook_unopened++;
    else if (fh_hook_unopened > 0)
        fh_hook_unopened--;
    else
        fh_hook_return(arg);
    return 0;
}

static int fh_hook_dispatch(int what, PyObject *arg)
{
    if (what == PyTrace_C_CALL)
        return fh_hook_call(arg);
    if (what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION)
        return fh_hook_return(arg);
    return 0;
}

static int fh_profile_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    (void)frame;
    if (FH_UNLIKELY(fh_hook_thread_generation != fh_hook_generation || !fh_hook_active))
        return fh_hook_slow(what, arg);
    return fh_hook_dispatch(what, arg);
}

#define FH_PROFILE_HOOK ((Py_tracefunc)fh_profile_hook)

/* Finds this module's code (see fh_hook_wants); 0 on success. */
static int fh_hook_init(void)
{
    dl_iterate_phdr(fh_find_own_code, (void *)(uintptr_t)&fh_profile_hook);
    return fh_own_code_end != 0 ? 0 : -1;
}

static inline int fh_hook_installed(PyThreadState *tstate)
{
    return tstate->c_profilefunc == fh_profile_hook;
}

/* Sets (func, obj) as the calling thread's profile hook, with the GIL held.
 * Only a thread sets its own hook back: 3.13 keeps setting another
 * thread's private, and only the thread knows when its frames are closed. */
static int fh_set_own_profile(Py_tracefunc func, PyObject *obj)
{
    PyEval_SetProfile(func, obj);
    return PyErr_Occurred() ? -1 : 0;
}

/* Sets (func, obj) as the profile hook of every thread of the interpreter. */
static int fh_set_profile_all(Py_tracefunc func, PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyEval_SetProfileAllThreads(func, obj);
    return PyErr_Occurred() ? -1 : 0;
#else
    PyThreadState *tstate = PyInterpreterState_ThreadHead(PyThreadState_Get()->interp);
    for (; tstate != NULL; tstate = PyThreadState_Next(tstate)) {
        if (_PyEval_SetProfile(tstate, func, obj) < 0)
            return -1;
    }
    return 0;
#endif
}

#endif /* FASTHOST_CAPTURE_H */
