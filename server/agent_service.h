// AgentService: braid.v1.Agent on gRPC's synchronous API, in front of one Engine.
//
// Unary calls validate their request, call the engine (which blocks at most its call timeout) and
// map the result. Transfer: the handler thread reads operations and submits them; a writer thread
// per stream returns completions as the engine delivers them. While `transfer_window` operations
// are outstanding the handler reads no more (flow control); every accepted operation's completion
// is written before the stream ends, also at shutdown (the engine cancels what is left).
// WatchNotifications: one watcher per stream, fed by the engine.
// Threading: gRPC's handler threads; the engine is thread-safe.
#ifndef BRAID_SERVER_AGENT_SERVICE_H_
#define BRAID_SERVER_AGENT_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/engine/engine.h"

namespace braid::server {

struct AgentServiceOptions {
  std::string agent_id;
  std::string version = "0.1.0";
  std::string control_endpoint;
  uint32_t transfer_window = 256;
  uint32_t watcher_capacity = 16384;
  bool fault_injection = false;
};

class AgentService final : public v1::Agent::Service {
 public:
  AgentService(engine::Engine& engine, AgentServiceOptions options);

  // Ends every open stream soon (before the server shuts down).
  void Shutdown() { shutting_down_.store(true); }

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
  grpc::Status ListRegions(grpc::ServerContext*, const v1::ListRegionsRequest*,
                           v1::ListRegionsResponse*) override;
  grpc::Status Transfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>* stream) override;
  grpc::Status WatchNotifications(grpc::ServerContext*, const v1::WatchNotificationsRequest*,
                                  grpc::ServerWriter<v1::WatchNotificationsResponse>*) override;
  grpc::Status WatchEvents(grpc::ServerContext*, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::WatchEventsResponse>*) override;
  grpc::Status DrainDevice(grpc::ServerContext*, const v1::DrainDeviceRequest*,
                           v1::Device*) override;
  grpc::Status UndrainDevice(grpc::ServerContext*, const v1::DrainDeviceRequest*,
                             v1::Device*) override;
  grpc::Status InjectFault(grpc::ServerContext*, const v1::InjectFaultRequest*,
                           v1::InjectFaultResponse*) override;
  grpc::Status RecoverQp(grpc::ServerContext*, const v1::RecoverQpRequest*,
                         v1::RecoverQpResponse*) override;

 private:
  engine::Engine& engine_;
  AgentServiceOptions options_;
  std::chrono::steady_clock::time_point started_;
  template <typename Watcher, typename Response, typename Fill>
  grpc::Status StreamWatcher(grpc::ServerContext* context, grpc::ServerWriter<Response>* writer,
                             Watcher& watcher, const char* what, Fill fill);

  std::atomic<bool> shutting_down_{false};
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AGENT_SERVICE_H_
