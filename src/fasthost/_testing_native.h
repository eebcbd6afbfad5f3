/* _testing_native.h -- native helpers for fasthost's tests.
 *
 * Everything here uses the public C API (fasthost.h), as a third-party
 * extension would, and runs on pthreads that never touch the GIL. The C the
 * benchmarks compare against lives with them, in bench/_native.h.
 */
#ifndef FASTHOST_TESTING_NATIVE_H
#define FASTHOST_TESTING_NATIVE_H

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include "fasthost.h"

enum fh_worker_mode {
    FH_WORK_PAIRS = 0,      /* leave/enter */
    FH_WORK_NESTED = 1,     /* leave, reverse_enter, leave, enter, reverse_leave, enter */
    FH_WORK_LEAVE_OPEN = 2, /* `count` leaves, then exit with the frames open */
    FH_WORK_TARGETS = 3,    /* `count` leave/enter pairs cycling over `distinct` targets */
};

typedef struct fh_worker {
    pthread_t thread;
    int mode;
    size_t count;
    size_t target;
    size_t distinct;
    uint64_t not_ok; /* calls that did not return S_OK */
} fh_worker;

static void *fh_worker_main(void *arg)
{
    fh_worker *w = (fh_worker *)arg;
    uint64_t not_ok = 0;
    for (size_t i = 0; i < w->count; i++) {
        switch (w->mode) {
        case FH_WORK_PAIRS:
            not_ok += FH_LeaveRuntime(w->target) != FH_S_OK;
            not_ok += FH_EnterRuntime() != FH_S_OK;
            break;
        case FH_WORK_NESTED:
            not_ok += FH_LeaveRuntime(w->target) != FH_S_OK;
            not_ok += FH_ReverseEnterRuntime() != FH_S_OK;
            not_ok += FH_LeaveRuntime(w->target + 1) != FH_S_OK;
            not_ok += FH_EnterRuntime() != FH_S_OK;
            not_ok += FH_ReverseLeaveRuntime() != FH_S_OK;
            not_ok += FH_EnterRuntime() != FH_S_OK;
            break;
        case FH_WORK_LEAVE_OPEN:
            not_ok += FH_LeaveRuntime(w->target) != FH_S_OK;
            break;
        case FH_WORK_TARGETS:
            not_ok += FH_LeaveRuntime(w->target + i % w->distinct) != FH_S_OK;
            not_ok += FH_EnterRuntime() != FH_S_OK;
            break;
        }
    }
    w->not_ok = not_ok;
    return NULL;
}

/* Runs `nthreads` workers to completion; 0, or an errno from pthread. */
static int fh_run_workers(fh_worker *workers, int nthreads)
{
    int started = 0, err = 0;
    for (; started < nthreads; started++) {
        err = pthread_create(&workers[started].thread, NULL, fh_worker_main, &workers[started]);
        if (err != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    return err;
}

/* A native thread that opens one frame and closes it when told to. */
typedef struct fh_held_frame {
    pthread_t thread;
    size_t target;
    int kind; /* 0: U frame, 1: M frame */
    sem_t opened, release_;
    int32_t open_result, close_result;
} fh_held_frame;

static void *fh_held_main(void *arg)
{
    fh_held_frame *h = (fh_held_frame *)arg;
    h->open_result = h->kind == 0 ? FH_LeaveRuntime(h->target) : FH_ReverseEnterRuntime();
    sem_post(&h->opened);
    sem_wait(&h->release_);
    h->close_result = h->kind == 0 ? FH_EnterRuntime() : FH_ReverseLeaveRuntime();
    return NULL;
}

#endif /* FASTHOST_TESTING_NATIVE_H */
