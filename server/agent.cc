#include "server/agent.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "dataplane/common/named_thread.h"
#include "dataplane/providers/provider_registry.h"
#include "proto/braid/v1/health_services.h"
#include "server/listen_address.h"
#include "server/log_sink.h"
#include "server/proto_mapping.h"
#include "server/tls_credentials.h"

namespace braid::server {

using common::Result;
using common::Status;

// How long calls still open at shutdown have to finish before they are cancelled.
constexpr std::chrono::milliseconds kShutdownGrace{2000};
constexpr const char* kShuttingDown = "the agent is shutting down";

Result<std::unique_ptr<Agent>> Agent::Start(AgentConfig config) {
  config.ApplyDefaults();
  BRAID_RETURN_IF_ERROR(config.Validate());
  auto agent = std::make_unique<Agent>(std::move(config));
  Status s = agent->Init();
  if (!s.ok()) {
    agent->Shutdown();
    return s;
  }
  return agent;
}

// Soft NICs as the agent found them at start: the address an interface stood for, and a warning
// when peers on other hosts are meant to call (the control endpoint is not this host's loopback)
// but a soft NIC listens on a loopback address none of them can reach.
void Agent::LogSoftNics() {
  if (provider_->name() != "soft") return;
  const Result<std::vector<verbs::DeviceInfo>> devices = provider_->ListDevices();
  if (!devices.ok()) return;
  const std::optional<ListenAddress> endpoint = ListenAddress::Parse(control_endpoint_);
  const std::optional<verbs::Gid> endpoint_ip =
      endpoint ? verbs::Gid::ParseIpv4(endpoint->host) : std::nullopt;
  const bool remote_peers =
      endpoint && endpoint->host != "localhost" && !(endpoint_ip && endpoint_ip->IsLoopback());
  for (const soft::SoftNicConfig& nic : config_.soft_nics) {
    for (const verbs::DeviceInfo& d : *devices) {
      if (d.name != nic.name) continue;
      if (!nic.interface.empty()) {
        spdlog::info(
            "agent={} soft_nic={} interface={} address={} msg=\"the soft NIC takes its "
            "interface's IPv4 address\"",
            config_.agent_id, nic.name, nic.interface, d.gid.ToAddress());
      }
      if (remote_peers && d.gid.IsLoopback()) {
        spdlog::warn(
            "agent={} soft_nic={} address={} control_endpoint={} msg=\"the soft NIC "
            "is on a loopback address that agents on other hosts cannot reach: give it "
            "this host's address (soft.nics: an ip or an interface)\"",
            config_.agent_id, nic.name, d.gid.ToAddress(), control_endpoint_);
      }
    }
  }
}

Status Agent::Init() {
  // The engine polls while anything is in flight or lately was, and arms its CQs before it sleeps:
  // a held ACK never waits on it (doc/soft_provider.md, "ACK coalescing").
  fabric_ = std::make_unique<soft::TcpFabric>(soft::TcpFabricOptions{
      .port = config_.soft_port, .ack_delay_ns = soft::kSteadyPollerAckDelayNs});
  verbs::ProviderConfig pc;
  pc.kind = config_.provider;
  pc.ibverbs.gid_index = config_.ibverbs_gid_index;
  pc.soft.nics = config_.soft_nics;
  pc.soft.fabric = fabric_.get();
  BRAID_ASSIGN_OR_RETURN(provider_, verbs::CreateProvider(pc));
  if (config_.provider == "auto") {
    spdlog::info("agent={} provider=auto chose={} msg=\"{}\"", config_.agent_id, provider_->name(),
                 provider_->name() == "soft"
                     ? "rdma-core lists no RDMA device: soft NICs over TCP (set provider: ibverbs "
                       "to refuse to start without one)"
                     : "rdma-core lists RDMA devices (their ports are followed)");
  }

  engine::EngineOptions eo;
  eo.provider = provider_.get();
  eo.agent_id = config_.agent_id;
  control_endpoint_ = config_.ControlEndpoint();
  LogSoftNics();
  eo.control_endpoint = control_endpoint_;
  if (config_.auth.tls.enabled()) {
    BRAID_ASSIGN_OR_RETURN(eo.agent_identity, CertificateIdentity(config_.auth.tls.cert));
  }
  eo.region_dir = config_.region_dir;
  eo.max_region_bytes = config_.max_region_bytes;
  eo.max_regions = config_.max_regions;
  eo.max_regions_per_owner = config_.max_regions_per_caller;
  eo.max_region_bytes_per_owner = config_.max_region_bytes_per_caller;
  eo.max_vqps_per_owner = config_.max_vqps_per_caller;
  eo.max_transfers = config_.max_transfers;
  eo.max_transfers_per_owner = config_.max_transfers_per_caller;
  eo.max_session_bytes_per_owner = config_.max_session_bytes_per_caller;
  eo.default_timeout_ms = config_.default_timeout_ms;
  eo.recovery_budget_ms = config_.recovery_budget_ms;
  eo.qp_cooldown_ms = config_.qp_cooldown_ms;
  eo.fault_injection = config_.fault_injection;
  eo.max_cq_entries = config_.max_cq_entries;
  eo.fd_reserve = config_.fd_reserve;
  eo.memory_reserve = config_.memory_reserve;
  eo.yield_when_idle = config_.engine_yield;
  eo.in_flight_spin_us = config_.engine_spin_us;
  // An idle engine wakes only to move its heartbeat, and the health loop reads it, a few times
  // per stall threshold (each wake-up costs CPU that an idle agent should not spend).
  eo.idle_wait_ms = HealthPeriodMs();
  BRAID_ASSIGN_OR_RETURN(engine_, engine::Engine::Start(std::move(eo)));
  watchdog_ = std::make_unique<engine::StallWatchdog>(*engine_, config_.watchdog_ms);
  if (engine_->stale_region_files_removed() > 0) {
    spdlog::info(
        "agent={} region_dir={} removed={} msg=\"removed the region files of an earlier "
        "process of this agent\"",
        config_.agent_id, config_.region_dir, engine_->stale_region_files_removed());
  }

  AgentServiceOptions so;
  so.agent_id = config_.agent_id;
  so.control_endpoint = control_endpoint_;
  so.transfer_window = config_.transfer_window;
  so.transfer_window_per_caller = config_.transfer_window_per_caller;
  so.watch_backlog_per_caller = config_.watch_backlog_per_caller;
  so.leases_per_caller = config_.max_leases_per_caller;
  so.lease_grace_ms = config_.lease_grace_ms;
  so.fault_injection = config_.fault_injection;
  so.plaintext = !config_.tcp_listen.empty() && !config_.auth.tls.enabled();
  if (!config_.auth.tokens_file.empty()) {
    BRAID_RETURN_IF_ERROR(Authenticator::CheckTokensFile(config_.auth.tokens_file));
  }
  auth_ = std::make_unique<Authenticator>(config_.auth);
  audit_ = std::make_unique<AuditLog>(config_.agent_id);
  reclaimer_ = std::make_unique<Reclaimer>(*engine_);
  service_ = std::make_unique<AgentService>(*engine_, so, *auth_, *audit_, *reclaimer_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  if (!config_.tcp_listen.empty()) {
    builder.AddListeningPort(config_.tcp_listen, ListenerCredentials(config_.auth, *audit_),
                             &tcp_port);
  }
  // A connection that has not finished its handshake (TLS, HTTP/2 settings) within this is closed:
  // idle connections nobody authenticated do not hold descriptors for gRPC's default two minutes.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 5000);
  // gRPC listens with SO_REUSEPORT unless told not to: a second agent given a port a live one
  // serves on would then start, and the kernel would hand each new connection to either of them.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A client whose host vanished (no FIN) is noticed within the keepalive and its timeout: its
  // Hold calls end and what they held is given back.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(config_.client_keepalive_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(config_.client_keepalive_timeout_ms));
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || (!config_.tcp_listen.empty() && tcp_port == 0)) {
    return Status::IoError("gRPC server could not listen on " + config_.tcp_listen +
                           (config_.auth.tls.enabled()
                                ? " (or its TLS certificate, key or CA could not be loaded)"
                                : "") +
                           ": is the port in use (another agent?), or the host not an address of "
                           "this machine? Give a free port on a local address (listen.tcp)");
  }
  if (!config_.unix_socket.empty()) {
    BRAID_RETURN_IF_ERROR(unix_listener_.Start(config_.unix_socket, server_.get(), auth_.get(),
                                               audit_.get(), config_.unix_connections_per_uid));
    session_listener_ = std::make_unique<SessionListener>(*engine_, *auth_, *audit_, *reclaimer_,
                                                          config_.unix_connections_per_uid);
    BRAID_RETURN_IF_ERROR(session_listener_->Start(config_.unix_socket + ".session"));
  }
  if (so.plaintext) {
    spdlog::warn(
        "agent={} grpc_tcp={} msg=\"serving TCP WITHOUT TLS (plaintext: true): anyone who can "
        "reach this port can use the agent as whatever role anonymous callers have\"",
        config_.agent_id, config_.tcp_listen);
  }
  if (!config_.metrics_listen.empty()) {
    BRAID_ASSIGN_OR_RETURN(metrics_, MetricsEndpoint::Listen(config_.metrics_listen));
    collector_ = std::make_shared<MetricsCollector>(
        *engine_, *watchdog_, *audit_, service_->leases(), *reclaimer_, config_.metrics_per_qp);
    metrics_->Serve(collector_);
  }
  event_log_ = std::make_shared<engine::EventWatcher>(4096);
  BRAID_RETURN_IF_ERROR(engine_->WatchEvents(event_log_));
  health_thread_ = common::NamedThread("braid-health", [this] { HealthLoop(); });
  recovery_thread_ = common::NamedThread("braid-recovery", [this] { RecoveryLoop(); });
  if (config_.ControlEndpointFromHostName()) {
    spdlog::warn(
        "agent={} control_endpoint={} msg=\"listen.tcp has a wildcard host, so peers are told to "
        "call back on this host's name; set listen.advertise (--advertise) to an address they "
        "can reach if they cannot resolve it\"",
        config_.agent_id, control_endpoint_);
  }
  spdlog::info(
      "agent={} provider={} devices={} grpc_tcp={} control_endpoint={} grpc_unix={} metrics={} "
      "tls={} client_auth={} identities={} fault_injection={} fd_limit={} fd_reserve={} "
      "unix_connections_per_uid={} msg=\"serving\"",
      config_.agent_id, provider_->name(), engine_->num_devices(), config_.tcp_listen,
      control_endpoint_, config_.unix_socket, config_.metrics_listen, config_.auth.tls.enabled(),
      config_.auth.tls.enabled() ? ClientAuthName(config_.auth.tls.client_auth) : "-",
      config_.auth.identities.size(), config_.fault_injection, engine::FdBudget::Current().soft,
      config_.fd_reserve, config_.unix_connections_per_uid);
  return Status::Ok();
}

// How often the health thread reads the stall watchdog, sets the serving status and logs the
// engine's events, and how often an idle engine moves its heartbeat: four times per stall
// threshold, at most twice a second.
uint32_t Agent::HealthPeriodMs() const {
  return std::clamp<uint32_t>(config_.watchdog_ms / 4, 10, 500);
}

void Agent::HealthLoop() {
  const uint32_t period_ms = HealthPeriodMs();
  uint64_t ticks = 0;
  uint64_t trimmed_at = 0;  // engine_->releases() at the last trim
  // gRPC's health service starts out SERVING: the first pass sets both statuses whatever they are
  // (an agent started with every port down answered SERVING until a device had come up and gone).
  bool published = false;
  bool live = false;  // liveness as last set
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    const bool stalled = watchdog_->Check();
    lock.lock();
    if (stopping_) break;
    const bool serving = !draining_ && !stalled && engine_->healthy_devices() > 0;
    const char* why = draining_ ? kShuttingDown
                      : stalled ? "data-plane thread stalled"
                                : "no healthy device";
    if (stalled == live || !published) {  // liveness: the loop turns
      live = !stalled;
      server_->GetHealthCheckService()->SetServingStatus(v1::kLivenessService, live);
    }
    if (serving != serving_ || !published) {
      published = true;
      serving_ = serving;
      server_->GetHealthCheckService()->SetServingStatus(v1::kReadinessService, serving);
      if (serving) {
        spdlog::info("agent={} health=SERVING", config_.agent_id);
      } else {
        spdlog::warn("agent={} health=NOT_SERVING reason=\"{}\"", config_.agent_id, LogValue(why));
      }
    }
    lock.unlock();
    LogEvents();
    // Every 5 s, after VQPs or regions went, free memory inside the allocator's heaps goes back
    // to the system (small allocations of VQPs and streams that came and went), and so does the
    // metrics snapshot kept from before they went. Not otherwise: trimming walks the whole heap.
    if (++ticks % std::max<uint32_t>(1, 5000 / period_ms) == 0 &&
        engine_->releases() != trimmed_at) {
      trimmed_at = engine_->releases();
      if (collector_) collector_->DropCache();
      malloc_trim(0);
    }
    lock.lock();
    if (stopping_) break;
    cv_.wait_for(lock, std::chrono::milliseconds(period_ms));
  }
}

