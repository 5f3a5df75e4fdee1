// The service names an agent's grpc.health.v1.Health answers for (alongside the API in
// agent.proto; doc/braidd.md, "Health"). Readiness and liveness differ on purpose: a node whose
// links are all down, or whose devices the operator drained, is not ready for new work, but
// restarting its agent would only destroy every VQP on it; only a stalled data-plane thread is.
//   ""          readiness: SERVING while the data-plane thread turns, at least one device is
//               healthy and the agent is not draining to stop.
//   "liveness"  SERVING while the data-plane thread turns (the stall watchdog), whatever the
//               devices and through a drain.
#ifndef BRAID_PROTO_BRAID_V1_HEALTH_SERVICES_H_
#define BRAID_PROTO_BRAID_V1_HEALTH_SERVICES_H_

namespace braid::v1 {

inline constexpr const char* kReadinessService = "";
inline constexpr const char* kLivenessService = "liveness";

}  // namespace braid::v1

#endif  // BRAID_PROTO_BRAID_V1_HEALTH_SERVICES_H_
