// Agent: one braidd — provider, engine, watchdog, gRPC server (Agent service, health,
// reflection) and the Prometheus exporter, started and stopped together.
//
// Health (proto/braid/v1/health_services.h): readiness ("") SERVING while the engine's loop turns
// (watchdog), at least one device is healthy and no drain to stop is under way; NOT_SERVING
// otherwise. Liveness ("liveness") SERVING while the loop turns.
// Threading: Start/Shutdown from the owning thread; the parts run their own threads.
#ifndef BRAID_SERVER_AGENT_H_
#define BRAID_SERVER_AGENT_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/stall_watchdog.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/provider.h"
#include "server/agent_config.h"
#include "server/agent_service.h"
#include "server/audit_log.h"
#include "server/authenticator.h"
#include "server/metrics_collector.h"
#include "server/metrics_endpoint.h"
#include "server/reclaimer.h"
#include "server/session_listener.h"
#include "server/unix_listener.h"

namespace braid::server {

class Agent {
 public:
  static common::Result<std::unique_ptr<Agent>> Start(AgentConfig config);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // The drain before Shutdown (SIGTERM): health answers NOT_SERVING at once (probes and load
  // balancers look elsewhere) and transfers submitted from now on are refused with CANCELLED
  // ("the agent is shutting down"), while those accepted before go on, until none is left or
  // `limit` passed. `wait(step)` sleeps up to `step` between looks and returns true to end the
  // drain at once (a second signal). Call from the thread that then calls Shutdown.
  void Drain(std::chrono::milliseconds limit,
             const std::function<bool(std::chrono::milliseconds)>& wait);
  // Stops accepting calls, ends open streams, stops the engine. Idempotent.
  void Shutdown();
  const AgentConfig& config() const { return config_; }
  bool serving() const;

  explicit Agent(AgentConfig config) : config_(std::move(config)) {}

 private:
  common::Status Init();
  void LogSoftNics();
  void HealthLoop();
  uint32_t HealthPeriodMs() const;
  // Carries the engine's recovery requests to the peer agents (RecoverQp) and the answers back.
  void RecoveryLoop();

  AgentConfig config_;
  std::string
      control_endpoint_;  // config_.ControlEndpoint(), taken once (it may ask the host name)
  std::unique_ptr<soft::TcpFabric> fabric_;
  std::unique_ptr<verbs::Provider> provider_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::StallWatchdog> watchdog_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Reclaimer> reclaimer_;  // ended leases' and sessions' resources
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  UnixListener unix_listener_;
  std::unique_ptr<SessionListener>
      session_listener_;  // with the Unix socket: its path + ".session"
  std::unique_ptr<MetricsEndpoint> metrics_;
  std::shared_ptr<MetricsCollector> collector_;
  void LogEvents();
  std::shared_ptr<engine::EventWatcher> event_log_;  // every state change, one log line each
  std::thread health_thread_;
  std::thread recovery_thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool serving_ = false;   // guarded by mu_
  bool draining_ = false;  // guarded by mu_
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AGENT_H_
