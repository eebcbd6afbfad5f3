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
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h> /* PyFrameObject's fields (f_code, f_lasti) before 3.11 */
#endif
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

static void fh_capture_close(uint64_t now, uint64_t position, uint32_t kind, uintptr_t site, uint32_t where);

/* The adapters' frames around the calls they make (an instrumented ctypes
 * or cffi function, a callback's Python function) are a capture's too: the
 * protocol's closes do not see them. Each open returns its position, which
 * its close takes: read after the open, which may have joined a new session
 * (dropping the captures' frames beneath); FH_ADAPTER_UNOPENED when the
 * open was refused (stopped, max_depth) and left no entry, so that the
 * close finds nothing. */
#define FH_ADAPTER_UNOPENED UINT64_MAX

static inline uint64_t fh_adapter_open_unmanaged(uint64_t target)
{
    return fh_leave(target, FH_FRAME_CAPTURED_UNMANAGED) == FH_OK ? fh_current_depth() - 1u : FH_ADAPTER_UNOPENED;
}

static inline uint64_t fh_adapter_open_managed(void)
{
    return fh_reverse_enter(FH_FRAME_CAPTURED_MANAGED) == FH_OK ? fh_current_depth() - 1u : FH_ADAPTER_UNOPENED;
}

static inline void fh_adapter_close_unmanaged(uint64_t position)
{
    fh_capture_close(0, position, FH_FRAME_CAPTURED_UNMANAGED, 0, 0);
}

static inline void fh_adapter_close_managed(uint64_t position)
{
    fh_capture_close(0, position, FH_FRAME_CAPTURED_MANAGED, 0, 0);
}

static PyObject *fh_ctypes_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    size_t target = (size_t) * (void **)((fh_cdata_head *)self)->b_ptr;
    uint64_t position = fh_adapter_open_unmanaged(target);
    /* Argument conversion, the foreign call and errcheck all happen in
     * here; a NULL result (an exception) still closes the frame, as the
     * CLR's stubs do when they unwind. */
    PyObject *result = fh_cfuncptr_call(self, args, kwargs);
    fh_adapter_close_unmanaged(position);
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

/* The hook opens a U frame for every builtin call and an M frame for every
 * Python function that starts while a U frame is on top (a callback:
 * sorted's key, a sqlite3 function, a generator resumed by a builtin).
 * Each open is remembered on the thread's hook stack with what closes it
 * (the callable, or the Python frame) and where it lies in the core's
 * stack; a return closes a frame only when it is the one on top of the
 * hook stack, so a return whose call began before the hook was installed
 * closes nothing, and frames are paired by identity, not by count.
 *
 * Each capture (install) has a generation. A capture that ends while a
 * thread is inside a builtin leaves the hook on that thread, draining: it
 * opens nothing more, still pairs calls with returns (a call it does not
 * open goes on the hook stack as a placeholder), and once the hook stack is
 * empty it puts back the thread's previous hook. Everything unusual goes
 * to fh_hook_slow, set by _core. */
typedef struct fh_hook_entry {
    uintptr_t closer;  /* the C function, or the Python frame of a callback
                        * (with sys.monitoring: the code object) */
    uint32_t kind;     /* FH_HOOK_* */
    uint32_t where;    /* with sys.monitoring: the instruction offset */
    uint64_t position; /* open entries beneath it in the core's stack */
    int32_t depth;     /* with sys.monitoring: the Python stack depth */
    uint32_t unused;
    uintptr_t site;    /* a U frame's caller's code object, or 0 (no call site) */
} fh_hook_entry;

#define FH_HOOK_BUILTIN 0u  /* a U frame */
#define FH_HOOK_CALLBACK 1u /* an M frame */
#define FH_HOOK_UNOPENED 2u /* a placeholder: nothing was opened */
#define FH_HOOK_CALLBACK_UNOPENED 3u /* a Python function run under a placeholder: nothing opened */
#define FH_HOOK_OPENED(kind) ((kind) <= FH_HOOK_CALLBACK)
/* The kind of the core's frame an entry opened. */
#define fh_hook_frame_kind(kind) ((kind) == FH_HOOK_BUILTIN ? FH_FRAME_CAPTURED_UNMANAGED : FH_FRAME_CAPTURED_MANAGED)
#define FH_HOOK_IS_CALLBACK(kind) ((kind) == FH_HOOK_CALLBACK || (kind) == FH_HOOK_CALLBACK_UNOPENED)

