#include "braid/notifications.h"

#include <future>

namespace braid::client {

Result<std::unique_ptr<NotificationStream>> NotificationStream::Open(
    std::shared_ptr<AgentClient> agent, uint64_t vqp_id, Callback callback) {
  auto stream = std::make_unique<NotificationStream>(std::move(callback));
  v1::WatchNotificationsRequest request;
  request.set_vqp_id(vqp_id);
  stream->reader_ = agent->stub().WatchNotifications(&stream->context_, request);
  std::promise<Status> subscribed;
  auto ready = subscribed.get_future();
  NotificationStream* s = stream.get();
  s->thread_ = std::thread([s, &subscribed] {
    v1::WatchNotificationsResponse r;
    bool told = false;
    while (s->reader_->Read(&r)) {
      if (r.has_subscribed() && !told) {
        told = true;
        subscribed.set_value(Status::Ok());
      } else if (r.has_notification()) {
        s->callback_(r.notification());
      }
    }
    Status end = FromGrpc(s->reader_->Finish());
    if (!told) subscribed.set_value(end.ok() ? Status::IoError("stream ended unsubscribed") : end);
    std::lock_guard<std::mutex> lock(s->mu_);
    s->end_ = std::move(end);
  });
  Status s_status = ready.get();
  if (!s_status.ok()) {
    stream->thread_.join();
    return s_status;
  }
  return stream;
}

NotificationStream::~NotificationStream() {
  context_.TryCancel();
  if (thread_.joinable()) thread_.join();
}

Status NotificationStream::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return end_;
}

}  // namespace braid::client
