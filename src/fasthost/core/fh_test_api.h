/* fh_test_api.h -- private hooks into the runtime for fasthost._testing.
 *
 * Published by fasthost._core as the capsule below; only the test-only
 * extension consumes it. Not part of the public C API.
 */
#ifndef FASTHOST_TEST_API_H
#define FASTHOST_TEST_API_H

#include <stdint.h>

#define FH_TEST_CAPSULE_NAME "fasthost._core._TEST_API"

enum fh_corruption { FH_CORRUPT_DEPTH = 1, FH_CORRUPT_TOP_FRAME = 2 };

typedef struct fh_test_api {
    /* Breaks the calling thread's state (enum fh_corruption); -1 if the
     * thread has no state (or no frame, for FH_CORRUPT_TOP_FRAME). */
    int (*corrupt_current_thread)(int how);
    /* Sets the time of the "manual" clock, in ns. */
    void (*set_manual_time)(uint64_t ns);
    /* `count` closes of `ns` ns at a call site of the calling thread, in one
     * step; -1 if it is not recording or the site finds no room. */
    int (*add_site_samples)(uint64_t code, uint32_t where, uint64_t target, uint64_t ns, uint64_t count);
} fh_test_api;

#endif /* FASTHOST_TEST_API_H */
