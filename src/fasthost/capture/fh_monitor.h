/* fh_monitor.h -- the native capture on Python 3.12+: sys.monitoring (PEP 669).
 *
 * Included by fasthost._core after fh_capture.h, whose per-thread hook stack
 * it shares. The callbacks registered with sys.monitoring are objects
 * whose vectorcall slot is one of the C functions below, so an event costs
 * one C call into the core, never Python code. For CALL and C_RETURN the
 * common case is handled inline, without calls; the rest by tail calls to
 * the full paths.
 *
 *   CALL          a call to anything but a Python function opens a U frame
 *                 (its C address as target); C_RETURN / C_RAISE close it.
 *   PY_START,     a Python function starting (or a generator resuming)
 *   PY_RESUME,    while a U frame is on top opens an M frame (a callback);
 *   PY_THROW      PY_RETURN / PY_YIELD / PY_UNWIND close it.
 *
 * Pairing is by place, not by object: a U frame is closed by the event of
 * the same code object, instruction offset and Python stack depth (CALL
 * reports a bound method where C_RETURN reports the function inside it),
 * a callback by the same code object and depth. No two open calls share a
 * place, so a return whose call began before the capture closes nothing.
 *
 * When the capture ends, its events stay on, opening nothing (draining),
 * until every thread's frames are closed; then the tool id is given back.
 */
#ifndef FASTHOST_MONITOR_H
#define FASTHOST_MONITOR_H

#include "fh_capture.h"

/* ---- what a call's target is (every version: symbols names targets
 * after the Python objects that have them) -------------------------------- */

/* Which callables a capture records: builtins only (capture_builtins) or
 * everything that is not a Python function (capture_native). */
#define FH_MON_BUILTINS 1
#define FH_MON_NATIVE 2

static PyTypeObject *fh_mon_cfuncptr; /* _ctypes.CFuncPtr, or NULL */
static PyTypeObject *fh_mon_ufunc;    /* numpy.ufunc, or NULL */
static PyTypeObject *fh_mon_cffi_cdata; /* _cffi_backend._CDataBase, or NULL */

/* The head of cffi's CDataObject (c/_cffi_backend.c): for a function
 * pointer, c_data is the C function's address. */
typedef struct {
    PyObject_HEAD
    void *c_type;
    char *c_data;
} fh_cffi_cdata_head;
static destructor fh_mon_subtype_dealloc; /* the dealloc of classes defined in Python */

/* Objects of classes written in Python: calling one runs Python code (its
 * __init__ or __call__), not native code, so it is no U frame. */
static inline int fh_mon_python_class(PyTypeObject *type) { return type->tp_dealloc == fh_mon_subtype_dealloc; }

static inline int fh_mon_own_code(uintptr_t code) { return code >= fh_own_code_start && code < fh_own_code_end; }

/* Cython's function type (cython_function_or_method), found by name the
 * first time one is called; its objects start as a PyCFunctionObject. Its
 * call slot is no sign: recent Cython gives it its own
 * (__Pyx_CyFunction_CallAsMethod), not PyVectorcall_Call. */
static PyTypeObject *fh_mon_cyfunction;

static int fh_mon_is_cyfunction(PyTypeObject *type)
{
    if (type == fh_mon_cyfunction)
        return 1;
    if (fh_mon_cyfunction != NULL)
        return 0;
    const char *name = strrchr(type->tp_name, '.');
    if (strcmp(name != NULL ? name + 1 : type->tp_name, "cython_function_or_method") != 0)
        return 0;
    fh_mon_cyfunction = type;
    return 1;
}

/* How the target of a call is found from the type of the callable, for
 * every type but the exact ones fh_mon_target tests first. */
enum {
    FH_HOW_CFUNCTION, /* a PyCFunction subclass or a Cython function: its C function */
    FH_HOW_CLASS,     /* a type object: the type, unless it is a Python class */
    FH_HOW_CFUNCPTR,  /* a ctypes function pointer: the foreign function */
    FH_HOW_CFFI,      /* a cffi function pointer: the C function */
    FH_HOW_SELF,      /* a named object called through its own vectorcall (ufuncs) */
    FH_HOW_TYPE_CALL, /* anonymous objects called through a generic vectorcall */
    FH_HOW_TP_CALL,   /* an instance of a C type: its tp_call */
    FH_HOW_SKIP,      /* fasthost's own adapters, instances of Python classes */
};

