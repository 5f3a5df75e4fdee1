// AgentService: braid.v1.Agent in front of one Engine.
//
// Unary calls (gRPC's synchronous API) validate their request, call the engine (which blocks at
// most its call timeout) and map the result. The streams are on the callback API (TransferStream,
// WatchStream): no thread per stream; the StreamRelay's one thread hands the engine's results and
// watcher items to them.
// While `transfer_window` operations are outstanding a stream reads no more (flow control); every
// accepted operation's completion is written before the stream ends, also at shutdown (the engine
// cancels what is left).
// WatchNotifications, WatchEvents: one engine watcher per stream.
// Hold: a lease (LeaseTable); what is created with it goes to the Reclaimer when the call ends.
// Every call is admitted first: the Authenticator names the caller, its role must allow the call
// (refusals are counted and logged by the AuditLog), and a client's calls are scoped to what it
// owns (anything else is NOT_FOUND, as if absent).
// Threading: gRPC's handler threads; the engine is thread-safe.
#ifndef BRAID_SERVER_AGENT_SERVICE_H_
#define BRAID_SERVER_AGENT_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/common/version.h"
#include "dataplane/engine/engine.h"
#include "server/agent_config.h"
#include "server/audit_log.h"
#include "server/authenticator.h"
#include "server/caller_budget.h"
#include "server/lease_table.h"
#include "server/open_calls.h"
#include "server/reclaimer.h"
#include "server/stream_relay.h"

namespace braid::server {

struct AgentServiceOptions {
  std::string agent_id;
  std::string version = common::kVersion;
  std::string control_endpoint;
  uint32_t transfer_window = 1024;
  uint32_t transfer_window_per_caller = 65536;  // the windows of one caller's streams together
  // The backlogs of one caller's WatchNotifications streams together (CallerBudget).
  uint32_t watch_backlog_per_caller = 1u << 20;
  uint32_t leases_per_caller = 1024;  // Hold calls one caller may have open (LeaseTable)
  uint32_t lease_grace_ms = 0;        // how long a lease outlives its Hold call
  bool fault_injection = false;
  bool plaintext = false;  // TCP served without TLS (GetInfo says so)
};

// Who may make a call.
enum class Access : uint8_t {
  kAnyone,    // every role
  kClient,    // client, operator, admin
  kOperator,  // operator, admin
  kAdmin,     // admin
  kPeer,      // another agent (peer), or admin
};

// The streaming calls are on the callback API, the unary ones on the synchronous API.
using AgentServiceBase = v1::Agent::WithCallbackMethod_Transfer<
    v1::Agent::WithCallbackMethod_WatchNotifications<v1::Agent::WithCallbackMethod_WatchEvents<
        v1::Agent::WithCallbackMethod_Hold<v1::Agent::Service>>>>;

class AgentService final : public AgentServiceBase {
 public:
  // `auth`, `audit` and `reclaimer` are not owned and must outlive the service.
  AgentService(engine::Engine& engine, AgentServiceOptions options, Authenticator& auth,
               AuditLog& audit, Reclaimer& reclaimer);

  const LeaseTable& leases() const { return leases_; }

  // Ends every open stream soon (before the server shuts down).
  void Shutdown() {
    shutting_down_.store(true);
    relay_.ShutdownAll();
  }
  // Waits until no unary call is running and no stream is open, or `limit` has passed; true if
  // none is.
  bool AwaitCallsDone(std::chrono::milliseconds limit) const;