typedef struct fh_hook_stack {
    fh_hook_entry *entries;
    uint32_t count; /* written by its thread; read by others under fh_hook_stacks_lock */
    uint32_t capacity;
    struct fh_hook_stack *next; /* in fh_hook_stacks, once it has entries */
} fh_hook_stack;

static uint64_t fh_hook_generation;
static int fh_hook_active;
static int fh_hook_setting; /* fasthost itself is setting a profile hook */
static FH_TLS uint64_t fh_hook_thread_generation;
static FH_TLS fh_hook_stack fh_hook_own;
/* Set while fasthost itself works on this thread (a snapshot, a report):
 * the captures open nothing for its calls. */
static FH_TLS int fh_hook_paused;
static pthread_key_t fh_hook_stack_key; /* frees a thread's hook stack */
/* Every thread's hook stack that has had entries: a capture that ended
 * knows from them when all its frames are closed. */
static fh_hook_stack *fh_hook_stacks;
static pthread_mutex_t fh_hook_stacks_lock = PTHREAD_MUTEX_INITIALIZER;
static int (*fh_hook_slow)(int what, PyFrameObject *frame, PyObject *arg);

/* fasthost's own builtins are not targets: recording leave_runtime as a U
 * frame around the U frame it opens would break the caller's nesting. They
 * are the functions in this module's executable segment, whose bounds the
 * core keeps (fh_own_code_start, fh_own_code_end in fh_state.h). */

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

/* Room for one more entry; 0 without memory. The stack only grows when
 * calls nest deeper than ever before on this thread. */
static FH_NOINLINE int fh_hook_grow(fh_hook_stack *hs)
{
    uint32_t capacity = hs->capacity ? hs->capacity * 2u : 64u;
    fh_hook_entry *entries = (fh_hook_entry *)realloc(hs->entries, capacity * sizeof(fh_hook_entry));
    if (entries == NULL)
        return 0; /* the open is skipped: one not remembered could not be closed */
    if (hs->entries == NULL) {
        pthread_mutex_lock(&fh_hook_stacks_lock);
        hs->next = fh_hook_stacks;
        fh_hook_stacks = hs;
        pthread_mutex_unlock(&fh_hook_stacks_lock);
    }
    if (entries != hs->entries)
        pthread_setspecific(fh_hook_stack_key, entries);
    hs->entries = entries;
    hs->capacity = capacity;
    return 1;
}

/* Pushes an entry onto a hook stack that has room for it; `ts` is the
 * calling thread's state (fh_current). */
FH_INLINE void fh_hook_write(fh_hook_stack *hs, const fh_thread *ts, uintptr_t closer, uint32_t kind, uint32_t where,
                             int32_t depth, uintptr_t site)
{
    fh_hook_entry *entry = &hs->entries[hs->count];
    entry->closer = closer;
    entry->kind = kind;
    entry->where = where;
    entry->position = fh_open_depth(ts);
    entry->depth = depth;
    entry->site = site;
    __atomic_store_n(&hs->count, hs->count + 1u, __ATOMIC_RELAXED);
}

static inline int fh_hook_push(fh_hook_stack *hs, uintptr_t closer, uint32_t kind, uint32_t where, int32_t depth,
                               uintptr_t site)
{
    if (FH_UNLIKELY(hs->count == hs->capacity) && !fh_hook_grow(hs))
        return 0;
    fh_hook_write(hs, fh_current, closer, kind, where, depth, site);
    return 1;
}

/* Takes the result of the open made for the entry just pushed: an open
 * that was refused (stopped, max_depth) left no entry in the core, so the
 * entry becomes a placeholder and its close closes nothing. The position is
 * read again after the open, which may have joined a new session (that
 * drops the captures' frames beneath it). */
