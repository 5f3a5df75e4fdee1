#include "dataplane/verbs/completion_waiter.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

#include "dataplane/common/clock.h"

namespace braid::verbs {

common::Result<std::unique_ptr<CompletionWaiter>> CompletionWaiter::Create(
    Cq& cq, const Device& device, CompletionWaiterOptions options) {
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return common::Status::FromErrno(errno, "epoll_create1");
  auto waiter = std::make_unique<CompletionWaiter>(CreateKey(), cq, epoll_fd, options);
  for (const int fd : {cq.wakeup_fd(), device.progress_fd()}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) {
      return common::Status::FromErrno(errno, "epoll_ctl(completion waiter)");
    }
  }
  return waiter;
}

CompletionWaiter::CompletionWaiter(CreateKey, Cq& cq, int epoll_fd, CompletionWaiterOptions options)
    : cq_(cq), epoll_fd_(epoll_fd), options_(options), last_progress_ns_(common::MonotonicNs()) {}

CompletionWaiter::~CompletionWaiter() { close(epoll_fd_); }

common::Result<int> CompletionWaiter::Poll(std::span<ibv_wc> out) {
  common::Result<int> n = cq_.Poll(out);
  if (!n.ok() || *n > 0) {
    last_progress_ns_ = common::MonotonicNs();
    return n;
  }
  const uint64_t now = common::MonotonicNs();
  if (now - last_progress_ns_ < options_.spin_ns) {
    if (options_.yield_while_spinning) sched_yield();
    return 0;
  }
  // Arm, then look once more: a completion that came before arming raises no event.
  if (common::Status armed = cq_.RequestNotify(); !armed.ok()) return armed;
  n = cq_.Poll(out);
  if (!n.ok() || *n > 0) {
    last_progress_ns_ = common::MonotonicNs();
    return n;
  }
  ++sleeps_;
  epoll_event events[2];
  const int ready = epoll_wait(epoll_fd_, events, 2, options_.max_sleep_ms);
  if (ready > 0) ++woken_;
  for (int i = 0; i < ready; ++i) {
    if (events[i].data.fd == cq_.wakeup_fd()) (void)cq_.ConsumeWakeup();
  }
  last_progress_ns_ = common::MonotonicNs();  // spin again before the next sleep
  return cq_.Poll(out);
}

}  // namespace braid::verbs
