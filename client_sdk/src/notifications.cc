#include "braid/notifications.h"

#include <chrono>
#include <future>
#include <string>

#include "client_sdk/src/ring_idle.h"
#include "dataplane/common/named_thread.h"
#include "dataplane/common/outcome.h"
#include "dataplane/session/session_client.h"

namespace braid::client {

using session::NotifyEntry;
using session::NotifyKind;

Result<std::unique_ptr<NotificationStream>> NotificationStream::Open(
    std::shared_ptr<AgentClient> agent, uint64_t vqp_id, Callback callback,
    NotificationOptions options) {
  BRAID_RETURN_IF_ERROR(agent->Usable());
  BRAID_ASSIGN_OR_RETURN(const bool local, agent->UseSession(options.path));
  auto stream = std::make_unique<NotificationStream>(agent, std::move(callback));
  if (local) {
    Status s = stream->OpenRing(vqp_id, options);
    if (s.ok()) return stream;
    // The agent would not watch this VQP: the same answer over gRPC.
    if (options.path == TransferPath::kRing || s.code() != common::StatusCode::kIoError) return s;
    stream->ring_.reset();
  }
  BRAID_RETURN_IF_ERROR(stream->OpenGrpc(vqp_id));
  return stream;
}

NotificationStream::NotificationStream(std::shared_ptr<AgentClient> agent, Callback callback)
    : agent_(std::move(agent)), callback_(std::move(callback)) {}

Status NotificationStream::OpenGrpc(uint64_t vqp_id) {
  v1::WatchNotificationsRequest request;
  request.set_vqp_id(vqp_id);
  context_ = std::make_unique<grpc::ClientContext>();
  reader_ = agent_->stub().WatchNotifications(context_.get(), request);
  std::promise<Status> subscribed;
  auto ready = subscribed.get_future();
  thread_ = std::thread([this, &subscribed] {
    v1::WatchNotificationsResponse r;
    bool told = false;
    while (reader_->Read(&r)) {
      if (r.has_subscribed() && !told) {
        told = true;
        subscribed.set_value(Status::Ok());
      } else if (r.has_notification()) {
        callback_(r.notification());
      }
    }
    Status end = FromGrpc(reader_->Finish());
    if (!told) subscribed.set_value(end.ok() ? Status::IoError("stream ended unsubscribed") : end);
    End(std::move(end));
  });
  Status s = ready.get();
  if (!s.ok()) thread_.join();
  return s;
}

Status NotificationStream::OpenRing(uint64_t vqp_id, const NotificationOptions& options) {
  const std::string socket = agent_->SessionSocket();
  // Two submission and completion slots: the stream submits one watch.
  auto client = session::SessionClient::Connect(socket, {2, 2, options.ring_entries});
  if (!client.ok()) return client.status().WithContext("local session at " + socket);
  ring_ = std::move(client).value();
  const session::SubmitEntry watch = session::SessionClient::Watch(vqp_id, 1);
  if (ring_->Submit({&watch, 1}) != 1) {
    return Status::IoError("the new local session at " + socket + " took no entry");
  }
  session::CompletionEntry done{};
  const auto give_up = std::chrono::steady_clock::now() + agent_->options().call_timeout;
  while (ring_->Reap({&done, 1}) == 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      return Status::DeadlineExceeded("agent " + agent_->target() +
                                      " did not answer the watch of VQP " + std::to_string(vqp_id) +
                                      " in time");
    }
    if (!ring_->Wait(10) && ring_->AgentGone()) {
      return Status::IoError("agent " + agent_->target() + " ended the local session");
    }
  }
  if (done.status != 0) {
    return Status::FromCode(
        static_cast<common::StatusCode>(done.status),
        "agent " + agent_->target() + " will not watch VQP " + std::to_string(vqp_id) + ": " +
            std::string(session::Describe(static_cast<session::SubmitField>(done.detail))));
  }
  thread_ =
      common::NamedThread("braid-notify", [this, busy = options.busy_poll] { RingLoop(busy); });
  return Status::Ok();
}

void NotificationStream::RingLoop(bool busy_poll) {
  NotifyEntry out[64];
  internal::RingIdle idle(busy_poll);
  v1::Notification n;
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint32_t got = ring_->ReapNotifications(out);
    for (uint32_t i = 0; i < got; ++i) {
      const NotifyEntry& e = out[i];
      if (e.kind == static_cast<uint8_t>(NotifyKind::kNotification)) {
        n.set_vqp_id(e.vqp_id);
        n.set_seq(e.seq);
        n.set_imm(e.imm);
        n.set_byte_len(e.byte_len);
        n.set_wc_status(common::OutcomeName(e.wc_status));
        callback_(n);
        continue;
      }
      if (e.status == 0) {
        End(Status::Ok());  // the VQP was destroyed
      } else {
        End(Status::FromCode(static_cast<common::StatusCode>(e.status),
                             "fell behind: the agent held " +
                                 std::to_string(ring_->nq_entries() - 1) +
                                 " notifications unread; handle them faster or open the stream "
                                 "with a larger ring_entries"));
      }
      return;
    }
    if (got > 0) {
      idle.Busy();
      continue;
    }
    if (ring_->broken()) {
      End(Status::IoError("the agent broke the local session's ring protocol"));
      return;
    }
    if (!idle.Idle(*ring_)) {
      End(Status::IoError("agent " + agent_->target() + " ended the local session"));
      return;
    }
  }
}

void NotificationStream::End(Status why) {
  std::lock_guard<std::mutex> lock(mu_);
  end_ = std::move(why);
  ended_ = true;
}

NotificationStream::~NotificationStream() {
  if (agent_->Inherited()) {  // its thread and its gRPC call stayed in the parent
    ForkGuard::Abandon(std::move(thread_));
    ForkGuard::Abandon(std::move(reader_));
    ForkGuard::Abandon(std::move(context_));
    return;
  }
  stop_.store(true, std::memory_order_relaxed);
  if (ring_ == nullptr) {
    if (context_ != nullptr) context_->TryCancel();
  } else {
    ring_->Interrupt();  // the reader may sleep on the doorbell
  }
  if (thread_.joinable()) thread_.join();
}

Status NotificationStream::status() const {
  if (agent_->Inherited()) return agent_->Usable();
  std::lock_guard<std::mutex> lock(mu_);
  return end_;
}

bool NotificationStream::ended() const {
  if (agent_->Inherited()) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return ended_;
}

}  // namespace braid::client