static inline void fh_hook_opened(fh_hook_stack *hs, int result)
{
    fh_hook_entry *top = &hs->entries[hs->count - 1u];
    if (FH_LIKELY(result == FH_OK))
        top->position = fh_current_depth() - 1u;
    else
        top->kind = top->kind == FH_HOOK_BUILTIN ? FH_HOOK_UNOPENED : FH_HOOK_CALLBACK_UNOPENED;
}

/* ---- call sites -------------------------------------------------------- */

/* Call sites are recorded by code object address; the code objects are
 * kept alive in fh_site_codes (a set) so that an address always means the
 * same code when the snapshot names it. A code object is kept by the slow
 * close that first records one of its sites (the fast close only finds
 * sites in the thread's recent cache, which this session's slow closes
 * made), so the calls themselves do nothing for it; a close while the
 * frame that made the call runs, so the code is alive. A thread remembers
 * the last code it kept, so a loop calling builtins keeps its code once. */
static int fh_sites_on;
static PyObject *fh_site_codes;    /* {id(code): code}; owned by _core */
static uint64_t fh_site_codes_age; /* bumped when the set is emptied */
static FH_TLS PyObject *fh_site_last_code;
static FH_TLS uint64_t fh_site_last_age;

/* Puts `object` in `kept` ({id(object): object}), by identity: equal
 * objects (the same source compiled twice, under two file names) are
 * different places. 0 if it could not (no memory). */
static int fh_keep_alive(PyObject *kept, PyObject *object)
{
    PyObject *key = kept != NULL ? PyLong_FromVoidPtr(object) : NULL;
    int failed = key == NULL || PyDict_SetDefault(kept, key, object) == NULL;
    Py_XDECREF(key);
    if (failed)
        PyErr_Clear();
    return !failed;
}

/* The call site `code` (a hook entry's site) for a slow close to record:
 * itself once its code object is kept, or 0 (record the call without its
 * site) if it is none or could not be kept. Called with the GIL. */
static uintptr_t fh_site_kept(uintptr_t code)
{
    PyObject *object = (PyObject *)code;
    if (object == NULL || (object == fh_site_last_code && fh_site_last_age == fh_site_codes_age))
        return code;
    /* Not a code object: an event made up by hand (fh_mon_args_ok). */
    if (!PyCode_Check(object) || !fh_keep_alive(fh_site_codes, object))
        return 0;
    fh_site_last_code = object;
    fh_site_last_age = fh_site_codes_age;
    return code;
}

/* The objects whose address is a target (a ufunc, a numpy array function,
 * a C type: see fh_monitor.h), kept like call sites' code objects: a
 * freed ufunc's address would otherwise pass, with its calls, to the next
 * object made there. Owned by _core; emptied with fh_site_codes. */
static PyObject *fh_target_objects;

/* The caller's code object and the call's offset in bytes, for a legacy
 * hook event in `frame`. Borrowed: the frame holds the code. */
static inline PyObject *fh_frame_site(PyFrameObject *frame, uint32_t *where)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(code); /* the frame keeps its code alive */
    *where = (uint32_t)PyFrame_GetLasti(frame);
    return (PyObject *)code;
#elif PY_VERSION_HEX >= 0x030A0000
    *where = (uint32_t)frame->f_lasti * 2u; /* 3.10 counts instructions */
    return (PyObject *)frame->f_code;
#else
    *where = (uint32_t)frame->f_lasti;
    return (PyObject *)frame->f_code;
#endif
}

/* The full close of the frame of `kind` that a capture opened at
 * `position` (open entries beneath it; a U frame's call site is (site,
 * where)), when it is the newest open entry; abandoned in place when
 * protocol frames that its call opened and returned with lie on it, so
 * that they pair with their own closes; nothing when it is gone, abandoned
 * by a protocol close that it straddled (fh_captured_where). `now` is a
 * timestamp taken before, or 0. */
static FH_NOINLINE void fh_capture_close(uint64_t now, uint64_t position, uint32_t kind, uintptr_t site,
                                         uint32_t where)
{
    int state = fh_captured_where(position, kind);
    if (state == FH_CAPTURED_GONE)
        return;
    if (state == FH_CAPTURED_COVERED) {
        fh_abandon_entry(position);
        return;
    }
    if (kind == FH_FRAME_CAPTURED_MANAGED) {
        fh_reverse_leave(kind);
        return;
    }
    if (now == 0)
        now = fh_close_now(); /* before fh_site_kept: the frame excludes it */
    fh_enter_close(now, fh_site_kept(site), where, kind);
}

