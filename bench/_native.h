/* _native.h -- the C that bench/ measures fasthost against: the C API pair
 * in a loop, a minimal hand-written recorder (the floor of every budget in
 * docs/protocol.md §5), and recorders that share one histogram between
 * threads behind a mutex or atomics.
 *
 * fasthost itself is reached only through its public C API (fasthost.h), as
 * a third-party extension would; the core's small headers (the clock, the
 * histogram's bucket index, the TLS model) come from the source tree, so
 * that the minimal recorder is built from the same pieces as the core.
 * bench/native.py builds this into an extension of its own on first use.
 */
#ifndef FASTHOST_BENCH_NATIVE_H
#define FASTHOST_BENCH_NATIVE_H

#include <Python.h>
#include <frameobject.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "fasthost.h"
#include "fh_clock.h"
#include "fh_histogram.h"

/* The C API pair in a loop; returns elapsed ns. */
static uint64_t fh_capi_pair_loop(size_t n, size_t target)
{
    uint64_t t0 = fh_monotonic_ns();
    for (size_t i = 0; i < n; i++) {
        FH_LeaveRuntime(target);
        FH_EnterRuntime();
    }
    return fh_monotonic_ns() - t0;
}

/* The floor the C pair budget compares against (docs/protocol.md §5): a
 * hand-written pair doing only 2 x rdtsc, a thread-local push/pop and one
 * histogram increment. Its timestamps come from the core's fh_clock_ticks()
 * on a constant clock: rdtsc where the CPU has one (the instruction the
 * core's tsc clock reads; the test of the kind folds away), else
 * CLOCK_MONOTONIC, so that this extension builds off x86 too. */
static const fh_clock fh_minimal_clock = {.kind = FH_HAVE_RDTSC ? FH_CLOCK_TSC : FH_CLOCK_MONOTONIC};
#define fh_minimal_ticks() fh_clock_ticks(&fh_minimal_clock)

#define FH_MINIMAL_DEPTH 256
#define FH_MINIMAL_PRECISION 5
typedef struct fh_minimal_state {
    uint32_t depth;
    uint64_t start[FH_MINIMAL_DEPTH];
    uint64_t counts[60 << FH_MINIMAL_PRECISION];
} fh_minimal_state;
static FH_TLS fh_minimal_state *fh_minimal;

static FH_NOINLINE int32_t fh_minimal_leave(size_t target)
{
    (void)target;
    fh_minimal_state *s = fh_minimal;
    s->start[s->depth++] = fh_minimal_ticks();
    return 0;
}

static FH_NOINLINE int32_t fh_minimal_enter(void)
{
    uint64_t now = fh_minimal_ticks();
    fh_minimal_state *s = fh_minimal;
    uint64_t ticks = now - s->start[--s->depth];
    s->counts[fh_bucket_index(ticks, FH_MINIMAL_PRECISION)]++;
    return 0;
}

/* Like the core, only a pointer lives in (initial-exec) TLS: a module
 * loaded with dlopen() gets just a small static-TLS surplus. */
static int fh_minimal_ready(void)
{
    if (fh_minimal == NULL)
        fh_minimal = (fh_minimal_state *)calloc(1, sizeof(fh_minimal_state));
    return fh_minimal != NULL;
}

static uint64_t fh_minimal_pair_loop(size_t n, size_t target)
{
    if (!fh_minimal_ready())
        return 0;
    uint64_t t0 = fh_monotonic_ns();
    for (size_t i = 0; i < n; i++) {
        fh_minimal_leave(target);
        fh_minimal_enter();
    }
    return fh_monotonic_ns() - t0;
}

/* The floor of capture_builtins (docs/protocol.md §5): a C profile hook doing only
 * the minimal leave on a builtin call and the minimal enter on its return. */
static int fh_minimal_profile_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    (void)frame;
    if (what == PyTrace_C_CALL) {
        if (PyCFunction_Check(arg) && fh_minimal->depth < FH_MINIMAL_DEPTH)
            fh_minimal_leave((size_t)PyCFunction_GET_FUNCTION(arg));
    } else if (what == PyTrace_C_RETURN || what == PyTrace_C_EXCEPTION) {
        if (PyCFunction_Check(arg) && fh_minimal->depth > 0)
            fh_minimal_enter();
    }
    return 0;
}

static int fh_minimal_profile(int on)
{
    if (!fh_minimal_ready())
        return -1;
    PyEval_SetProfile(on ? (Py_tracefunc)fh_minimal_profile_hook : NULL, NULL);
    return 0;
}

/* The floor of capture_native on 3.12+ (docs/protocol.md §5): two C
 * sys.monitoring callbacks doing only the minimal leave on a call that will
 * report C_RETURN (anything but a Python function) and the minimal enter at
 * its C_RETURN / C_RAISE: two timestamps, a push/pop, a histogram
 * increment. */