/* Whether the objects of `type` (called through a generic vectorcall) are
 * named functions (numpy's array functions) rather than anonymous objects
 * (weakrefs): decided on the first instance seen. */
static int fh_mon_named_instance(PyObject *instance)
{
    PyObject *name = PyObject_GetAttrString(instance, "__name__");
    int named = name != NULL && PyUnicode_Check(name);
    Py_XDECREF(name);
    PyErr_Clear();
    return named;
}

static int fh_mon_classify(PyTypeObject *type, PyObject *callable)
{
    if (PyType_IsSubtype(type, &PyCFunction_Type) || fh_mon_is_cyfunction(type))
        return FH_HOW_CFUNCTION; /* they begin the same way */
    if (PyType_IsSubtype(type, &PyType_Type))
        return FH_HOW_CLASS;
    if (fh_mon_own_code((uintptr_t)type->tp_call))
        return FH_HOW_SKIP; /* fasthost's own adapters record the call themselves */
    if (fh_mon_cfuncptr != NULL && PyType_IsSubtype(type, fh_mon_cfuncptr))
        return FH_HOW_CFUNCPTR;
    if (fh_mon_cffi_cdata != NULL && PyType_IsSubtype(type, fh_mon_cffi_cdata))
        return FH_HOW_CFFI;
    if (fh_mon_python_class(type))
        return FH_HOW_SKIP; /* an instance of a class written in Python: Python code */
    if (type == fh_mon_ufunc || (type->tp_call == PyVectorcall_Call && fh_mon_named_instance(callable)))
        return FH_HOW_SELF; /* each object is a function of its own */
    if (type->tp_call == PyVectorcall_Call)
        return FH_HOW_TYPE_CALL; /* weakref.ref: one target, "<type>.__call__" */
    return FH_HOW_TP_CALL;
}

/* The classification of the types seen last, by address and version tag:
 * a type that changes (a __call__ assigned, ctypes instrumented) gets a
 * new tag, and so does a new type at a freed one's address. Python 3.12+
 * only (PyUnstable_Type_AssignVersionTag); before, every call classifies. */
#define FH_MON_TYPE_MEMO 64u
static struct {
    PyTypeObject *type;
    unsigned int version;
    int how;
} fh_mon_type_memo[FH_MON_TYPE_MEMO];

static FH_NOINLINE int fh_mon_how(PyTypeObject *type, PyObject *callable)
{
#if PY_VERSION_HEX >= 0x030C0000
    uint32_t slot = (uint32_t)((uintptr_t)type >> 4) & (FH_MON_TYPE_MEMO - 1u);
    if (fh_mon_type_memo[slot].type == type && fh_mon_type_memo[slot].version == type->tp_version_tag &&
        type->tp_version_tag != 0)
        return fh_mon_type_memo[slot].how;
    int how = fh_mon_classify(type, callable);
    if (PyUnstable_Type_AssignVersionTag(type)) {
        fh_mon_type_memo[slot].type = type;
        fh_mon_type_memo[slot].version = type->tp_version_tag;
        fh_mon_type_memo[slot].how = how;
    }
    return how;
#else
    return fh_mon_classify(type, callable);
#endif
}

/* The target of a call to `callable`: 0 when the call is not a U frame
 * (fasthost's own functions, Python classes and their instances, or not a
 * builtin under FH_MON_BUILTINS). */
static uintptr_t fh_mon_target_of_type(PyObject *callable, int mode);

/* The target of a call to one of the exact types most calls are made to
 * (builtin functions and methods, method descriptors, ufuncs), inline: 1
 * with *target set, or 0 for any other type. One of fasthost's own
 * functions is a target here: fh_mon_target refuses it, and the fast path
 * of CALL never finds it in the core's recent cache, which never holds one
 * (fh_own_code_start in fh_state.h). */