/* Abandons the frame of `kind` that a capture opened at `position`, unless
 * it is gone (fh_captured_where). 0, or -1 when there was none. */
static int fh_capture_abandon(uint64_t position, uint32_t kind)
{
    if (fh_captured_where(position, kind) == FH_CAPTURED_GONE)
        return -1;
    return fh_abandon_entry(position);
}

/* The two halves of the hook are separate functions so that each saves
 * only the registers it needs; the hook itself only dispatches. */
static FH_NOINLINE int fh_hook_call(PyFrameObject *frame, PyObject *callable)
{
    if (!fh_hook_wants(callable) || fh_hook_paused)
        return 0;
    uintptr_t target = (uintptr_t)PyCFunction_GET_FUNCTION(callable);
    uint32_t where = 0;
    PyObject *code = NULL;
    if (fh_sites_on && frame != NULL)
        code = fh_frame_site(frame, &where);
    if (!fh_hook_push(&fh_hook_own, target, FH_HOOK_BUILTIN, where, 0, (uintptr_t)code))
        return 0;
    /* fh_leave, with the entry's result taken only on the full path: the
     * fast one opens on a synced state, where the entry's position holds. */
    fh_thread *ts = fh_current;
    fh_target *t = fh_leave_ready(ts, target, 0);
    if (FH_LIKELY(t != NULL))
        fh_leave_push(ts, t, 0, 1, FH_FRAME_CAPTURED_UNMANAGED);
    else
        fh_hook_opened(&fh_hook_own, fh_leave_full(target, FH_FRAME_CAPTURED_UNMANAGED));
    return 0;
}

/* What closes a builtin's frame: its C function, not the callable object,
 * which on 3.12+ the legacy hook makes anew for each event of a method. */
static inline uintptr_t fh_hook_closer(PyObject *callable)
{
    return fh_hook_wants(callable) ? (uintptr_t)PyCFunction_GET_FUNCTION(callable) : 0;
}

/* RETURN: closes the callback `frame` opened, if its entry is on top of
 * the hook stack. */
static FH_NOINLINE int fh_hook_return(PyFrameObject *frame)
{
    fh_hook_stack *hs = &fh_hook_own;
    if (hs->count == 0)
        return 0;
    const fh_hook_entry *top = &hs->entries[hs->count - 1u];
    if (top->closer != (uintptr_t)frame || top->kind != FH_HOOK_CALLBACK)
        return 0;
    __atomic_store_n(&hs->count, hs->count - 1u, __ATOMIC_RELAXED);
    fh_capture_close(0, top->position, FH_FRAME_CAPTURED_MANAGED, 0, 0);
    return 0;
}

/* The core's full close of the U frame whose hook entry has just been
 * popped (it is still in place: nothing was pushed since), for a fast
 * path that fh_close_ready declined; `now` is the timestamp it took, or 0. */
static FH_NOINLINE int fh_hook_close_popped(uint64_t now)
{
    const fh_hook_entry *popped = &fh_hook_own.entries[fh_hook_own.count];
    fh_capture_close(now, popped->position, FH_FRAME_CAPTURED_UNMANAGED, popped->site, popped->where);
    return 0;
}

/* C_RETURN / C_EXCEPTION: closes the frame of the builtin `callable` (or
 * pops its placeholder) if its entry is on top of the hook stack, with the
 * core's fast close inline and every slow path a tail call, so that the
 * hook makes no calls on its common path (and saves no registers). */
