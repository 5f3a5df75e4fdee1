#include "server/stream_relay.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dataplane/common/named_thread.h"

namespace braid::server {

class StreamRelay::Bell final : public common::Doorbell,
                                public std::enable_shared_from_this<StreamRelay::Bell> {
 public:
  Bell(StreamRelay* relay, std::weak_ptr<Relayed> target)
      : relay_(relay), target_(std::move(target)) {}
  void Ring() override {
    if (!queued_.exchange(true)) relay_->Ready(shared_from_this());
  }
  // The relay thread: takes the bell off the ready list and calls its target.
  void Deliver() {
    queued_.store(false);
    if (std::shared_ptr<Relayed> target = target_.lock()) target->OnReady();
  }

 private:
  StreamRelay* const relay_;
  const std::weak_ptr<Relayed> target_;
  std::atomic<bool> queued_{false};
};

StreamRelay::StreamRelay()
    : epoll_fd_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      stop_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  for (int fd : {wake_fd_, stop_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    (void)epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  thread_ = common::NamedThread("braid-relay", [this] { Run(); });
}

StreamRelay::~StreamRelay() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t w = write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(stop_fd_);
  close(wake_fd_);
  close(epoll_fd_);
}

std::shared_ptr<common::Doorbell> StreamRelay::Add(const std::shared_ptr<Relayed>& target) {
  std::lock_guard<std::mutex> lock(mu_);
  targets_[target.get()] = target;
  return std::make_shared<Bell>(this, target);
}

void StreamRelay::Remove(const Relayed* target) {
  std::lock_guard<std::mutex> lock(mu_);
  targets_.erase(target);
}

size_t StreamRelay::registered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return targets_.size();
}

void StreamRelay::ShutdownAll() {
  std::vector<std::shared_ptr<Relayed>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, weak] : targets_) {
      if (auto target = weak.lock()) all.push_back(std::move(target));
    }
  }
  for (const auto& target : all) target->OnShutdown();
}

void StreamRelay::Ready(std::shared_ptr<Bell> bell) {
  std::lock_guard<std::mutex> lock(mu_);
  ready_.push_back(std::move(bell));
  if (!signalled_) {
    signalled_ = true;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(wake_fd_, &one, sizeof(one));
  }
}

void StreamRelay::Run() {
  std::vector<std::shared_ptr<Bell>> batch;
  epoll_event events[2];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, 2, -1);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == stop_fd_) return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      uint64_t value = 0;
      [[maybe_unused]] ssize_t r = read(wake_fd_, &value, sizeof(value));
      signalled_ = false;
      batch.swap(ready_);
    }
    for (const auto& bell : batch) bell->Deliver();
    batch.clear();
  }
}

}  // namespace braid::server
