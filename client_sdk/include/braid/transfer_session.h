// TransferSession: operations on one connected VQP through its agent, and their completions.
//
// Submit() sends an operation and returns a future (or calls a callback) that resolves exactly
// once: with the agent's completion, or with an error when the operation's deadline passes, the
// session is cancelled, or the agent goes away. At most window() operations are in flight;
// Submit blocks while the window is full, which pipelines a loop of submissions without further
// effort. SubmitBatch sends many with one message (gRPC) or one doorbell at most (ring).
// Path, chosen once at Open (SessionOptions::path): a local agent reached over "unix:PATH" whose
// session socket PATH.session accepts us is driven through shared-memory rings
// (doc/local_data_path.md); any other through the gRPC Transfer stream. path() tells which.
// Deadlines: each operation carries one (its own or the session default); the agent enforces it,
// and the session too (plus `grace`) so that a hung or killed agent cannot make a caller wait
// forever.
// Order: operations submitted from one thread start in the order submitted; across threads no
// order is promised.
// Threading: Submit, Flush and Cancel from any thread of the process that opened the session (in a
// child made by fork() they fail with kFailedPrecondition, braid/fork_guard.h). Callbacks run on
// the session's reader or watchdog thread (or, for an operation refused before it was sent, the
// submitter's): keep them short.
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_TRANSFER_SESSION_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_TRANSFER_SESSION_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "braid/agent_client.h"

namespace braid::client {

struct TransferOp {
  v1::Op op = v1::OP_WRITE;
  uint64_t local_region = 0;  // Region::id() on this session's agent
  uint64_t local_offset = 0;
  v1::RemoteRegion remote;  // Region::remote() of the peer's region
  uint64_t remote_offset = 0;
  uint64_t length = 0;
  uint32_t imm = 0;                      // OP_WRITE_WITH_IMM
  std::chrono::milliseconds timeout{0};  // 0: the session's default; the agent takes <= 24 h
};

struct TransferResult {
  uint64_t op_id = 0;
  Status status;
  std::string wc_status;  // "success", "retry_exc_err", ... when the agent posted it
  uint64_t bytes = 0;
  uint64_t latency_ns = 0;
};

struct SessionOptions {
  std::chrono::milliseconds default_timeout{30000};
  std::chrono::milliseconds grace{2000};  // beyond an op's deadline before the session gives up
  uint32_t max_in_flight = 0;             // 0: the agent's window (gRPC) or the ring's size
  TransferPath path = TransferPath::kAuto;
  uint32_t ring_entries = 1024;  // ring: slots per ring (a power of two, 2 to 65536)
  bool busy_poll = false;        // ring: the reader spins instead of sleeping when idle
};

namespace internal {
class Transport;
}  // namespace internal

class TransferSession {
 public:
  // kNotFound when VQP `vqp_id` does not exist on the agent (or is not the caller's).
  static Result<std::unique_ptr<TransferSession>> Open(std::shared_ptr<AgentClient> agent,
                                                       uint64_t vqp_id,
                                                       SessionOptions options = {});
  // Waits for what is in flight (each op bounded by its deadline), then closes the stream.
  ~TransferSession();
  TransferSession(const TransferSession&) = delete;
  TransferSession& operator=(const TransferSession&) = delete;

  std::future<TransferResult> Submit(const TransferOp& op);
  void Submit(const TransferOp& op, std::function<void(TransferResult)> done);
  // Submits `ops` in order, as few messages as the window allows (one when it has room for all):
  // the way to many small operations per second. Blocks while the window is full.
  std::vector<std::future<TransferResult>> SubmitBatch(const std::vector<TransferOp>& ops);
  // The same with a callback per operation: `done(i)` makes the callback for ops[i].
  void SubmitBatch(std::span<const TransferOp> ops,
                   const std::function<std::function<void(TransferResult)>(size_t)>& done);
  // Waits until nothing is in flight; kDeadlineExceeded after `timeout`.
  Status Flush(std::chrono::milliseconds timeout);
  // Every operation in flight completes with kCancelled now; later submissions fail. The agent
  // may still be moving their bytes (CancelAndWait waits for that).
  void Cancel();
  // Cancel(), then ends the session's stream (or local session), so that the agent takes nothing
  // more from it, and returns once the agent reports that no transfer uses any region this
  // session's operations named (their in-flight counts, which fall only at each transfer's real
  // completion): from then on no DMA reaches those buffers. Another session's transfers on the
  // same regions are waited for too. kDeadlineExceeded after `timeout`, the agent's error when it
  // cannot be asked. The session takes no more operations.
  Status CancelAndWait(std::chrono::milliseconds timeout);

  uint32_t window() const { return window_; }
  size_t outstanding() const;
  // "ring" or "grpc".
  const char* path() const;

  TransferSession(std::shared_ptr<AgentClient> agent, uint64_t vqp_id, SessionOptions options);

 private:
  class Sink;
  struct Pending {
    std::function<void(TransferResult)> done;
    std::chrono::steady_clock::time_point give_up;
  };
  Status Start();
  // From the transport's reader thread: one completion, or the end of all.
  void OnComplete(TransferResult result);
  void OnEnd(const Status& why);
  // Sends a prefix of `ops` (at least one) in one message once the window has room; returns how
  // many it took. A refused first op (session broken, window full past its deadline) counts one.
  size_t Send(std::span<const TransferOp> ops,
              const std::function<std::function<void(TransferResult)>(size_t)>& done);
  void WatchLoop();
  // Closes the transport once (the destructor and CancelAndWait both may).
  void CloseTransport();
  // Completes every pending op with `status` (under no lock).
  void FailAll(const Status& status);
  // Runs a claimed op's callback (no lock held), then lets Flush and the destructor see it done.
  void Deliver(std::function<void(TransferResult)>& done, TransferResult result);
  bool Idle() const { return pending_.empty() && delivering_ == 0; }  // REQUIRES: mu_

  std::shared_ptr<AgentClient> agent_;
  uint64_t vqp_id_;
  SessionOptions options_;
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<internal::Transport> transport_;
  uint32_t window_ = 0;
  std::mutex write_mu_;  // one sender at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Pending> pending_;  // guarded by mu_
  int delivering_ = 0;                   // guarded by mu_: results claimed, callback running
  std::set<uint64_t> regions_used_;      // guarded by mu_: local regions the ops named
  bool transport_closed_ = false;        // guarded by write_mu_
  uint64_t next_op_id_ = 1;              // guarded by mu_
  Status broken_;                        // guarded by mu_; not OK: no more submissions
  bool stopping_ = false;                // guarded by mu_
  // The watchdog found nothing pending for a while and sleeps until an op comes (Send wakes it).
  bool watchdog_asleep_ = false;  // guarded by mu_
  std::thread watchdog_;
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_TRANSFER_SESSION_H_
