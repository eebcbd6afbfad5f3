/* A real native library for the tests: pthreads that Python never created,
 * each calling a function pointer (a ctypes callback) `count` times. */
#include <pthread.h>
#include <stdlib.h>

typedef void (*callback_t)(int);

struct job {
    callback_t callback;
    int count;
};

static void *run(void *arg)
{
    struct job *job = arg;
    for (int i = 0; i < job->count; i++)
        job->callback(i);
    return NULL;
}

/* Returns 0, or the error of pthread_create. */
int call_from_threads(callback_t callback, int nthreads, int count)
{
    pthread_t threads[64];
    struct job job = {callback, count};
    int started = 0, err = 0;
    if (nthreads > 64)
        nthreads = 64;
    for (; started < nthreads; started++) {
        err = pthread_create(&threads[started], NULL, run, &job);
        if (err != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    return err;
}
