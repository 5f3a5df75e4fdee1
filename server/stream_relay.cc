#include "server/stream_relay.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace braid::server {

StreamRelay::StreamRelay()
    : epoll_fd_(epoll_create1(EPOLL_CLOEXEC)), stop_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = stop_fd_;
  (void)epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  thread_ = std::thread([this] { Run(); });
}

StreamRelay::~StreamRelay() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t w = write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(stop_fd_);
  close(epoll_fd_);
}

common::Status StreamRelay::Add(int fd, std::shared_ptr<Relayed> target) {
  std::lock_guard<std::mutex> lock(mu_);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return common::Status::FromErrno(errno, "epoll_ctl(stream relay)");
  }
  targets_[fd] = std::move(target);
  return common::Status::Ok();
}

void StreamRelay::Remove(int fd) {
  std::shared_ptr<Relayed> gone;  // released outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  (void)epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  if (auto it = targets_.find(fd); it != targets_.end()) {
    gone = std::move(it->second);
    targets_.erase(it);
  }
}

void StreamRelay::ShutdownAll() {
  std::vector<std::shared_ptr<Relayed>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [fd, target] : targets_) all.push_back(target);
  }
  for (const auto& target : all) target->OnShutdown();
}

size_t StreamRelay::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return targets_.size();
}

void StreamRelay::Run() {
  epoll_event events[64];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, 64, -1);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == stop_fd_) return;
      std::shared_ptr<Relayed> target;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = targets_.find(fd); it != targets_.end()) target = it->second;
      }
      if (target) target->OnReady();
    }
  }
}

}  // namespace braid::server
