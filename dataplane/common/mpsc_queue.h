// MpscQueue<T>: a bounded queue from many producer threads to one consumer thread.
//
// The engine's command queue: control threads (gRPC) push commands, the data-plane thread pops
// them. Lock-free (D. Vyukov's bounded queue: one sequence number per cell). Push on a full queue
// returns kNoResource (back-pressure; nothing is allocated) and changes nothing. Capacity is a
// power of two, fixed at construction (the only allocation).
//
// Threading: TryPush from any number of threads; TryPop from one thread at a time.
// Ordering: each producer's items are popped in the order it pushed them. A push happens-before
// the pop that returns it (release on the cell's sequence after writing the value; acquire before
// reading it), so the consumer sees everything the producer wrote before pushing.
#ifndef BRAID_DATAPLANE_COMMON_MPSC_QUEUE_H_
#define BRAID_DATAPLANE_COMMON_MPSC_QUEUE_H_

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "dataplane/common/status.h"

namespace braid::common {

template <typename T>
class MpscQueue {
 public:
  // `capacity` is rounded up to a power of two (at least 2).
  explicit MpscQueue(size_t capacity)
      : mask_(std::bit_ceil(capacity < 2 ? size_t{2} : capacity) - 1),
        cells_(std::make_unique<Cell[]>(mask_ + 1)) {
    for (size_t i = 0; i <= mask_; ++i) cells_[i].sequence.store(i, std::memory_order_relaxed);
  }
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  size_t capacity() const { return mask_ + 1; }

  // Any thread. kNoResource when full (the value is not consumed).
  Status TryPush(T&& value) {
    size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& cell = cells_[pos & mask_];
      const size_t seq = cell.sequence.load(std::memory_order_acquire);
      const auto diff = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          cell.value = std::move(value);
          cell.sequence.store(pos + 1, std::memory_order_release);
          return Status::Ok();
        }
      } else if (diff < 0) {
        return Status::NoResource();  // full
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }

  // The consumer thread only: whether TryPop would return nothing now.
  bool Empty() const {
    const size_t seq = cells_[head_ & mask_].sequence.load(std::memory_order_acquire);
    return static_cast<intptr_t>(seq) - static_cast<intptr_t>(head_ + 1) < 0;
  }

  // The consumer thread only. nullopt when empty.
  std::optional<T> TryPop() {
    Cell& cell = cells_[head_ & mask_];
    const size_t seq = cell.sequence.load(std::memory_order_acquire);
    if (static_cast<intptr_t>(seq) - static_cast<intptr_t>(head_ + 1) < 0) return std::nullopt;
    std::optional<T> out(std::move(cell.value));
    cell.sequence.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    return out;
  }

 private:
  struct Cell {
    std::atomic<size_t> sequence;
    T value;
  };

  const size_t mask_;
  std::unique_ptr<Cell[]> cells_;
  alignas(64) std::atomic<size_t> tail_{0};  // producers
  alignas(64) size_t head_ = 0;              // the consumer
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_MPSC_QUEUE_H_