#if PY_VERSION_HEX >= 0x030C0000
static PyObject *fh_minimal_on_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    PyObject *callable = args[2];
    if (nargs >= 3 && !PyFunction_Check(callable) &&
        !(PyMethod_Check(callable) && PyFunction_Check(PyMethod_GET_FUNCTION(callable))) &&
        fh_minimal->depth < FH_MINIMAL_DEPTH)
        fh_minimal_leave((size_t)callable);
    Py_RETURN_NONE;
}

static PyObject *fh_minimal_on_c_return(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    (void)args;
    (void)nargs;
    if (fh_minimal->depth > 0)
        fh_minimal_enter();
    Py_RETURN_NONE;
}
#else
static PyObject *fh_minimal_on_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self, (void)args, (void)nargs;
    Py_RETURN_NONE;
}
#define fh_minimal_on_c_return fh_minimal_on_call
#endif

static PyMethodDef fh_minimal_monitor_callbacks[] = {
    {"minimal_on_call", (PyCFunction)(void (*)(void))fh_minimal_on_call, METH_FASTCALL, "CALL"},
    {"minimal_on_c_return", (PyCFunction)(void (*)(void))fh_minimal_on_c_return, METH_FASTCALL, "C_RETURN"},
};

/* The same two callbacks as objects that CPython calls through their own
 * vectorcall slot, as fasthost's are (capture/fh_monitor.h), rather than
 * through its trampoline for builtin functions: the floor of that way of
 * being called. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} fh_minimal_vectorcall_object;

static PyObject *fh_minimal_vectorcall_on_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kw)
{
    (void)kw;
    return fh_minimal_on_call(self, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *fh_minimal_vectorcall_on_c_return(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kw)
{
    (void)kw;
    return fh_minimal_on_c_return(self, args, PyVectorcall_NARGS(nargsf));
}

static void fh_minimal_vectorcall_dealloc(PyObject *self) { PyObject_Free(self); }

static PyTypeObject fh_minimal_vectorcall_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bench._native.MinimalCallback",
    .tp_basicsize = sizeof(fh_minimal_vectorcall_object),
    .tp_dealloc = fh_minimal_vectorcall_dealloc,
    .tp_vectorcall_offset = offsetof(fh_minimal_vectorcall_object, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
};

/* Callback i (0: CALL, 1: C_RETURN and C_RAISE), a builtin function or
 * (`vectorcall`) an object of the type above. */
static PyObject *fh_minimal_monitor_callback(int i, int vectorcall)
{
    if (!fh_minimal_ready())
        return PyErr_NoMemory();
    if (!vectorcall)
        return PyCFunction_New(&fh_minimal_monitor_callbacks[i], NULL);
    if (PyType_Ready(&fh_minimal_vectorcall_type) < 0)
        return NULL;
    fh_minimal_vectorcall_object *callback = PyObject_New(fh_minimal_vectorcall_object, &fh_minimal_vectorcall_type);
    if (callback != NULL)
        callback->vectorcall = i == 0 ? fh_minimal_vectorcall_on_call : fh_minimal_vectorcall_on_c_return;
    return (PyObject *)callback;
}

/* ---- peers for bench/: recorders that share state between threads ------ */

/* What a recorder without per-thread state does: one histogram for every
 * thread, guarded by a mutex or updated with atomic read-modify-writes.
 * Each keeps its start timestamp where fasthost keeps its stack (in the
 * caller's frame here: the loops below). */
static struct {
    pthread_mutex_t lock;
    uint64_t leaves;
    uint64_t counts[60 << FH_MINIMAL_PRECISION];
} fh_shared = {.lock = PTHREAD_MUTEX_INITIALIZER};

static FH_NOINLINE uint64_t fh_mutex_leave(void)
{
    pthread_mutex_lock(&fh_shared.lock);
    fh_shared.leaves++;
    pthread_mutex_unlock(&fh_shared.lock);
    return fh_minimal_ticks();
}

static FH_NOINLINE void fh_mutex_enter(uint64_t start)
{
    uint64_t ticks = fh_minimal_ticks() - start;
    pthread_mutex_lock(&fh_shared.lock);
    fh_shared.counts[fh_bucket_index(ticks, FH_MINIMAL_PRECISION)]++;
    pthread_mutex_unlock(&fh_shared.lock);
}

static FH_NOINLINE uint64_t fh_atomic_leave(void)
{
    __atomic_fetch_add(&fh_shared.leaves, 1, __ATOMIC_RELAXED);
    return fh_minimal_ticks();
}

static FH_NOINLINE void fh_atomic_enter(uint64_t start)
{
    uint64_t ticks = fh_minimal_ticks() - start;
    __atomic_fetch_add(&fh_shared.counts[fh_bucket_index(ticks, FH_MINIMAL_PRECISION)], 1, __ATOMIC_RELAXED);
}

