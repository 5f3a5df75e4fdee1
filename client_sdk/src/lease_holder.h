// LeaseHolder: the client's side of a Hold call (proto/braid/v1/agent.proto), for an AgentClient
// opened with ClientOptions::hold. The call stays open while the holder lives; the VQPs and
// regions the client creates name its lease, so the agent gives them back when the call ends:
// this holder is destroyed, or the process exits or is killed, or the connection drops.
// Threading: lease() and Ended() from any thread; gRPC's reactions on its threads, serialized by
// one mutex. Ownership: the AgentClient's; it waits for the call to end when destroyed (in a
// child made by fork() the AgentClient abandons it instead).
#ifndef BRAID_CLIENT_SDK_SRC_LEASE_HOLDER_H_
#define BRAID_CLIENT_SDK_SRC_LEASE_HOLDER_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/common/result.h"

namespace braid::client {

class LeaseHolder final : public grpc::ClientReadReactor<v1::HoldResponse> {
 public:
  // Starts the call and waits at most `timeout` for the agent's lease.
  static common::Result<std::unique_ptr<LeaseHolder>> Open(v1::Agent::Stub& stub,
                                                           const std::string& target,
                                                           std::chrono::milliseconds timeout);
  ~LeaseHolder() override;  // cancels the call; returns once it has ended
  LeaseHolder(const LeaseHolder&) = delete;
  LeaseHolder& operator=(const LeaseHolder&) = delete;

  uint64_t lease() const { return lease_; }
  // OK while the call is open; once it ended (the agent restarted, the connection dropped), why:
  // what was created with the lease has been given back, and new resources cannot join it.
  common::Status Ended() const;

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  explicit LeaseHolder(std::string target) : target_(std::move(target)) {}

  const std::string target_;
  grpc::ClientContext context_;
  v1::HoldRequest request_;
  v1::HoldResponse response_;
  uint64_t lease_ = 0;  // set once, before Open returns
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;    // guarded by mu_
  grpc::Status status_;  // guarded by mu_: how the call ended
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_SRC_LEASE_HOLDER_H_