FH_INLINE int fh_mon_common_target(PyObject *callable, int mode, uintptr_t *target)
{
    PyTypeObject *type = Py_TYPE(callable);
    if (type == &PyCFunction_Type || type == &PyCMethod_Type)
        *target = (uintptr_t)PyCFunction_GET_FUNCTION(callable);
    else if (type == &PyMethodDescr_Type || type == &PyClassMethodDescr_Type)
        *target = (uintptr_t)((PyMethodDescrObject *)callable)->d_method->ml_meth;
    else if (type == fh_mon_ufunc && mode == FH_MON_NATIVE)
        *target = (uintptr_t)callable;
    else
        return 0;
    return 1;
}

static inline uintptr_t fh_mon_target(PyObject *callable, int mode)
{
    /* The exact types of most calls first, then a memo by type. */
    uintptr_t target;
    if (!fh_mon_common_target(callable, mode, &target))
        return fh_mon_target_of_type(callable, mode);
    return fh_mon_own_code(target) ? 0 : target;
}

static FH_NOINLINE uintptr_t fh_mon_target_of_type(PyObject *callable, int mode)
{
    PyTypeObject *type = Py_TYPE(callable);
    if (type == &PyMethod_Type) {
        /* A bound method of something native: what it wraps (under either
         * capture: the profile hook of 3.11 sees a bound builtin's call
         * too). */
        PyObject *function = PyMethod_GET_FUNCTION(callable);
        return Py_IS_TYPE(function, &PyMethod_Type) ? 0 : fh_mon_target(function, mode);
    }
    /* Under FH_MON_BUILTINS only the exact types fh_mon_common_target takes
     * are builtins, as for the profile hook of 3.9-3.11 (not a Cython
     * function, which only begins like one). */
    if (mode != FH_MON_NATIVE)
        return 0;
    int how = fh_mon_how(type, callable);
    uintptr_t target;
    switch (how) {
    case FH_HOW_CFUNCTION:
        /* Not PyCFunction_GET_FUNCTION: a Cython function only begins like
         * a PyCFunctionObject, and the macro asserts the type (debug). */
        target = (uintptr_t)((PyCFunctionObject *)callable)->m_ml->ml_meth;
        break;
    case FH_HOW_CLASS:
        /* Not a Python class (Python code), nor one of fasthost's own
         * (unmanaged, callback: made by its own code, its own work). */
        return fh_mon_python_class((PyTypeObject *)callable) ||
                       fh_mon_own_code((uintptr_t)((PyTypeObject *)callable)->tp_new)
                   ? 0
                   : (uintptr_t)callable;
    case FH_HOW_CFUNCPTR:
        return fh_ctypes_address(callable);
    case FH_HOW_CFFI:
        return (uintptr_t)((fh_cffi_cdata_head *)callable)->c_data;
    case FH_HOW_SELF:
        return (uintptr_t)callable;
    case FH_HOW_TYPE_CALL:
        return (uintptr_t)type + 1u;
    case FH_HOW_TP_CALL:
        target = (uintptr_t)(type->tp_call != NULL ? (void *)type->tp_call : (void *)type);
        break;
    default:
        return 0;
    }
    return fh_mon_own_code(target) ? 0 : target;
}

/* ---- the sys.monitoring callbacks ---------------------------------------- */

#if PY_VERSION_HEX >= 0x030C0000
#define FH_HAVE_MONITORING 1
static int fh_mon_mode; /* 0: off or draining */
/* Called (with the GIL) when a draining capture's last frame closes. */
static PyObject *fh_mon_drained;

/* The Python stack depth of the running frame: the limit minus what
 * remains of it, so that sys.setrecursionlimit (which moves both) does not
 * change it. */
static inline int fh_mon_python_depth(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyThreadState *tstate = PyThreadState_GetUnchecked();
#else
    PyThreadState *tstate = _PyThreadState_UncheckedGet();
#endif
    return tstate->py_recursion_limit - tstate->py_recursion_remaining;
}