enum fh_pair_kind { FH_PAIR_FASTHOST = 0, FH_PAIR_MINIMAL = 1, FH_PAIR_MUTEX = 2, FH_PAIR_ATOMIC = 3 };

static void fh_pairs(int kind, size_t n, size_t target)
{
    uint64_t start;
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case FH_PAIR_FASTHOST:
            FH_LeaveRuntime(target);
            FH_EnterRuntime();
            break;
        case FH_PAIR_MINIMAL:
            fh_minimal_leave(target);
            fh_minimal_enter();
            break;
        case FH_PAIR_MUTEX:
            start = fh_mutex_leave();
            fh_mutex_enter(start);
            break;
        default:
            start = fh_atomic_leave();
            fh_atomic_enter(start);
            break;
        }
    }
}

/* Thread scaling: `nthreads` pthreads (no GIL) do `n` pairs each of `kind`,
 * released together once all are ready. Returns the ns from their release
 * to the last one's end, or 0 when threads could not be made (then the
 * ones made are told to end without working: a thread waiting in
 * pthread_barrier_wait could not be cancelled, it is no cancellation point). */
typedef struct fh_scaling_gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int ready; /* workers waiting */
    int state; /* 0: wait, 1: go, -1: end without working */
} fh_scaling_gate;

typedef struct fh_scaling_worker {
    pthread_t thread;
    fh_scaling_gate *gate;
    int kind;
    size_t n;
} fh_scaling_worker;

static void *fh_scaling_main(void *arg)
{
    fh_scaling_worker *w = (fh_scaling_worker *)arg;
    fh_minimal_ready();
    fh_pairs(w->kind, 1, 0x5CA1E); /* the first call allocates: not timed */
    pthread_mutex_lock(&w->gate->lock);
    w->gate->ready++;
    pthread_cond_broadcast(&w->gate->changed);
    while (w->gate->state == 0)
        pthread_cond_wait(&w->gate->changed, &w->gate->lock);
    int go = w->gate->state > 0;
    pthread_mutex_unlock(&w->gate->lock);
    if (go)
        fh_pairs(w->kind, w->n, 0x5CA1E);
    return NULL;
}

static uint64_t fh_scaling_run(int kind, int nthreads, size_t n)
{
    fh_scaling_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    fh_scaling_worker *workers = (fh_scaling_worker *)calloc((size_t)nthreads, sizeof(fh_scaling_worker));
    if (workers == NULL)
        return 0;
    int started = 0;
    for (; started < nthreads; started++) {
        workers[started] = (fh_scaling_worker){.gate = &gate, .kind = kind, .n = n};
        if (pthread_create(&workers[started].thread, NULL, fh_scaling_main, &workers[started]) != 0)
            break;
    }
    pthread_mutex_lock(&gate.lock);
    while (gate.ready < started)
        pthread_cond_wait(&gate.changed, &gate.lock);
    gate.state = started == nthreads ? 1 : -1;
    uint64_t t0 = fh_monotonic_ns();
    pthread_cond_broadcast(&gate.changed);
    pthread_mutex_unlock(&gate.lock);
    for (int i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    uint64_t elapsed = started == nthreads ? fh_monotonic_ns() - t0 : 0;
    free(workers);
    return elapsed;
}

/* Growth: `n` pairs, each on top of `depth - 1` open frames (alternating M
 * and U, as callbacks nest). Elapsed ns of the pairs alone. */
static uint64_t fh_nested_pair_loop(size_t n, uint32_t depth, size_t target)
{
    for (uint32_t d = 1; d < depth; d++) {
        if (d % 2)
            FH_ReverseEnterRuntime();
        else
            FH_LeaveRuntime(target + d);
    }
    uint64_t t0 = fh_monotonic_ns();
    fh_pairs(FH_PAIR_FASTHOST, n, target);
    uint64_t elapsed = fh_monotonic_ns() - t0;
    for (uint32_t d = depth - 1; d >= 1; d--) {
        if (d % 2)
            FH_ReverseLeaveRuntime();
        else
            FH_EnterRuntime();
    }
    return elapsed;
}

/* Growth: `n` pairs cycling over `distinct` targets. Elapsed ns. */
static uint64_t fh_targets_pair_loop(size_t n, size_t distinct, size_t target)
{
    for (size_t i = 0; i < distinct; i++) { /* meet every target once first */
        FH_LeaveRuntime(target + 16 * i);
        FH_EnterRuntime();
    }
    uint64_t t0 = fh_monotonic_ns();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        FH_LeaveRuntime(target + 16 * k);
        FH_EnterRuntime();
        if (++k == distinct)
            k = 0;
    }
    return fh_monotonic_ns() - t0;
}

#endif /* FASTHOST_BENCH_NATIVE_H */
