// LeaseHolder: the client's side of a lease (the agent's Hold call, proto/braid/v1/agent.proto),
// for an AgentClient opened with ClientOptions::hold. A Hold call stays open while the holder
// lives; the VQPs and regions the client creates name its lease, so the agent gives them back
// when the lease ends: this holder is destroyed, or the process exits or is killed, or the
// connection drops. When the agent grants a grace period (lease_grace_ms) and the connection
// drops (UNAVAILABLE), the holder opens a new Hold call naming the lease, waiting for the agent
// until the grace runs out: the lease and what it holds survive a reconnect within it. Destroyed,
// a holder with a grace ends the lease itself (EndLease), so what it held goes at once.
// Threading: lease() and Ended() from any thread; gRPC's reactions on its threads,
// serialized by one mutex that is never held while calling into gRPC. Ownership: the
// AgentClient's (its stub outlives the holder); it waits for its call to end when destroyed (in a
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
#include <vector>

#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/common/result.h"

namespace braid::client {

class LeaseHolder {
 public:
  // Starts the call and waits at most `timeout` for the agent's lease.
  static common::Result<std::unique_ptr<LeaseHolder>> Open(v1::Agent::Stub& stub,
                                                           const std::string& target,
                                                           std::chrono::milliseconds timeout);
  ~LeaseHolder();  // cancels the call (ending the lease first if it has a grace); returns once
                   // the call has ended
  LeaseHolder(const LeaseHolder&) = delete;
  LeaseHolder& operator=(const LeaseHolder&) = delete;

  uint64_t lease() const { return lease_; }
  // OK while the lease is held (also while it is being resumed); once it ended (the agent
  // restarted, the connection dropped and stayed down past the grace), why: what was created
  // with the lease has been given back, and new resources cannot join it.
  common::Status Ended() const;
  // Ends the lease now: the agent gives back what it holds before this returns (EndLease, at most
  // `timeout`), and the call is over once it does. When the agent cannot be told (out of reach),
  // why; it then gives the lease back once it notices the call ended, or after the grace.
  // Idempotent.
  common::Status End(std::chrono::milliseconds timeout);

  // Use Open().
  LeaseHolder(v1::Agent::Stub& stub, std::string target);

 private:
  class Call;
  // Starts a Hold call (resuming the lease when it is known).
  void StartCall();
  // From a call's reactions.
  void Granted(uint64_t lease, uint32_t grace_ms);
  void CallEnded(const grpc::Status& status, bool was_granted);
  // Ends the call; first the lease itself (EndLease, at most `timeout`) when `give_back` or it has
  // a grace. OK, or why the agent could not be told.
  common::Status Close(bool give_back, std::chrono::milliseconds timeout);

  v1::Agent::Stub& stub_;
  const std::string target_;
  uint64_t lease_ = 0;  // set once, before Open returns
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Call>> calls_;            // guarded by mu_: every call made (a few)
  uint32_t grace_ms_ = 0;                               // guarded by mu_
  bool open_ = false;                                   // guarded by mu_: a call is under way
  bool closing_ = false;                                // guarded by mu_: End or the destructor ran
  bool ended_ = false;                                  // guarded by mu_: the lease is gone
  bool ended_here_ = false;                             // guarded by mu_: by End()
  grpc::Status status_;                                 // guarded by mu_: how it ended
  std::chrono::system_clock::time_point resume_until_;  // guarded by mu_
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_SRC_LEASE_HOLDER_H_
