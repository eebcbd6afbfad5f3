/* fh_runtime.h -- the transition protocol (this file gathers the core's headers): per-thread stacks of frames,
 * counters and histograms, kept without locks.
 *
 * One translation unit includes this file and owns the runtime (the Cython
 * module `fasthost._core`, or the plain-C sanitizer harness). Other native
 * code reaches that runtime through fasthost.h and a capsule, never by
 * including this header, which would give it a runtime of its own.
 *
 * Threading model.
 *   - Each thread that makes a call gets an fh_thread, allocated on its first
 *     call, put on the registry list (the only lock, taken once per thread)
 *     and reached afterwards through one initial-exec TLS pointer.
 *   - Only the owning thread writes its fh_thread. Readers (snapshot) load
 *     the counters relaxed; structure that appears later (targets, histogram
 *     rows) is published with a release store and read with an acquire load.
 *   - Sessions are numbered (epochs). start() and reset() hand out a new
 *     epoch; a thread notices on its next call and zeroes its own data there
 *     (so no other thread ever writes it). Readers ignore threads whose data
 *     belongs to an older epoch.
 *   - The stack mirrors the real nesting whatever happens: every open is
 *     remembered, recorded or not, so that its close pops it and nothing
 *     else. A thread's recorded frames of this session are in `stack`; when
 *     a new session reaches the thread, they are set aside below it (as
 *     runs: `aside`), so each session has its full max_depth; an open that
 *     is not recorded (refused, or made while stopped) is a count on the
 *     frame it nests in. Closes pop set-aside frames as HOST_E_ABANDONED and
 *     unrecorded opens as HOST_E_CLRNOTAVAILABLE.
 *   - Readers, start() and reset() are serialised by their caller (the GIL
 *     in the Python module, a mutex in the C harness), so a thread's data
 *     can only be zeroed or freed while no reader looks at it.
 *   - The hot path touches one global word (`gate`), read-only, and the
 *     thread's own memory. Anything unusual (first call, new epoch, error,
 *     poisoned state, new target) goes to an out-of-line slow path.
 */
#ifndef FASTHOST_RUNTIME_H
#define FASTHOST_RUNTIME_H

/* The core, one role a header, in the order they build on each other. */
#include "fh_protocol.h"    /* vocabulary: calls, results, HRESULTs */
#include "fh_state.h"       /* structs, arena, targets, histograms, call sites */
#include "fh_threads.h"     /* a thread's state: made, synced, folded */
#include "fh_transitions.h" /* the four calls: the hot path */
#include "fh_session.h"     /* start, stop, reset, fork */
#include "fh_readers.h"     /* the snapshot side */

#endif /* FASTHOST_RUNTIME_H */
