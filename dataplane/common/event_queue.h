// EventQueue<T, Queue>: a queue (an MpscQueue, or a SegmentedQueue for one producer) whose
// consumer can sleep until something arrives.
//
// Producers push without locks; the consumer polls TryPop while busy and, when it runs dry, sleeps
// on fd() (an eventfd, e.g. inside its own epoll set) or in Wait(). A producer writes the eventfd
// only while the consumer has announced it is about to sleep (ArmWait), so a busy consumer costs
// producers no system call. Built with a Doorbell instead, the queue has no eventfd (fd() is -1,
// Wait is unavailable): the producer rings the doorbell, so many queues can share one wakeup. No
// wakeup is lost: ArmWait publishes the intent and re-checks the queue, a push publishes the item
// and re-checks the intent (sequentially consistent fences on both sides).
//
// Threading: Push as the queue allows (any thread for an MpscQueue, one producer thread for a
// SegmentedQueue); Wake from any thread; TryPop, ArmWait, DisarmWait, Wait from the one consumer.
// Ownership: owns its eventfd.
#ifndef BRAID_DATAPLANE_COMMON_EVENT_QUEUE_H_
#define BRAID_DATAPLANE_COMMON_EVENT_QUEUE_H_

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "dataplane/common/mpsc_queue.h"
#include "dataplane/common/segmented_queue.h"

namespace braid::common {

// What wakes the consumer of a doorbell EventQueue. Ring may be called from any thread.
class Doorbell {
 public:
  virtual ~Doorbell() = default;
  virtual void Ring() = 0;
};

template <typename T, typename Queue = MpscQueue<T>>
class EventQueue {
 public:
  explicit EventQueue(size_t capacity)
      : queue_(capacity), fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  EventQueue(size_t capacity, std::shared_ptr<Doorbell> doorbell)
      : queue_(capacity), fd_(-1), doorbell_(std::move(doorbell)) {}
  ~EventQueue() {
    if (fd_ >= 0) close(fd_);
  }
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;

  int fd() const { return fd_; }
  size_t capacity() const { return queue_.capacity(); }

  // A producer thread (see Threading). kNoResource when full (nothing changes).
  Status Push(T&& value) {
    Status s = queue_.TryPush(std::move(value));
    if (!s.ok()) return s;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiting_.load(std::memory_order_relaxed)) Signal();
    return Status::Ok();
  }

  std::optional<T> TryPop() { return queue_.TryPop(); }

  // Any thread: ends the consumer's current or next Wait early without an item (it has something
  // else to look at). A system call each time: for rare events only.
  void Wake() { Signal(); }

  // The consumer is about to sleep on fd(). Returns false (and stays awake) when an item is
  // already queued.
  bool ArmWait() {
    waiting_.store(true, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!queue_.Empty()) {
      waiting_.store(false, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  // After the sleep: producers stop signalling; the eventfd is drained.
  void DisarmWait() {
    waiting_.store(false, std::memory_order_relaxed);
    if (fd_ < 0) return;
    uint64_t value = 0;
    [[maybe_unused]] ssize_t r = read(fd_, &value, sizeof(value));
  }
  // Sleeps until an item is queued or `timeout_ms` passes; true when an item is queued.
  bool Wait(int timeout_ms) {
    if (fd_ < 0) return !queue_.Empty();  // a doorbell queue: its consumer waits elsewhere
    if (!ArmWait()) return true;
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, timeout_ms);
    DisarmWait();
    return !queue_.Empty();
  }

 private:
  void Signal() {
    if (doorbell_) {
      doorbell_->Ring();
      return;
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(fd_, &one, sizeof(one));
  }

  Queue queue_;
  int fd_;
  std::shared_ptr<Doorbell> doorbell_;
  std::atomic<bool> waiting_{false};
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_EVENT_QUEUE_H_
