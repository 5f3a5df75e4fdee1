// SegmentedQueue<T>: a queue from one producer thread to one consumer thread whose memory follows
// what it holds, up to a fixed capacity.
//
// For queues that are many and mostly idle (a stream's watcher: one per WatchNotifications or
// WatchEvents call): an empty queue that never held anything owns no memory, and a queue holds as
// many fixed-size segments as its backlog needs. A segment the consumer has emptied goes back to
// the producer as the spare (one is kept; more are freed), so while the backlog stays within a
// segment the producer allocates nothing after the first two. Push on a full queue (capacity items
// unconsumed) returns kNoResource (back-pressure: nothing is allocated, nothing changes).
//
// Threading: TryPush from one producer thread at a time; TryPop and Empty from one consumer thread
// at a time. Ordering: items are popped in push order. A push happens-before the pop that returns
// it (release on the push count after writing the item and linking its segment; acquire before
// reading them), so the consumer sees everything the producer wrote before pushing.
// Ownership: owns its segments; destroying it destroys the items still queued.
#ifndef BRAID_DATAPLANE_COMMON_SEGMENTED_QUEUE_H_
#define BRAID_DATAPLANE_COMMON_SEGMENTED_QUEUE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "dataplane/common/status.h"

namespace braid::common {

template <typename T, size_t kSegmentItems = 128>
class SegmentedQueue {
 public:
  explicit SegmentedQueue(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
  ~SegmentedQueue() {
    while (TryPop()) {
    }
    // What is left: the consumer's current segment (which the producer may share) and the spare.
    Segment* head = head_ != nullptr ? head_ : first_.load(std::memory_order_acquire);
    while (head != nullptr) {
      std::unique_ptr<Segment> owned(head);
      head = head->next.load(std::memory_order_acquire);
    }
    std::unique_ptr<Segment> spare(spare_.load(std::memory_order_acquire));
  }
  SegmentedQueue(const SegmentedQueue&) = delete;
  SegmentedQueue& operator=(const SegmentedQueue&) = delete;

  size_t capacity() const { return capacity_; }

  // The producer thread. kNoResource when `capacity` items are queued (the value is not consumed).
  Status TryPush(T&& value) {
    const size_t pushed = pushed_.load(std::memory_order_relaxed);
    if (pushed - popped_.load(std::memory_order_acquire) >= capacity_) return Status::NoResource();
    if (tail_ == nullptr || tail_index_ == kSegmentItems) {
      Segment* fresh = spare_.exchange(nullptr, std::memory_order_acquire);
      if (fresh == nullptr) {
        fresh = std::make_unique<Segment>().release();  // owned by the chain from here
        ++segments_allocated_;
      }
      fresh->next.store(nullptr, std::memory_order_relaxed);
      if (tail_ == nullptr) {
        first_.store(fresh, std::memory_order_relaxed);  // published by the push count below
      } else {
        tail_->next.store(fresh, std::memory_order_relaxed);
      }
      tail_ = fresh;
      tail_index_ = 0;
    }
    tail_->items[tail_index_++].emplace(std::move(value));
    pushed_.store(pushed + 1, std::memory_order_release);
    return Status::Ok();
  }

  // The consumer thread. Whether TryPop would return nothing now.
  bool Empty() const {
    return pushed_.load(std::memory_order_acquire) == popped_.load(std::memory_order_relaxed);
  }

  // The consumer thread. nullopt when empty.
  std::optional<T> TryPop() {
    const size_t popped = popped_.load(std::memory_order_relaxed);
    if (pushed_.load(std::memory_order_acquire) == popped) return std::nullopt;
    if (head_ == nullptr) {
      head_ = first_.load(std::memory_order_relaxed);
      head_index_ = 0;
    } else if (head_index_ == kSegmentItems) {
      Segment* done = head_;
      head_ = done->next.load(std::memory_order_relaxed);
      head_index_ = 0;
      // The emptied segment becomes the producer's spare (one spare at most: the rest are freed).
      std::unique_ptr<Segment> extra(spare_.exchange(done, std::memory_order_acq_rel));
    }
    std::optional<T>& slot = head_->items[head_index_++];
    std::optional<T> out(std::move(slot));
    slot.reset();
    popped_.store(popped + 1, std::memory_order_release);
    return out;
  }

  // Segments allocated so far (for tests: a consumer that keeps up recycles them).
  size_t segments_allocated() const { return segments_allocated_; }

 private:
  struct Segment {
    std::array<std::optional<T>, kSegmentItems> items;
    std::atomic<Segment*> next{nullptr};
  };

  const size_t capacity_;
  std::atomic<Segment*> first_{nullptr};  // the first segment ever used (set once, by the producer)
  std::atomic<Segment*> spare_{nullptr};  // an emptied segment, from the consumer to the producer
  alignas(64) std::atomic<size_t> pushed_{0};
  Segment* tail_ = nullptr;  // the producer's
  size_t tail_index_ = 0;
  size_t segments_allocated_ = 0;
  alignas(64) std::atomic<size_t> popped_{0};
  Segment* head_ = nullptr;  // the consumer's
  size_t head_index_ = 0;
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_SEGMENTED_QUEUE_H_
