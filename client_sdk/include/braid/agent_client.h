// AgentClient: a typed client of one braidd (braid.v1.Agent).
//
// Every call returns a Result (a value or a Status with the agent's code and message) and has a
// deadline (ClientOptions::call_timeout). Region is a registered shared-memory region mapped into
// this process: write the bytes to send, read the bytes received; it deregisters itself when
// destroyed. Regions are shared memory on the agent's host: a client maps them only when it runs
// there.
// Threading: an AgentClient may be used from any number of threads of the process that opened it;
// in a child made by fork() its calls fail with kFailedPrecondition (braid/fork_guard.h).
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_AGENT_CLIENT_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_AGENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "braid/fork_guard.h"
#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/common/result.h"

namespace braid::client {

using common::Result;
using common::Status;

struct ClientOptions {
  std::chrono::milliseconds call_timeout{10000};
  std::chrono::milliseconds connect_timeout{10000};  // Open() waits this long for the agent
  // TLS (any of the three set): the agent's certificate must chain to `tls_ca` (the system's
  // roots when empty); `tls_cert`/`tls_key` are this client's certificate for mutual TLS. PEM
  // file paths. Without them a TCP agent is called in plaintext (it must allow that).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // A bearer token the agent maps to an identity (sent only over TLS).
  std::string token;
  // What this client creates (CreateVqp, RegisterMemory) lives at most as long as it: the client
  // holds a lease (the agent's Hold call) and the agent destroys what the lease holds when the
  // client is destroyed, its process exits or is killed, or its connection drops. Leave it off
  // for VQPs meant to outlive the process that made them (an orchestrator's, braidctl's).
  bool hold = false;
};

struct VqpOptions {
  v1::Scheme scheme = v1::SCHEME_SPRAY;
  uint32_t num_qps = 8;
  std::vector<std::string> devices;  // empty: every healthy device
  uint64_t fragment_size = 0;        // 0: the agent's default
  std::string label;
};

// The Status of a finished gRPC call (the agent's code and message).
Status FromGrpc(const grpc::Status& status);

class AgentClient;
class LeaseHolder;  // src/lease_holder.h

class Region {
 public:
  ~Region();  // unmaps; deregisters on the agent (best effort)
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return info_.length(); }
  uint64_t id() const { return info_.region_id(); }
  const v1::RegionInfo& info() const { return info_; }
  // What the peer of VQP `vqp_id` (on this region's agent) targets; nullptr unless that VQP was
  // granted access (RegisterMemory's `grant_vqps`, or Grant).
  const v1::RemoteRegion* remote(uint64_t vqp_id) const;
  // Lets VQP `vqp_id` reach this region over the wire; returns what its peer targets. Idempotent.
  Result<v1::RemoteRegion> Grant(uint64_t vqp_id);
  // Ends that grant: when this returns OK, the peer's next access fails (remote access error).
  Status Revoke(uint64_t vqp_id);

 private:
  friend class AgentClient;
  Region(std::shared_ptr<AgentClient> owner, v1::RegionInfo info, uint8_t* data, uint64_t mapped)
      : owner_(std::move(owner)), info_(std::move(info)), data_(data), mapped_(mapped) {}
  std::shared_ptr<AgentClient> owner_;
  v1::RegionInfo info_;
  uint8_t* data_;
  uint64_t mapped_;  // the mapping's length, in whole pages of the file's file system
};

// How operations and notifications reach the agent (TransferSession, NotificationStream).
enum class TransferPath {
  kAuto,  // the session's rings when the agent is local and offers sessions, else gRPC
  kGrpc,  // gRPC streams
  kRing,  // a local session's rings; opening fails when the agent offers none
};

class AgentClient : public std::enable_shared_from_this<AgentClient> {
 public:
  // `target`: "host:port" ("[v6addr]:port"), "unix:/path", or a gRPC target with its scheme
  // ("dns:///name:port"). Waits until the agent answers GetInfo. Refused at once, saying why: an
  // empty target, a host:port without a port from 1 to 65535, "unix:PATH" with no socket at PATH.
  static Result<std::shared_ptr<AgentClient>> Open(const std::string& target,
                                                   ClientOptions options = {});

