// WatchStream: a WatchNotifications or WatchEvents call on gRPC's callback API.
//
// Writes `subscribed` first (with the watcher's capacity where the response has a field for it),
// then every item the engine queues in the watcher, one write at a time, until the engine lets go
// of the watcher (the VQP was destroyed: OK), the watcher fell behind (RESOURCE_EXHAUSTED), the
// client goes away or the agent shuts down (CANCELLED). The
// StreamRelay wakes it when the engine queues an item into a watcher it armed (or closes it); no
// thread or file descriptor of its own. When it ends, `on_end` runs (the engine prunes its closed
// watchers). Threading: gRPC's reactions and the relay, serialized by one mutex never held while
// calling into gRPC. Ownership: keeps itself alive until OnDone; the relay holds it weakly.
#ifndef BRAID_SERVER_WATCH_STREAM_H_
#define BRAID_SERVER_WATCH_STREAM_H_

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "braid/v1/agent.grpc.pb.h"
#include "server/relay_link.h"
#include "server/stream_relay.h"

namespace braid::server {

template <typename Watcher, typename Response>
class WatchStream final : public grpc::ServerWriteReactor<Response> {
 public:
  using Item = typename decltype(std::declval<Watcher&>().events.TryPop())::value_type;
  using Fill = std::function<void(const Item&, Response*)>;

  // A stream whose watcher rings the relay; hand watcher() to the engine, then Start().
  static std::shared_ptr<WatchStream> Create(StreamRelay& relay, size_t capacity, Fill fill,
                                             std::string behind_message,
                                             std::function<void()> on_end, bool shutting_down) {
    auto stream = std::make_shared<WatchStream>(relay, std::move(fill), std::move(behind_message),
                                                std::move(on_end), shutting_down);
    stream->capacity_ = capacity;
    stream->link_->stream = stream;
    stream->watcher_ = std::make_shared<Watcher>(capacity, relay.Add(stream->link_));
    stream->link_->queue = &stream->watcher_->events;
    return stream;
  }
  const std::shared_ptr<Watcher>& watcher() const { return watcher_; }

  // Writes `subscribed`; from here gRPC owns the reactor until OnDone.
  grpc::ServerWriteReactor<Response>* Start() {
    self_ = link_->stream.lock();
    response_.set_subscribed(true);
    if constexpr (requires(Response r) { r.set_capacity(0u); }) {
      response_.set_capacity(static_cast<uint32_t>(capacity_));
    }
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      writing_ = true;
      ++calls_;
    }
    this->StartWrite(&response_);
    Called();
    return this;
  }

  WatchStream(StreamRelay& relay, Fill fill, std::string behind_message,
              std::function<void()> on_end, bool shutting_down)
      : relay_(relay),
        fill_(std::move(fill)),
        behind_message_(std::move(behind_message)),
        on_end_(std::move(on_end)),
        link_(std::make_shared<Link>()),
        shutting_down_(shutting_down) {}
  ~WatchStream() override { relay_.Remove(link_.get()); }

  // The agent is stopping: the stream ends (CANCELLED).
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      shutting_down_ = true;
    }
    Kick();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      writing_ = false;
      if (!ok) broken_ = true;
    }
    Kick();
  }
  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      cancelled_ = true;
    }
    Kick();
  }
  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      done_ = true;
    }
    watcher_->closed.store(true);  // the engine forgets it (on_end prunes closed watchers)
    if (on_end_) on_end_();
    std::shared_ptr<WatchStream> last = std::move(self_);  // may free this on return
  }

  // Writes what is queued, or ends the stream when nothing is left to do. Any thread.
  void Kick() {
    grpc::Status status;
    Next next;
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      next = NextLocked(&status);
    }
    if (next == Next::kWrite) {
      this->StartWrite(&response_);
      Called();
    } else if (next == Next::kFinish) {
      this->Finish(std::move(status));
    }
  }

 private:
  using Link = RelayLink<WatchStream, decltype(std::declval<Watcher&>().events)>;
  enum class Next { kNothing, kWrite, kFinish };

  void Called() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      --calls_;
    }
    Kick();
  }

  Next NextLocked(grpc::Status* status) {
    if (done_ || finishing_ || writing_ || calls_ > 0) return Next::kNothing;
    if (!cancelled_ && !broken_ && !shutting_down_) {
      for (;;) {
        const bool closed = watcher_->closed.load();  // read before draining: nothing follows it
        if (std::optional<Item> item = watcher_->events.TryPop()) {
          response_.Clear();
          fill_(*item, &response_);
          writing_ = true;
          ++calls_;
          return Next::kWrite;
        }
        if (watcher_->overflowed.load()) {
          *status = {grpc::StatusCode::RESOURCE_EXHAUSTED, behind_message_};
          break;
        }
        if (closed) {
          *status = grpc::Status::OK;  // the engine let go of it (the VQP was destroyed)
          break;
        }
        if (watcher_->events.ArmWait()) return Next::kNothing;
      }
    } else {
      watcher_->closed.store(true);
      *status = {grpc::StatusCode::CANCELLED, broken_ ? "client went away" : "stream ended"};
    }
    finishing_ = true;
    return Next::kFinish;
  }

  std::shared_ptr<Watcher> watcher_;
  size_t capacity_ = 0;  // the watcher's (announced with `subscribed` where the response has room)
  StreamRelay& relay_;
  Fill fill_;
  const std::string behind_message_;
  std::function<void()> on_end_;
  std::shared_ptr<Link> link_;
  std::shared_ptr<WatchStream> self_;  // until OnDone
  Response response_;
  // Guarded by link_->mu.
  int calls_ = 0;
  bool writing_ = false;
  bool cancelled_ = false;
  bool broken_ = false;
  bool finishing_ = false;
  bool done_ = false;
  bool shutting_down_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_WATCH_STREAM_H_