/* A draining capture whose last frame just closed gives its tool id back. */
static FH_NOINLINE void fh_mon_after_drain_close(void)
{
    if (fh_hook_own.count != 0 || fh_mon_drained == NULL || !fh_hook_all_closed())
        return;
    PyObject *drained = fh_mon_drained;
    fh_mon_drained = NULL;
    PyObject *result = PyObject_CallNoArgs(drained);
    if (result == NULL)
        PyErr_WriteUnraisable(drained);
    Py_XDECREF(result);
    Py_DECREF(drained);
}

/* CALL_FUNCTION_EX (f(*args)) reports CALL for a bound method and then no
 * C_RETURN (3.13): such a call must open nothing. Its opcode is set by
 * _core from dis.opmap; the original bytes come from co_code. */
static int fh_mon_call_function_ex = -1;

static FH_NOINLINE int fh_mon_is_call_function_ex(PyObject *code, uint32_t offset)
{
    PyObject *bytes = PyCode_GetCode((PyCodeObject *)code);
    if (bytes == NULL) {
        PyErr_Clear();
        return 0;
    }
    int opcode = offset < (uint32_t)PyBytes_GET_SIZE(bytes) ? (unsigned char)PyBytes_AS_STRING(bytes)[offset] : -1;
    Py_DECREF(bytes);
    return opcode == fh_mon_call_function_ex;
}

/* What fh_mon_offset reads from an int that is no call's offset: 0 (every
 * code object begins with RESUME or the instructions that make its cells),
 * negative, or 2**30 and up (no code object is that long). No event is
 * there: the full paths refuse it (a call by hand), so nothing opened at
 * one can be closed by a real event, nor a real one by a made-up event. */
#define FH_MON_NO_OFFSET UINT32_MAX

/* The offset argument of a call's event, read without a call: its value
 * if it is an int from 1 to 2**30 - 1, FH_MON_NO_OFFSET otherwise. */
static inline uint32_t fh_mon_offset(PyObject *offset)
{
    if (FH_LIKELY(PyUnstable_Long_IsCompact((PyLongObject *)offset))) {
        Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)offset);
        return value > 0 ? (uint32_t)value : FH_MON_NO_OFFSET;
    }
    return FH_MON_NO_OFFSET;
}

/* The fast paths' reading of the offset: an int of one positive digit
 * (every offset from 1 to 2**30 - 1; no call is at offset 0, where every
 * code object has its RESUME), told by its tag, and then its digit. The
 * digit alone is not enough: -w and 2**30 + w have w's, and an event made
 * up with one would close (or be closed by) the real call at w. Anything
 * else is left to the full paths, which read it with fh_mon_offset. */
#define FH_MON_ONE_DIGIT_TAG ((uintptr_t)1 << _PyLong_NON_SIZE_BITS)

static inline int fh_mon_offset_is_one_digit(PyObject *offset)
{
    return ((PyLongObject *)offset)->long_value.lv_tag == FH_MON_ONE_DIGIT_TAG;
}

static inline uint32_t fh_mon_offset_digit(PyObject *offset)
{
    return (uint32_t)((PyLongObject *)offset)->long_value.ob_digit[0];
}

/* For a call by hand whose offset fh_mon_offset refused: NULL with a
 * ValueError. */
static FH_NOINLINE PyObject *fh_mon_no_offset(PyObject *self, PyObject *offset)
{
    PyErr_Format(PyExc_ValueError, "%R: offset %R is no call's instruction offset (an int from 1 to 2**30 - 1)", self, offset);
    return NULL;
}

/* Whether an event's arguments are of the kinds the callbacks take: no
 * keywords, `least` to `most` of them, a code object, then an int (the
 * instruction offset). sys.monitoring always passes these for Python code;
 * anything else goes to fh_mon_other_args. The call sites keep args[0] as
 * a code object to name it later. (An int that is no offset, negative or
 * too large, is refused by the full paths, fh_mon_offset.) */
FH_INLINE int fh_mon_args_ok(PyObject *const *args, size_t nargsf, PyObject *kwnames, Py_ssize_t least,
                             Py_ssize_t most)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    return kwnames == NULL && nargs >= least && nargs <= most && Py_IS_TYPE(args[0], &PyCode_Type) &&
           Py_IS_TYPE(args[1], &PyLong_Type);
}