void Agent::LogEvents() {
  while (auto e = event_log_->events.TryPop()) {
    const bool bad =
        e->kind == engine::EventKind::kQpDied || e->kind == engine::EventKind::kQpCoolingDown ||
        e->kind == engine::EventKind::kVqpFailed || e->kind == engine::EventKind::kDeviceFaulted;
    spdlog::log(bad ? spdlog::level::warn : spdlog::level::info,
                "agent={} event={} vqp={} qp={} device={} cause=\"{}\"", config_.agent_id,
                engine::EventKindName(e->kind), e->vqp_id, e->qp_index, e->device,
                LogValue(e->cause));
  }
  if (event_log_->overflowed.load()) {  // fell behind: say so and subscribe again
    spdlog::warn("agent={} msg=\"event log fell behind; some state changes were not logged\"",
                 config_.agent_id);
    event_log_ = std::make_shared<engine::EventWatcher>(4096);
    (void)engine_->WatchEvents(event_log_);
  }
}

void Agent::RecoveryLoop() {
  // A channel per peer agent, closed once no recovery has used it for kPeerIdle: recovery is
  // rare, and the endpoints come from cards (a peer that went away must not hold a socket).
  static constexpr auto kPeerIdle = std::chrono::seconds(5);
  struct Peer {
    std::unique_ptr<v1::Agent::Stub> stub;
    std::chrono::steady_clock::time_point last_use;
  };
  std::map<std::string, Peer> peers;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(peers, [now](const auto& p) { return now - p.second.last_use > kPeerIdle; });
    auto request = engine_->recovery_requests().TryPop();
    if (!request) {
      engine_->recovery_requests().Wait(1000);  // Stop() wakes it
      continue;
    }
    Peer& peer_agent = peers[request->peer_endpoint];
    peer_agent.last_use = now;
    auto& stub = peer_agent.stub;
    if (!stub) {
      stub = v1::Agent::NewStub(
          grpc::CreateChannel(request->peer_endpoint, PeerCredentials(config_.auth)));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RecoverQpRequest rpc;
    rpc.set_vqp_id(request->peer_vqp_id);
    rpc.set_qp_index(request->qp_index);
    ToProto(request->card, rpc.mutable_qp());
    rpc.set_epoch(request->epoch);
    rpc.set_from_endpoint(control_endpoint_);
    rpc.set_to_incarnation(request->peer_incarnation);
    rpc.set_from_vqp_id(request->vqp_id);
    rpc.set_from_incarnation(engine_->incarnation());
    v1::RecoverQpResponse response;
    const grpc::Status s = stub->RecoverQp(&ctx, rpc, &response);
    const std::string why = "RecoverQp on " + request->peer_endpoint + ": " + s.error_message();
    common::Result<vqp::QpCard> peer =
        s.ok() ? FromProto(response.qp(), "qp")
        : s.error_code() == grpc::StatusCode::NOT_FOUND
            ? common::Result<vqp::QpCard>(common::Status::NotFound(why))
            : common::Result<vqp::QpCard>(common::Status::IoError(why));
    if (peer.ok()) {
      spdlog::info("agent={} vqp={} qp={} peer=\"{}\" msg=\"data QP recovered\"", config_.agent_id,
                   request->vqp_id, request->qp_index, LogValue(request->peer_endpoint));
    } else if (peer.status().message().find("recovery collision") != std::string_view::npos) {
      spdlog::debug("agent={} vqp={} qp={} msg=\"the peer leads this recovery\"", config_.agent_id,
                    request->vqp_id, request->qp_index);
    } else if (request->failed_attempts == 0) {  // later failures: the events say it once
      spdlog::warn(
          "agent={} vqp={} qp={} peer=\"{}\" error=\"{}\" msg=\"recovery attempt failed; "
          "retrying with backoff\"",
          config_.agent_id, request->vqp_id, request->qp_index, LogValue(request->peer_endpoint),
          LogValue(peer.status().ToString()));
    } else {
      spdlog::debug(
          "agent={} vqp={} qp={} attempt={} error=\"{}\" msg=\"recovery attempt "
          "failed\"",
          config_.agent_id, request->vqp_id, request->qp_index, request->failed_attempts + 1,
          LogValue(peer.status().ToString()));
    }
    engine_->CompleteRecovery(request->vqp_id, request->qp_index, request->attempt,
                              std::move(peer));
  }
}

