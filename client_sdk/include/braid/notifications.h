// NotificationStream: the receiver's view of a VQP — every write-with-immediate that arrives, in
// order, with its immediate and byte count, delivered to a callback on the stream's thread.
// Open() returns once the agent confirmed the subscription: nothing that arrives later is missed.
// Destroying the stream cancels the subscription.
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_

#include <functional>
#include <memory>
#include <thread>

#include "braid/agent_client.h"

namespace braid::client {

class NotificationStream {
 public:
  using Callback = std::function<void(const v1::Notification&)>;
  static Result<std::unique_ptr<NotificationStream>> Open(std::shared_ptr<AgentClient> agent,
                                                          uint64_t vqp_id, Callback callback);
  ~NotificationStream();
  NotificationStream(const NotificationStream&) = delete;
  NotificationStream& operator=(const NotificationStream&) = delete;
  // How the stream ended (OK while it runs).
  Status status() const;

  explicit NotificationStream(Callback callback) : callback_(std::move(callback)) {}

 private:
  Callback callback_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchNotificationsResponse>> reader_;
  std::thread thread_;
  mutable std::mutex mu_;
  Status end_;  // guarded by mu_
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_NOTIFICATIONS_H_