/* The part of fh_mon_args_ok that C_RETURN checks: four arguments, the
 * second an int, whose tag and digit it reads. It only compares args[0] with the
 * code objects that CALL stored, which nothing else can equal; anything
 * it does not close goes to fh_mon_c_return_full, which does the same. */
FH_INLINE int fh_mon_c_return_args_ok(PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return kwnames == NULL && PyVectorcall_NARGS(nargsf) == 4 && Py_IS_TYPE(args[1], &PyLong_Type);
}

/* For arguments fh_mon_args_ok refused: an event of a code-like object
 * (the Monitoring C API lets an extension that emulates Python code fire
 * events for an object that only emulates a code object) is ignored: its
 * calls have no place fasthost can name, and nothing it opens could be
 * closed by the events of real code. Anything else is no event: a call by
 * hand from Python code (someone holding the callback that
 * register_callback returned), a TypeError. Out of line, so the callbacks
 * reach it by a tail call. */
static FH_NOINLINE PyObject *fh_mon_other_args(PyObject *self, PyObject *const *args, size_t nargsf,
                                               PyObject *kwnames, Py_ssize_t least, Py_ssize_t most);

/* CALL(code, offset, callable, arg0). A call's frame is closed by the
 * C_RETURN / C_RAISE at the same code and offset: calls at one place nest
 * (recursion through a callback), so the newest entry is always the one
 * that returns first. For that, a call that opens nothing while others are
 * open (a Python class, or any call while draining) leaves a placeholder.
 * The call site (args[0]) is kept alive by the close that records it
 * (fh_site_kept). This is the whole of it; fh_mon_on_call below takes the
 * common case. */
static FH_NOINLINE PyObject *fh_mon_call_full(PyObject *self, PyObject *const *args)
{
    PyObject *callable = args[2];
    uint32_t where = fh_mon_offset(args[1]);
    if (FH_UNLIKELY(where == FH_MON_NO_OFFSET))
        return fh_mon_no_offset(self, args[1]);
    /* A Python function: no C_RETURN; PY_START tells whether it is a callback. */
    if (Py_IS_TYPE(callable, &PyFunction_Type) ||
        (Py_IS_TYPE(callable, &PyMethod_Type) && Py_IS_TYPE(PyMethod_GET_FUNCTION(callable), &PyFunction_Type)))
        Py_RETURN_NONE;
    if (FH_UNLIKELY(Py_IS_TYPE(callable, &PyMethod_Type)) && fh_mon_is_call_function_ex(args[0], where))
        Py_RETURN_NONE;
    int mode = fh_mon_mode;
    uintptr_t target = mode != 0 && !fh_hook_paused ? fh_mon_target(callable, mode) : 0;
    if (target == 0) {
        if (fh_hook_own.count != 0)
            fh_hook_push(&fh_hook_own, (uintptr_t)args[0], FH_HOOK_UNOPENED, where, 0, 0);
        Py_RETURN_NONE;
    }
    /* A target that is the object's own address: the object lives as long
     * as the session's data. The fast path sees a target only after this
     * path has put it in the thread's recent cache, so every such object
     * is kept before its first call is recorded. */
    if (target == (uintptr_t)callable && !fh_keep_alive(fh_target_objects, callable)) {
        if (fh_hook_own.count != 0)
            fh_hook_push(&fh_hook_own, (uintptr_t)args[0], FH_HOOK_UNOPENED, where, 0, 0);
        Py_RETURN_NONE;
    }
    /* Nothing is opened without memory for the entry that closes it. */
    if (fh_hook_push(&fh_hook_own, (uintptr_t)args[0], FH_HOOK_BUILTIN, where, 0, fh_sites_on ? (uintptr_t)args[0] : 0))
        fh_hook_opened(&fh_hook_own, fh_leave(target, FH_FRAME_CAPTURED_UNMANAGED));
    Py_RETURN_NONE;
}