FH_INLINE int fh_hook_c_return(PyObject *callable)
{
    fh_hook_stack *hs = &fh_hook_own;
    uint32_t count = hs->count;
    if (count == 0)
        return 0;
    const fh_hook_entry *top = &hs->entries[count - 1u];
    if (top->closer != fh_hook_closer(callable) || top->kind == FH_HOOK_CALLBACK)
        return 0;
    __atomic_store_n(&hs->count, count - 1u, __ATOMIC_RELAXED);
    if (top->kind != FH_HOOK_BUILTIN)
        return 0; /* a placeholder: nothing was opened */
    fh_close_plan plan;
    if (!fh_close_ready(&plan, top->site, top->where, 1, FH_FRAME_CAPTURED_UNMANAGED))
        return fh_hook_close_popped(plan.now);
    fh_close_commit(&plan);
    return 0;
}

static FH_NOINLINE int fh_hook_callback(PyFrameObject *frame)
{
    /* A refused open leaves no entry (this hook's returns pop callbacks
     * only when they opened a frame). */
    if (!fh_top_is_unmanaged() || !fh_hook_push(&fh_hook_own, (uintptr_t)frame, FH_HOOK_CALLBACK, 0, 0, 0))
        return 0;
    if (fh_reverse_enter(FH_FRAME_CAPTURED_MANAGED) == FH_OK)
        fh_hook_opened(&fh_hook_own, FH_OK);
    else
        __atomic_store_n(&fh_hook_own.count, fh_hook_own.count - 1u, __ATOMIC_RELAXED);
    return 0;
}

/* The draining hook: opens nothing, pairs what is already open. */
static int fh_hook_drain(int what, PyFrameObject *frame, PyObject *arg)
{
    if (what == PyTrace_C_CALL) {
        if (fh_hook_wants(arg))
            fh_hook_push(&fh_hook_own, fh_hook_closer(arg), FH_HOOK_UNOPENED, 0, 0, 0);
    } else if (what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION) {
        fh_hook_c_return(arg);
    } else if (what == PyTrace_RETURN) {
        fh_hook_return(frame);
    }
    return 0;
}

static int fh_hook_dispatch(int what, PyFrameObject *frame, PyObject *arg)
{
    switch (what) {
    case PyTrace_C_CALL:
        return fh_hook_call(frame, arg);
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        return fh_hook_c_return(arg);
    case PyTrace_CALL:
        return fh_hook_callback(frame);
    case PyTrace_RETURN:
        return fh_hook_return(frame);
    }
    return 0;
}

static int fh_profile_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    if (FH_UNLIKELY(fh_hook_thread_generation != fh_hook_generation || !fh_hook_active))
        return fh_hook_slow(what, frame, arg);
    return fh_hook_dispatch(what, frame, arg);
}

/* Abandons every frame on the calling thread's hook stack, newest first
 * (so the positions of the older ones still hold): their returns will
 * never reach fasthost's hook. Returns how many were abandoned. */
static uint64_t fh_hook_abandon_all(void)
{
    fh_hook_stack *hs = &fh_hook_own;
    uint64_t abandoned = 0;
    while (hs->count > 0) {
        fh_hook_entry entry = hs->entries[hs->count - 1u];
        __atomic_store_n(&hs->count, hs->count - 1u, __ATOMIC_RELAXED);
        if (FH_HOOK_OPENED(entry.kind) && fh_capture_abandon(entry.position, fh_hook_frame_kind(entry.kind)) == 0)
            abandoned++;
    }
    return abandoned;
}

/* Frames the calling thread's hook has open (placeholders included). */
static inline uint32_t fh_hook_open_count(void) { return fh_hook_own.count; }

static inline int fh_hook_installed(PyThreadState *tstate)
{
    return tstate->c_profilefunc == (Py_tracefunc)fh_profile_hook;
}

/* An audit hook: "sys.setprofile" is raised on the thread that replaces a
 * profile hook (sys.setprofile, cProfile's enable, PyEval_SetProfile),
 * before it does. If that thread's hook is fasthost's, the returns of the
 * calls open on it will go to the new hook, so their frames are abandoned
 * now, while their positions are still known. */
static int fh_audit(const char *event, PyObject *args, void *data)
{
    (void)args;
    (void)data;
    if (fh_hook_own.count == 0 || fh_hook_setting || strcmp(event, "sys.setprofile") != 0)
        return 0;
    if (fh_hook_installed(PyThreadState_Get()))
        fh_hook_abandon_all();
    return 0;
}

