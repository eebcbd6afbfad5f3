/* fh_follow.h -- the C side of follow.py: a SIGTERM always ends a followed
 * multiprocessing child.
 *
 * follow.py writes such a child's data from a Python-level SIGTERM handler
 * (Pool.terminate() ends its workers with SIGTERM, then joins them). Python
 * runs that handler only once the main thread is back in the interpreter.
 * A SIGTERM that lands just before a blocking call (multiprocessing's
 * SemLock checks for signals, then waits in sem_wait), or while the main
 * thread is in a native wait that no signal interrupts (a condition
 * variable), leaves the handler pending for good, and terminate() hangs;
 * without fasthost the signal's default action would have ended the
 * process. So a watchdog thread hears of each SIGTERM from a handler
 * chained in front of Python's, sends it again to the main thread now and
 * then, which breaks an interruptible wait so that the Python handler runs,
 * and ends the process by SIGTERM's default action if the handler has not
 * begun after FH_TERM_KICKS tries: that child writes no data, and the run
 * names it as one that wrote none. Once the handler has begun, the process
 * has FH_TERM_WRITE_TICKS to write and die before the same default action
 * ends it (a file cut short is never renamed into place: no data either).
 */
#ifndef FASTHOST_FOLLOW_H
#define FASTHOST_FOLLOW_H

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FH_TERM_KICKS 20         /* tries, FH_TERM_KICK_NS apart: 1 s in all */
#define FH_TERM_KICK_NS 50000000L
#define FH_TERM_WRITE_TICKS 100 /* FH_TERM_KICK_NS each: 5 s to write, once the handler began */

static struct sigaction fh_term_python; /* Python's handler, which ours calls first */
static sem_t fh_term_heard;
static volatile sig_atomic_t fh_term_begun; /* the Python handler has begun */
static pid_t fh_term_armed_in;              /* the process whose watchdog runs */
static pthread_t fh_term_main;

static void fh_term_handler(int signum, siginfo_t *info, void *context)
{
    int saved = errno;
    if (fh_term_python.sa_flags & SA_SIGINFO)
        fh_term_python.sa_sigaction(signum, info, context);
    else if (fh_term_python.sa_handler != SIG_DFL && fh_term_python.sa_handler != SIG_IGN)
        fh_term_python.sa_handler(signum);
    sem_post(&fh_term_heard); /* async-signal-safe */
    errno = saved;
}

static void *fh_term_watch(void *unused)
{
    (void)unused;
    struct timespec pause = {0, FH_TERM_KICK_NS};
    while (sem_wait(&fh_term_heard) != 0) {
    }
    for (int kick = 0; kick < FH_TERM_KICKS && !fh_term_begun; kick++) {
        nanosleep(&pause, NULL);
        if (!fh_term_begun)
            pthread_kill(fh_term_main, SIGTERM);
    }
    /* Writing is Python code: another thread can keep it from the GIL for
     * good (a native call that holds it), and an exception other than
     * Exception (a KeyboardInterrupt) skips the dying. The handler ends the
     * process itself when all goes well; this is the bound otherwise. */
    for (int tick = 0; fh_term_begun && tick < FH_TERM_WRITE_TICKS; tick++)
        nanosleep(&pause, NULL);
    signal(SIGTERM, SIG_DFL);
    kill(getpid(), SIGTERM); /* taken by a thread that does not block it: the process ends */
    return NULL;
}

/* Chains the watchdog's handler in front of the SIGTERM handler Python has
 * just installed, in the calling (main) thread's process, once per process.
 * 0, or -1 with errno set (the handler stays Python's alone). */
static int fh_term_arm(void)
{
    if (fh_term_armed_in == getpid())
        return 0;
    struct sigaction ours;
    if (sigaction(SIGTERM, NULL, &fh_term_python) != 0 || sem_init(&fh_term_heard, 0, 0) != 0)
        return -1;
    fh_term_begun = 0;
    fh_term_main = pthread_self();
    /* The watchdog takes no signal itself: it inherits a mask of all. */
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &before);
    pthread_t watchdog;
    int made = pthread_create(&watchdog, NULL, fh_term_watch, NULL);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (made != 0) {
        errno = made;
        return -1;
    }
    pthread_detach(watchdog);
    memset(&ours, 0, sizeof(ours));
    ours.sa_sigaction = fh_term_handler;
    ours.sa_flags = (fh_term_python.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
    ours.sa_mask = fh_term_python.sa_mask;
    if (sigaction(SIGTERM, &ours, NULL) != 0)
        return -1;
    fh_term_armed_in = getpid();
    return 0;
}

/* Called by the Python handler first: the watchdog stands down. */
static void fh_term_begin(void) { fh_term_begun = 1; }

#endif /* FASTHOST_FOLLOW_H */