/* CALL for the calls most code makes: a builtin function or method, a
 * method descriptor or a ufunc, called from a synced thread whose caches
 * know the target and the call site, on a clock read inline. Everything
 * else goes to fh_mon_call_full, by a tail call and before anything is
 * written, so that this path makes no calls and saves no registers. */
static PyObject *fh_mon_on_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (FH_UNLIKELY(!fh_mon_args_ok(args, nargsf, kwnames, 4, 4)))
        return fh_mon_other_args(self, args, nargsf, kwnames, 4, 4);
    if (FH_UNLIKELY(!fh_mon_offset_is_one_digit(args[1])))
        return fh_mon_call_full(self, args); /* no offset (by hand) */
    PyObject *callable = args[2];
    if (Py_IS_TYPE(callable, &PyFunction_Type))
        Py_RETURN_NONE; /* no C_RETURN; PY_START tells whether it is a callback */
    int mode = fh_mon_mode;
    uintptr_t target;
    if (mode == 0 || !fh_mon_common_target(callable, mode, &target) || target == 0 || fh_hook_paused)
        return fh_mon_call_full(self, args);
    PyObject *code = args[0];
    fh_hook_stack *hs = &fh_hook_own;
    fh_thread *ts = fh_current;
    fh_target *t = fh_leave_ready(ts, target, 1);
    if (t == NULL || hs->count == hs->capacity || !fh_clock_is_inline(&ts->clock))
        return fh_mon_call_full(self, args);
    fh_hook_write(hs, ts, (uintptr_t)code, FH_HOOK_BUILTIN, fh_mon_offset_digit(args[1]), 0,
                  fh_sites_on ? (uintptr_t)code : 0);
    fh_leave_push(ts, t, 1, 1, FH_FRAME_CAPTURED_UNMANAGED);
    Py_RETURN_NONE;
}

/* C_RETURN / C_RAISE (code, offset, callable, arg0), the whole of it;
 * fh_mon_on_c_return below takes the common case. */
static FH_NOINLINE PyObject *fh_mon_c_return_full(PyObject *self, PyObject *const *args)
{
    if (!Py_IS_TYPE(args[0], &PyCode_Type))
        Py_RETURN_NONE; /* a code-like object's event (fh_mon_other_args): as CALL */
    uint32_t offset = fh_mon_offset(args[1]);
    if (FH_UNLIKELY(offset == FH_MON_NO_OFFSET))
        return fh_mon_no_offset(self, args[1]);
    fh_hook_stack *hs = &fh_hook_own;
    if (hs->count == 0)
        Py_RETURN_NONE;
    const fh_hook_entry *top = &hs->entries[hs->count - 1u];
    if (top->closer != (uintptr_t)args[0] || (top->kind != FH_HOOK_BUILTIN && top->kind != FH_HOOK_UNOPENED) ||
        top->where != offset)
        Py_RETURN_NONE;
    uint32_t kind = top->kind, where = top->where;
    uintptr_t site = top->site;
    uint64_t position = top->position;
    __atomic_store_n(&hs->count, hs->count - 1u, __ATOMIC_RELAXED);
    if (kind == FH_HOOK_BUILTIN)
        fh_capture_close(0, position, FH_FRAME_CAPTURED_UNMANAGED, site, where);
    if (FH_UNLIKELY(fh_mon_mode == 0))
        fh_mon_after_drain_close();
    Py_RETURN_NONE;
}

/* fh_hook_close_popped for fh_mon_on_c_return. */
static FH_NOINLINE PyObject *fh_mon_close_full(uint64_t now)
{
    fh_hook_close_popped(now);
    Py_RETURN_NONE;
}

/* C_RETURN / C_RAISE for a U frame on top of the hook stack, opened at
 * this code and offset, while the capture is on: its entry is popped, and
 * the frame closed by the core's fast path unless that declines (then by
 * fh_mon_close_full). Everything else goes to fh_mon_c_return_full. The
 * slow paths are tail calls, so that this path makes no calls (as in
 * fh_mon_on_call). */