  const std::string& target() const { return target_; }
  // The agent's session socket (doc/local_data_path.md) when it is reached over "unix:PATH":
  // PATH.session; "" for any other target.
  std::string SessionSocket() const;
  // Whether `path` means a local session here: kRing yes (kFailedPrecondition when the agent is
  // not reached over a Unix socket), kGrpc no, kAuto when the session socket exists.
  Result<bool> UseSession(TransferPath path) const;
  const v1::AgentInfo& info() const { return info_; }  // as of Open()
  v1::Agent::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }
  // The agent's lease this client holds (ClientOptions::hold); 0 without one.
  uint64_t lease() const;
  // Ends that lease now, as destroying the client would, without waiting for every object that
  // shares the client (regions, sessions) to go: the agent has given back what the lease holds
  // when this returns OK. Creating a VQP or region through this client fails afterwards.
  // OK without a lease, or when it already ended; why, when the agent could not be told (it then
  // gives the lease back once it notices the call ended, or after its grace).
  Status EndHold();

  Result<v1::AgentInfo> GetInfo();
  Result<std::vector<v1::Device>> ListDevices();
  Result<v1::VirtualQpInfo> CreateVqp(const VqpOptions& options);
  Result<v1::VirtualQpInfo> ConnectVqp(uint64_t vqp_id, const v1::BusinessCard& remote_card);
  Result<v1::VirtualQpInfo> GetVqp(uint64_t vqp_id);
  // Every VQP the caller may see (for an admin, every VQP), a page per call (the agent's largest).
  Result<std::vector<v1::VirtualQpInfo>> ListVqps();
  Status DestroyVqp(uint64_t vqp_id);
  // Registers `length` bytes and maps them here; the VQPs in `grant_vqps` may reach them.
  Result<std::unique_ptr<Region>> RegisterMemory(uint64_t length, const std::string& label = "",
                                                 const std::vector<uint64_t>& grant_vqps = {});
  Result<v1::RemoteRegion> GrantAccess(uint64_t region_id, uint64_t vqp_id);
  Status RevokeAccess(uint64_t region_id, uint64_t vqp_id);
  // Every region the caller may see, a page per call as ListVqps.
  Result<std::vector<v1::RegionInfo>> ListRegions();
  // Resolves a peer's region for VQP `vqp_id` into a handle that local session `session_id`'s
  // ring entries name (doc/local_data_path.md). TransferSession calls it as needed.
  Result<uint32_t> BindRemote(uint64_t session_id, uint64_t vqp_id, const v1::RemoteRegion& remote);
  Status DeregisterMemory(uint64_t region_id);
  Result<v1::Device> DrainDevice(const std::string& device);
  Result<v1::Device> UndrainDevice(const std::string& device);
  // The agent's gRPC health for `service`: true when SERVING. "" (overall) is readiness: the
  // agent takes new work; "liveness" only says its data-plane thread turns (a node whose links
  // are all down is alive but not ready). An unknown service is kNotFound.
  Result<bool> Serving(const std::string& service = "");

  // OK in the process that opened this client; in a child made by fork(), why not. Sessions and
  // streams ask it (they belong to their client's process) before they use what they hold.
  Status Usable() const;
  // Whether this is a child made by fork() after the client was opened (one relaxed load).
  bool Inherited() const { return fork_.Inherited(); }

  AgentClient(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  ~AgentClient();  // in a child made by fork(): leaks the channel rather than wait on gRPC

 private:
  void Prepare(grpc::ClientContext& context) const;
  // The Status of unary call `method` that failed: a missed deadline says which call, on which
  // agent, and the deadline.
  Status CallFailed(const char* method, const grpc::Status& status) const;
  // The lease what is created now joins: 0 without ClientOptions::hold; why not once it ended.
  Result<uint64_t> HeldLease() const;

  std::string target_;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
  v1::AgentInfo info_;
  std::unique_ptr<LeaseHolder> hold_;  // with ClientOptions::hold
  ForkGuard fork_;
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_AGENT_CLIENT_H_
