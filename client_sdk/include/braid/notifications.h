// NotificationStream: the receiver's view of a VQP — every write-with-immediate that arrives, in
// order, with its immediate and byte count, delivered to a callback on the stream's thread.
// Open() returns once the agent confirmed the subscription: nothing that arrives later is missed.
// Destroying the stream cancels the subscription.
// Path, chosen once at Open (NotificationOptions::path), as for TransferSession: a local agent
// reached over "unix:PATH" whose session socket accepts us writes each notification straight into
// a shared-memory ring the stream reads (doc/local_data_path.md); any other agent streams them
// over gRPC WatchNotifications. path() tells which.
// The stream ends (status()) with OK when the VQP is destroyed; kNoResource when the callback fell
// so far behind that the agent's buffer for it filled (the ring's `ring_entries`); kIoError when
// the agent went away.
// Threading: the callback runs on the stream's thread; keep it short. In a child made by fork()
// the stream is its parent's: it delivers nothing there and its destructor waits for nothing
// (braid/fork_guard.h).
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "braid/agent_client.h"

namespace braid::session {
class SessionClient;
}  // namespace braid::session

namespace braid::client {

struct NotificationOptions {
  TransferPath path = TransferPath::kAuto;
  uint32_t ring_entries = 16384;  // ring: notifications the agent may hold unread (a power of two)
  bool busy_poll = false;         // ring: the stream's thread spins instead of sleeping when idle
};

class NotificationStream {
 public:
  using Callback = std::function<void(const v1::Notification&)>;
  static Result<std::unique_ptr<NotificationStream>> Open(std::shared_ptr<AgentClient> agent,
                                                          uint64_t vqp_id, Callback callback,
                                                          NotificationOptions options = {});
  ~NotificationStream();
  NotificationStream(const NotificationStream&) = delete;
  NotificationStream& operator=(const NotificationStream&) = delete;
  // How the stream ended (OK while it runs).
  Status status() const;
  // True once the stream ended (status() then says how).
  bool ended() const;
  // "ring" or "grpc".
  const char* path() const { return ring_ != nullptr ? "ring" : "grpc"; }

  NotificationStream(std::shared_ptr<AgentClient> agent, Callback callback);

 private:
  Status OpenGrpc(uint64_t vqp_id);
  Status OpenRing(uint64_t vqp_id, const NotificationOptions& options);
  void RingLoop(bool busy_poll);
  void End(Status why);

  std::shared_ptr<AgentClient> agent_;
  Callback callback_;
  // gRPC
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchNotificationsResponse>> reader_;
  // ring
  std::unique_ptr<session::SessionClient> ring_;
  std::atomic<bool> stop_{false};

  std::thread thread_;
  mutable std::mutex mu_;
  Status end_;          // guarded by mu_
  bool ended_ = false;  // guarded by mu_
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_