static PyObject *fh_mon_on_c_return(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (FH_UNLIKELY(!fh_mon_c_return_args_ok(args, nargsf, kwnames)))
        return fh_mon_other_args(self, args, nargsf, kwnames, 4, 4);
    if (FH_UNLIKELY(!fh_mon_offset_is_one_digit(args[1])))
        return fh_mon_c_return_full(self, args); /* no offset (by hand) */
    fh_hook_stack *hs = &fh_hook_own;
    uint32_t count = hs->count;
    if (count == 0)
        Py_RETURN_NONE;
    const fh_hook_entry *top = &hs->entries[count - 1u];
    if (top->closer != (uintptr_t)args[0] || top->kind != FH_HOOK_BUILTIN || fh_mon_mode == 0 ||
        top->where != fh_mon_offset_digit(args[1]))
        return fh_mon_c_return_full(self, args);
    __atomic_store_n(&hs->count, count - 1u, __ATOMIC_RELAXED);
    fh_close_plan plan;
    if (!fh_close_ready(&plan, top->site, top->where, 1, FH_FRAME_CAPTURED_UNMANAGED))
        return fh_mon_close_full(plan.now);
    fh_close_commit(&plan);
    Py_RETURN_NONE;
}

/* PY_START / PY_RESUME / PY_THROW (code, offset, ...) */
static PyObject *fh_mon_on_start(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (FH_UNLIKELY(!fh_mon_args_ok(args, nargsf, kwnames, 2, 3)))
        return fh_mon_other_args(self, args, nargsf, kwnames, 2, 3);
    /* A callback of a recorded U frame on top; or a Python function run by a
     * call of ours that opened nothing (a Python class's __init__), or run
     * while the capture drains: it gets a placeholder, so that every frame
     * started inside one of our calls has an entry above it, and a return
     * whose code made the call on top can only be that caller's (see
     * on_return; a capture started again before such a frame returns would
     * otherwise take its return for its caller's). */
    uint32_t kind;
    if (fh_mon_mode != 0 && fh_top_is_unmanaged())
        kind = FH_HOOK_CALLBACK;
    else if (fh_hook_own.count != 0 && !FH_HOOK_IS_CALLBACK(fh_hook_own.entries[fh_hook_own.count - 1u].kind))
        kind = FH_HOOK_CALLBACK_UNOPENED;
    else
        Py_RETURN_NONE;
    if (fh_hook_push(&fh_hook_own, (uintptr_t)args[0], kind, 0, fh_mon_python_depth(), 0) && kind == FH_HOOK_CALLBACK)
        fh_hook_opened(&fh_hook_own, fh_reverse_enter(FH_FRAME_CAPTURED_MANAGED));
    Py_RETURN_NONE;
}

/* PY_RETURN / PY_YIELD / PY_UNWIND (code, offset, value). A callback is
 * closed by its own frame's exit: the same code at the same Python stack
 * depth (a function calling itself from Python is no callback). */
static PyObject *fh_mon_on_return(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (FH_UNLIKELY(!fh_mon_args_ok(args, nargsf, kwnames, 3, 3)))
        return fh_mon_other_args(self, args, nargsf, kwnames, 3, 3);
    fh_hook_stack *hs = &fh_hook_own;
    if (hs->count == 0 || hs->entries[hs->count - 1u].closer != (uintptr_t)args[0])
        Py_RETURN_NONE;
    const fh_hook_entry *top = &hs->entries[hs->count - 1u];
    /* A call this very frame made that never reported its return (another
     * tool's CALL callback raised, or CPython reports no C_RETURN for it):
     * every frame started inside one of our calls has an entry above it, so
     * a call entry of this code on top is this frame's. Its frame is
     * abandoned now that the caller is leaving. (Not while draining: no
     * entries are made for frames started then.) */
    while (!FH_HOOK_IS_CALLBACK(top->kind) && top->closer == (uintptr_t)args[0] && fh_mon_mode != 0) {
        if (top->kind == FH_HOOK_BUILTIN)
            fh_capture_abandon(top->position, FH_FRAME_CAPTURED_UNMANAGED);
        __atomic_store_n(&hs->count, hs->count - 1u, __ATOMIC_RELAXED);
        if (hs->count == 0)
            Py_RETURN_NONE;
        top = &hs->entries[hs->count - 1u];
    }
    if (!FH_HOOK_IS_CALLBACK(top->kind) || top->closer != (uintptr_t)args[0] || top->depth != fh_mon_python_depth())
        Py_RETURN_NONE;
    uint32_t kind = top->kind;
    uint64_t position = top->position;
    __atomic_store_n(&hs->count, hs->count - 1u, __ATOMIC_RELAXED);
    if (kind == FH_HOOK_CALLBACK)
        fh_capture_close(0, position, FH_FRAME_CAPTURED_MANAGED, 0, 0);
    if (FH_UNLIKELY(fh_mon_mode == 0))
        fh_mon_after_drain_close();
    Py_RETURN_NONE;
}

