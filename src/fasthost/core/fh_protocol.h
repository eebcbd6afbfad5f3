/* fh_protocol.h -- the vocabulary of the transition protocol: the four calls,
 * their results and HRESULTs, the kinds of frames and histograms, and the
 * limits of a session's configuration. No state, no code.
 */
#ifndef FASTHOST_PROTOCOL_H
#define FASTHOST_PROTOCOL_H

#include <stdint.h>

/* ---- protocol vocabulary ------------------------------------------------ */

/* Calls, in the order of the CLR's IHostTaskManager IDL. */
enum fh_call {
    FH_CALL_LEAVE = 0,
    FH_CALL_ENTER = 1,
    FH_CALL_REVERSE_LEAVE = 2,
    FH_CALL_REVERSE_ENTER = 3,
    FH_CALLS = 4
};

/* Results, as small indexes; fh_hresult_of maps them to HRESULTs. */
enum fh_result {
    FH_OK = 0,
    FH_CLR_NOT_AVAILABLE = 1,
    FH_TIMEOUT = 2,
    FH_NOT_OWNER = 3,
    FH_ABANDONED = 4,
    FH_FAIL = 5,
    FH_OUT_OF_MEMORY = 6,
    FH_RESULTS = 7
};

static const int32_t fh_hresult_of[FH_RESULTS] = {
    (int32_t)0x00000000u, /* S_OK */
    (int32_t)0x80131023u, /* HOST_E_CLRNOTAVAILABLE */
    (int32_t)0x80131024u, /* HOST_E_TIMEOUT */
    (int32_t)0x80131025u, /* HOST_E_NOT_OWNER */
    (int32_t)0x80131026u, /* HOST_E_ABANDONED */
    (int32_t)0x80004005u, /* E_FAIL */
    (int32_t)0x8007000Eu, /* E_OUTOFMEMORY */
};

/* Frame kinds are distinct non-zero bytes so that a zeroed or overwritten
 * frame is recognised as corruption rather than read as a valid kind. */
enum fh_frame_kind { FH_FRAME_UNMANAGED = 0x55, FH_FRAME_MANAGED = 0x4d };

/* A frame a capture opened (a native call seen by a hook, a callback it
 * ran) has its kind with this bit set. The protocol's closes do not see
 * such frames, nor the captures' closes the protocol's, so a protocol pair
 * keeps pairing whatever captured calls it straddles (fh_uncover,
 * fh_captured_where). */
#define FH_FRAME_CAPTURED 0x20u
#define FH_FRAME_CAPTURED_UNMANAGED (FH_FRAME_UNMANAGED | FH_FRAME_CAPTURED)
#define FH_FRAME_CAPTURED_MANAGED (FH_FRAME_MANAGED | FH_FRAME_CAPTURED)

/* The histograms a snapshot reads. Exclusive durations are not kept as
 * such: a frame without callbacks inside has exclusive == inclusive, so only
 * frames with callbacks keep both (NESTED_*), and
 *     exclusive = INCLUSIVE - NESTED_INCLUSIVE + NESTED_EXCLUSIVE
 * bucket by bucket, exactly. The common close records one histogram. */
enum fh_hist_kind {
    FH_HIST_INCLUSIVE = 0,        /* all U frames of a target */
    FH_HIST_NESTED_INCLUSIVE = 1, /* U frames with M frames inside */
    FH_HIST_NESTED_EXCLUSIVE = 2, /* the same frames, exclusive durations */
    FH_HIST_CALLBACK = 3,         /* M frames, per thread */
};

#define FH_DEFAULT_MAX_DEPTH 256u
#define FH_DEFAULT_PRECISION 5u
#define FH_DEFAULT_MAX_TARGETS 1024u
#define FH_MAX_DEPTH_LIMIT (1u << 20)
#define FH_MAX_TARGETS_LIMIT (1u << 20)

#endif /* FASTHOST_PROTOCOL_H */