bool Agent::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return serving_;
}

void Agent::Drain(std::chrono::milliseconds limit,
                  const std::function<bool(std::chrono::milliseconds)>& wait) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || draining_ || !engine_) return;
    draining_ = true;
    serving_ = false;
    // Not ready; still alive (a drain is no reason to restart the agent).
    if (server_) server_->GetHealthCheckService()->SetServingStatus(v1::kReadinessService, false);
  }
  const auto start = std::chrono::steady_clock::now();
  const Status refused = engine_->RefuseTransfers(kShuttingDown);
  Result<uint64_t> left = refused.ok() ? engine_->TransfersInFlight() : Result<uint64_t>(refused);
  spdlog::info(
      "agent={} health=NOT_SERVING in_flight={} drain_ms={} msg=\"draining: new transfers "
      "are refused, those in flight may finish\"",
      config_.agent_id, left.ok() ? *left : 0, limit.count());
  bool cut = false;
  while (left.ok() && *left > 0 && std::chrono::steady_clock::now() - start < limit) {
    if (wait(std::chrono::milliseconds(10))) {
      cut = true;
      break;
    }
    left = engine_->TransfersInFlight();
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  if (left.ok() && *left == 0) {
    spdlog::info("agent={} took_ms={} msg=\"drained: no transfer in flight\"", config_.agent_id,
                 took.count());
  } else {
    spdlog::warn("agent={} took_ms={} in_flight={} msg=\"{}: what is in flight fails\"",
                 config_.agent_id, took.count(), left.ok() ? *left : 0,
                 cut         ? "a second signal ends the drain"
                 : left.ok() ? "the drain time passed"
                             : "the engine does not answer");
  }
}

void Agent::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !health_thread_.joinable() && !server_ && !engine_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (engine_) engine_->recovery_requests().Wake();
  if (health_thread_.joinable()) health_thread_.join();
  if (recovery_thread_.joinable()) recovery_thread_.join();
  if (service_) service_->Shutdown();
  unix_listener_.Stop();
  session_listener_.reset();  // sessions end before the engine stops taking transfers
  // Open Transfer streams report every accepted operation before they end.
  if (engine_) (void)engine_->StopTransfers(kShuttingDown);
  if (server_) {
    // The calls still open finish (streams were told to end above), then connections close:
    // waiting on gRPC's own shutdown would wait out its deadline for every client idly connected.
    (void)service_->AwaitCallsDone(kShutdownGrace);
    server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
  }
  metrics_.reset();
  collector_.reset();
  reclaimer_.reset();  // what it has not given back yet goes with the engine
  watchdog_.reset();
  engine_.reset();
  provider_.reset();
  fabric_.reset();
}

Agent::~Agent() { Shutdown(); }

}  // namespace braid::server