/* The objects registered with sys.monitoring: instances of a type of
 * their own that CPython calls through their vectorcall slot, straight
 * into the functions above. A builtin function object would be called
 * through CPython's trampoline for builtins first (a recursion check and
 * an argument check on every event). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    const char *events;
    const char *arguments; /* what sys.monitoring passes, for fh_mon_other_args */
} fh_mon_callback_object;

/* A call from Python code (only someone holding the object makes one):
 * this module's own code, so the captures never record it. */
static PyObject *fh_mon_callback_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static PyObject *fh_mon_callback_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<fasthost sys.monitoring callback: %s>", ((fh_mon_callback_object *)self)->events);
}

static FH_NOINLINE PyObject *fh_mon_other_args(PyObject *self, PyObject *const *args, size_t nargsf,
                                               PyObject *kwnames, Py_ssize_t least, Py_ssize_t most)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs >= least && nargs <= most && Py_IS_TYPE(args[1], &PyLong_Type))
        Py_RETURN_NONE; /* a code-like object's event */
    PyErr_Format(PyExc_TypeError, "%R takes %s, as sys.monitoring passes them (the offset an int, no keywords)",
                 self, ((fh_mon_callback_object *)self)->arguments);
    return NULL;
}

static void fh_mon_callback_dealloc(PyObject *self) { PyObject_Free(self); }

static PyTypeObject fh_mon_callback_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fasthost._core.MonitoringCallback",
    .tp_basicsize = sizeof(fh_mon_callback_object),
    .tp_dealloc = fh_mon_callback_dealloc,
    .tp_vectorcall_offset = offsetof(fh_mon_callback_object, vectorcall),
    .tp_repr = fh_mon_callback_repr,
    .tp_call = fh_mon_callback_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_doc = "A fasthost callback for sys.monitoring events.",
};

static const struct {
    vectorcallfunc function;
    const char *events;
    const char *arguments;
} fh_mon_callbacks[] = {
    {fh_mon_on_call, "CALL", "(code, offset, callable, arg0)"},
    {fh_mon_on_c_return, "C_RETURN, C_RAISE", "(code, offset, callable, arg0)"},
    {fh_mon_on_start, "PY_START, PY_RESUME, PY_THROW", "(code, offset) or (code, offset, exception)"},
    {fh_mon_on_return, "PY_RETURN, PY_YIELD, PY_UNWIND", "(code, offset, value)"},
};

/* The callback for fh_mon_callbacks[i], a new reference; NULL with an
 * exception set. */
static PyObject *fh_mon_callback(int i)
{
    if (PyType_Ready(&fh_mon_callback_type) < 0)
        return NULL;
    fh_mon_callback_object *callback = PyObject_New(fh_mon_callback_object, &fh_mon_callback_type);
    if (callback == NULL)
        return NULL;
    callback->vectorcall = fh_mon_callbacks[i].function;
    callback->events = fh_mon_callbacks[i].events;
    callback->arguments = fh_mon_callbacks[i].arguments;
    return (PyObject *)callback;
}

#else
#define FH_HAVE_MONITORING 0
static int fh_mon_mode;
static int fh_mon_call_function_ex;
static PyObject *fh_mon_drained;
static PyObject *fh_mon_callback(int i) { (void)i; Py_RETURN_NONE; }
#endif

#endif /* FASTHOST_MONITOR_H */
