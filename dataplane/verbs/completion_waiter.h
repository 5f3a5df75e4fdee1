// CompletionWaiter: polls a CQ the way a poller that shares its cores with others should.
//
// It spins while completions come; after `spin_ns` without one it arms the CQ and sleeps in epoll
// on the CQ's wakeup fd and the device's progress fd (a soft NIC's sockets) until either turns
// readable or `max_sleep_ms` passes (soft NIC timers need progress now and then). A busy poller
// that never sleeps holds its core for whole scheduler slices while the thread that would answer
// it waits for one; this one gives the core back after a short spin and the kernel wakes it as
// soon as there is something to do, so several pollers on fewer cores each make progress.
// Threading: the CQ's polling thread only. Poll allocates nothing.
// Ownership: borrows the CQ and the device (they must outlive it); owns an epoll fd.
#ifndef BRAID_DATAPLANE_VERBS_COMPLETION_WAITER_H_
#define BRAID_DATAPLANE_VERBS_COMPLETION_WAITER_H_

#include <cstdint>
#include <memory>
#include <span>

#include "dataplane/common/result.h"
#include "dataplane/verbs/provider.h"

namespace braid::verbs {

struct CompletionWaiterOptions {
  uint64_t spin_ns = 100'000;
  bool yield_while_spinning = true;  // sched_yield after an empty poll: others on this core run
  int max_sleep_ms = 1;
};

class CompletionWaiter {
 public:
  static common::Result<std::unique_ptr<CompletionWaiter>> Create(
      Cq& cq, const Device& device, CompletionWaiterOptions options = {});
  ~CompletionWaiter();
  CompletionWaiter(const CompletionWaiter&) = delete;
  CompletionWaiter& operator=(const CompletionWaiter&) = delete;

  // As Cq::Poll; when nothing came for `spin_ns`, first sleeps until something may have (then
  // returns what a poll finds, possibly 0: call again).
  common::Result<int> Poll(std::span<ibv_wc> out);
  uint64_t sleeps() const { return sleeps_; }
  // Sleeps that ended because a watched fd turned readable (the rest ran to max_sleep_ms).
  uint64_t woken() const { return woken_; }

  struct CreateKey {
   private:
    CreateKey() = default;
    friend class CompletionWaiter;
  };
  CompletionWaiter(CreateKey, Cq& cq, int epoll_fd, CompletionWaiterOptions options);

 private:
  Cq& cq_;
  const int epoll_fd_;
  const CompletionWaiterOptions options_;
  uint64_t last_progress_ns_ = 0;
  uint64_t sleeps_ = 0;
  uint64_t woken_ = 0;
};

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_COMPLETION_WAITER_H_