#define FH_PROFILE_HOOK ((Py_tracefunc)fh_profile_hook)

/* A thread ends: its hook stack leaves the registry (its frames are
 * counted as abandoned by the core). */
static void fh_hook_thread_end(void *entries)
{
    pthread_mutex_lock(&fh_hook_stacks_lock);
    for (fh_hook_stack **link = &fh_hook_stacks; *link != NULL; link = &(*link)->next) {
        if (*link == &fh_hook_own) {
            *link = fh_hook_own.next;
            break;
        }
    }
    pthread_mutex_unlock(&fh_hook_stacks_lock);
    fh_hook_own = (fh_hook_stack){0};
    free(entries);
}

/* In a forked child only the forking thread lives on: the others' hook
 * stacks (whose frames will never close) leave the registry. */
static void fh_hook_atfork_child(void)
{
    pthread_mutex_init(&fh_hook_stacks_lock, NULL);
    fh_hook_stacks = NULL;
    if (fh_hook_own.entries != NULL) {
        fh_hook_own.next = NULL;
        fh_hook_stacks = &fh_hook_own;
    }
}

/* 1 when no thread has a frame of fasthost's hooks open. */
static int fh_hook_all_closed(void)
{
    int closed = 1;
    pthread_mutex_lock(&fh_hook_stacks_lock);
    for (fh_hook_stack *hs = fh_hook_stacks; hs != NULL && closed; hs = hs->next)
        closed = __atomic_load_n(&hs->count, __ATOMIC_RELAXED) == 0;
    pthread_mutex_unlock(&fh_hook_stacks_lock);
    return closed;
}

/* Finds this module's code (see fh_hook_wants); 0 on success. */
static int fh_hook_init(void)
{
    dl_iterate_phdr(fh_find_own_code, (void *)(uintptr_t)&fh_profile_hook);
    if (pthread_key_create(&fh_hook_stack_key, fh_hook_thread_end) != 0)
        return -1;
    if (pthread_atfork(NULL, NULL, fh_hook_atfork_child) != 0)
        return -1;
    return fh_own_code_end != 0 ? 0 : -1;
}

/* Installs fh_audit, once, with the GIL held; -1 with an exception set. */
static int fh_hook_audit_once(void)
{
    static int added;
    if (added)
        return 0;
    if (PySys_AddAuditHook(fh_audit, NULL) < 0)
        return -1;
    added = 1;
    return 0;
}

/* Sets (func, obj) as the calling thread's profile hook, with the GIL held.
 * Only a thread sets its own hook back: 3.13 keeps setting another
 * thread's private, and only the thread knows when its frames are closed. */
static int fh_set_own_profile(Py_tracefunc func, PyObject *obj)
{
    fh_hook_setting = 1;
    PyEval_SetProfile(func, obj);
    fh_hook_setting = 0;
    return PyErr_Occurred() ? -1 : 0;
}

/* Sets (func, obj) as the profile hook of every thread of the interpreter. */
static int fh_set_profile_all(Py_tracefunc func, PyObject *obj)
{
    int result = 0;
    fh_hook_setting = 1;
#if PY_VERSION_HEX >= 0x030C0000
    PyEval_SetProfileAllThreads(func, obj);
    result = PyErr_Occurred() ? -1 : 0;
#else
    /* Without the runtime's head lock, which is not exported: a thread
     * entering Python from C (PyGILState_Ensure) puts its new state at the
     * head of the list before initialising it, and on 3.11 its cframe is
     * still NULL there (_PyEval_SetProfile would write through it). Such a
     * thread is left alone, as one that enters after the capture started. */
    PyThreadState *tstate = PyInterpreterState_ThreadHead(PyThreadState_Get()->interp);
    for (; tstate != NULL && result == 0; tstate = PyThreadState_Next(tstate)) {
#if PY_VERSION_HEX >= 0x030B0000
        if (__atomic_load_n(&tstate->cframe, __ATOMIC_ACQUIRE) == NULL)
            continue;
#endif
        result = _PyEval_SetProfile(tstate, func, obj);
    }
#endif
    fh_hook_setting = 0;
    return result;
}

#endif /* FASTHOST_CAPTURE_H */
