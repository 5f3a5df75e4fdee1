// The outcome of a virtual work request, as metrics label it and clients read it: the
// ibv_wc_status values, then the engine's own outcomes (deadline, cancelled).
// Threading: pure functions.
#ifndef BRAID_DATAPLANE_COMMON_OUTCOME_H_
#define BRAID_DATAPLANE_COMMON_OUTCOME_H_

#include <infiniband/verbs.h>

namespace braid::common {

inline constexpr int kOutcomeDeadline = IBV_WC_TM_RNDV_INCOMPLETE + 1;
inline constexpr int kOutcomeCancelled = kOutcomeDeadline + 1;
inline constexpr int kNumOutcomes = kOutcomeCancelled + 1;
// "success", "retry_exc_err", ..., "deadline_exceeded", "cancelled"; "unknown" out of range.
const char* OutcomeName(int outcome);

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_OUTCOME_H_
