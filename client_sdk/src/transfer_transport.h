// Transport: how a TransferSession's operations reach its agent and their completions come back.
// Chosen once, when the session opens (TransferSession::Open):
// - GrpcTransport: the Transfer stream; operations batched per message (any agent).
// - RingTransport: a local session's shared-memory rings (doc/local_data_path.md): the agent is
//   on this host, reached over "unix:PATH", and PATH.session accepts the session.
// The session owns what is common (the window, pending operations, deadlines, callbacks); a
// transport only moves operations and outcomes.
// Threading: Send from one thread at a time (the session serializes senders); the transport's
// own reader thread calls the sink. Close and Cancel from the session's thread.
#ifndef BRAID_CLIENT_SDK_SRC_TRANSFER_TRANSPORT_H_
#define BRAID_CLIENT_SDK_SRC_TRANSFER_TRANSPORT_H_

#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "braid/transfer_session.h"

namespace braid::client::internal {

// What a transport reports to its session; called on the transport's reader thread.
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  // One operation's outcome (result.op_id names it).
  virtual void Complete(TransferResult result) = 0;
  // The transport broke or the agent ended it: nothing more will complete.
  virtual void End(Status why) = 0;
};

// One operation as the session numbered it.
struct WireOp {
  uint64_t op_id;
  const TransferOp* op;
  uint32_t timeout_ms;  // resolved: never 0
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Operations that may be in flight at once (the agent's, or the ring's room).
  virtual uint32_t window() const = 0;
  // "grpc" or "ring".
  virtual const char* kind() const = 0;
  // Starts the reader thread, which calls `sink` until Close or End.
  virtual void Start(CompletionSink* sink) = 0;
  // Sends `ops` in order (one message, or one doorbell at most). Operations it could not send are
  // returned with the reason (e.g. a remote region the agent would not bind); the caller
  // completes them. Every other operation completes through the sink, or the sink's End.
  virtual std::vector<std::pair<uint64_t, Status>> Send(uint64_t vqp_id,
                                                        std::span<const WireOp> ops) = 0;
  // No more sends; returns once the reader has stopped. What was in flight is abandoned (the
  // session waits for it before closing, or has failed it).
  virtual void Close() = 0;
  // Best effort: tells the agent to stop what is in flight (the gRPC stream is cancelled).
  virtual void Cancel() = 0;
};

// The Transfer stream to `agent`; fails when the agent sends no window.
Result<std::unique_ptr<Transport>> OpenGrpcTransport(std::shared_ptr<AgentClient> agent);
// A local session at `socket_path` with `entries` slots in each ring (the window);
// `busy_poll`: the reader never sleeps.
Result<std::unique_ptr<Transport>> OpenRingTransport(std::shared_ptr<AgentClient> agent,
                                                     const std::string& socket_path,
                                                     uint32_t entries, bool busy_poll);

}  // namespace braid::client::internal

#endif  // BRAID_CLIENT_SDK_SRC_TRANSFER_TRANSPORT_H_