  grpc::Status GetInfo(grpc::ServerContext*, const v1::GetInfoRequest*, v1::AgentInfo*) override;
  grpc::Status ListDevices(grpc::ServerContext*, const v1::ListDevicesRequest*,
                           v1::ListDevicesResponse*) override;
  grpc::Status CreateVirtualQp(grpc::ServerContext*, const v1::CreateVirtualQpRequest*,
                               v1::VirtualQpInfo*) override;
  grpc::Status ConnectVirtualQp(grpc::ServerContext*, const v1::ConnectVirtualQpRequest*,
                                v1::VirtualQpInfo*) override;
  grpc::Status GetVirtualQp(grpc::ServerContext*, const v1::GetVirtualQpRequest*,
                            v1::VirtualQpInfo*) override;
  grpc::Status ListVirtualQps(grpc::ServerContext*, const v1::ListVirtualQpsRequest*,
                              v1::ListVirtualQpsResponse*) override;
  grpc::Status DestroyVirtualQp(grpc::ServerContext*, const v1::DestroyVirtualQpRequest*,
                                v1::DestroyVirtualQpResponse*) override;
  grpc::Status RegisterMemory(grpc::ServerContext*, const v1::RegisterMemoryRequest*,
                              v1::RegionInfo*) override;
  grpc::Status DeregisterMemory(grpc::ServerContext*, const v1::DeregisterMemoryRequest*,
                                v1::DeregisterMemoryResponse*) override;
  grpc::Status GrantAccess(grpc::ServerContext*, const v1::GrantAccessRequest*,
                           v1::RemoteRegion*) override;
  grpc::Status RevokeAccess(grpc::ServerContext*, const v1::RevokeAccessRequest*,
                            v1::RevokeAccessResponse*) override;
  grpc::Status ListRegions(grpc::ServerContext*, const v1::ListRegionsRequest*,
                           v1::ListRegionsResponse*) override;
  grpc::Status BindRemote(grpc::ServerContext*, const v1::BindRemoteRequest*,
                          v1::BindRemoteResponse*) override;
  grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse>* Transfer(
      grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<v1::WatchNotificationsResponse>* WatchNotifications(
      grpc::CallbackServerContext* context, const v1::WatchNotificationsRequest* request) override;
  grpc::ServerWriteReactor<v1::WatchEventsResponse>* WatchEvents(
      grpc::CallbackServerContext* context, const v1::WatchEventsRequest* request) override;
  grpc::ServerWriteReactor<v1::HoldResponse>* Hold(grpc::CallbackServerContext* context,
                                                   const v1::HoldRequest* request) override;
  grpc::Status EndLease(grpc::ServerContext*, const v1::EndLeaseRequest*,
                        v1::EndLeaseResponse*) override;
  grpc::Status DrainDevice(grpc::ServerContext*, const v1::DrainDeviceRequest*,
                           v1::Device*) override;
  grpc::Status UndrainDevice(grpc::ServerContext*, const v1::DrainDeviceRequest*,
                             v1::Device*) override;
  grpc::Status InjectFault(grpc::ServerContext*, const v1::InjectFaultRequest*,
                           v1::InjectFaultResponse*) override;
  grpc::Status RecoverQp(grpc::ServerContext*, const v1::RecoverQpRequest*,
                         v1::RecoverQpResponse*) override;

 private:
  // The caller of `context` if it may call `rpc`; the refusal otherwise (counted and logged).
  grpc::Status Admit(grpc::ServerContextBase* context, const char* rpc, Access access,
                     Caller* caller);
  // A unary reply about a VQP or region: the status, or the message with its owner's identity.
  template <typename T, typename Out>
  grpc::Status OwnedReply(const common::Result<T>& result, Out* out) const;
  // Writes a VQP's or region's status as an `Info` message with its owner's identity.
  template <typename Info>
  auto Owned() const;
  // Puts what `result` made into `lease` (0: none). A lease that ended meanwhile, or a caller
  // that gave up on `context` (its deadline passed, it cancelled, its connection dropped): what
  // was made goes to the reclaimer, since the reply naming it would be lost, and the reply is
  // that refusal.
  template <typename T, typename Out>
  grpc::Status Leased(grpc::ServerContext* context, uint64_t lease, LeaseTable::Kind kind,
                      engine::OwnerId owner, const common::Result<T>& result, Out* out);

  engine::Engine& engine_;
  AgentServiceOptions options_;
  Authenticator& auth_;
  AuditLog& audit_;
  std::chrono::steady_clock::time_point started_;
  // The RESOURCE_EXHAUSTED message of a watcher that holds `capacity` items.
  static std::string BehindMessage(const char* what, uint32_t capacity);

  std::atomic<bool> shutting_down_{false};
  OpenCalls open_calls_;   // the unary calls running (streams: the relay's registrations)
  CallerBudget windows_;   // Transfer streams' windows
  CallerBudget backlogs_;  // WatchNotifications streams' capacities
  LeaseTable leases_;
  Reclaimer& reclaimer_;
  StreamRelay relay_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AGENT_SERVICE_H_
