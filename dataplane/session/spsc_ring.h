// SpscRing<Entry>: one single-producer/single-consumer ring of fixed-size entries in memory that
// two processes share (a session's segment: the client and the agent's engine thread).
//
// Layout, in the shared memory: a RingControl (the consumer's head, the producer's tail and the
// consumer's flags, each on its own cache line) and `capacity` entries, a power of two. Indices
// are free-running 32-bit counters; an entry's slot is index & (capacity - 1).
//
// Ordering: the producer writes entries, then stores its tail with release; the consumer loads the
// tail with acquire, copies the entries out, then stores its head with release; the producer loads
// the head with acquire before it reuses a slot. No locks, no allocation, no system calls.
//
// Trust: the other side may be a buggy or hostile process that writes anything into the segment at
// any time. So every index read from the other side is checked (a tail more than `capacity` past
// our head, or a head past our tail, is corruption: the ring is broken and says so; nothing
// outside the ring is ever touched), and entries are copied out before anyone looks at them (the
// producer could change them after a check).
//
// Sleeping consumers (io_uring's NEED_WAKEUP): a consumer that wants to sleep sets kSleeping,
// issues a full fence and looks at the ring once more before it blocks on its doorbell; a
// producer publishes its tail, issues a full fence and rings the doorbell only if kSleeping is set.
// One of the two always sees the other, so no wakeup is lost and an awake consumer costs the
// producer no system call.
//
// Threading: one producer thread and one consumer thread per ring; each side keeps its own
// SpscRing object over the same memory.
#ifndef BRAID_DATAPLANE_SESSION_SPSC_RING_H_
#define BRAID_DATAPLANE_SESSION_SPSC_RING_H_

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace braid::session {

namespace ring_internal {
// The two sides map a segment at different addresses, so ThreadSanitizer cannot pair one side's
// release with the other's acquire when both run in one process (the tests). In TSan builds each
// side also releases and acquires this one object; elsewhere these are nothing.
#if defined(__SANITIZE_THREAD__)
inline char sync_object;
inline void Published() { __tsan_release(&sync_object); }
inline void Observed() { __tsan_acquire(&sync_object); }
#else
inline void Published() {}
inline void Observed() {}
#endif
}  // namespace ring_internal

struct alignas(64) RingIndex {
  std::atomic<uint32_t> value{0};
};

struct RingControl {
  RingIndex head;   // written by the consumer
  RingIndex tail;   // written by the producer
  RingIndex flags;  // written by the consumer: kSleeping
};
static_assert(sizeof(RingControl) == 192);
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared between processes");

inline constexpr uint32_t kSleeping = 1u;

template <typename Entry>
class SpscRing {
  static_assert(std::is_trivially_copyable_v<Entry>);

 public:
  SpscRing() = default;
  // `control` and `entries` (capacity entries, a power of two) lie in the shared segment.
  SpscRing(RingControl* control, Entry* entries, uint32_t capacity)
      : control_(control), entries_(entries), capacity_(capacity), mask_(capacity - 1) {}

  uint32_t capacity() const { return capacity_; }
  // Set once the other side broke the protocol; the ring is then of no further use.
  bool broken() const { return broken_; }

  // Producer: copies up to `in.size()` entries in; returns how many fit (0 when full or broken).
  uint32_t Push(std::span<const Entry> in) {
    if (broken_) return 0;
    const uint32_t head = control_->head.value.load(std::memory_order_acquire);
    ring_internal::Observed();
    const uint32_t used = tail_ - head;
    if (used > capacity_) {  // the consumer's head ran past what we produced
      broken_ = true;
      return 0;
    }
    const uint32_t n = std::min<uint32_t>(capacity_ - used, static_cast<uint32_t>(in.size()));
    for (uint32_t i = 0; i < n; ++i) {
      std::memcpy(&entries_[(tail_ + i) & mask_], &in[i], sizeof(Entry));
    }
    tail_ += n;
    ring_internal::Published();
    control_->tail.value.store(tail_, std::memory_order_release);
    return n;
  }
  // Producer: free slots (0 when broken or full).
  uint32_t Room() {
    if (broken_) return 0;
    const uint32_t used = tail_ - control_->head.value.load(std::memory_order_acquire);
    ring_internal::Observed();
    if (used > capacity_) {
      broken_ = true;
      return 0;
    }
    return capacity_ - used;
  }
  // Producer, after Push: true when the consumer sleeps and must be woken (its doorbell rung).
  bool ConsumerSleeps() const {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return (control_->flags.value.load(std::memory_order_relaxed) & kSleeping) != 0;
  }

  // Consumer: copies up to `out.size()` entries out and consumes them; returns how many (0 when
  // empty or broken).
  uint32_t Pop(std::span<Entry> out) {
    const uint32_t n = std::min<uint32_t>(Ready(), static_cast<uint32_t>(out.size()));
    for (uint32_t i = 0; i < n; ++i) {
      std::memcpy(&out[i], &entries_[(head_ + i) & mask_], sizeof(Entry));
    }
    head_ += n;
    ring_internal::Published();
    if (n > 0) control_->head.value.store(head_, std::memory_order_release);
    return n;
  }
  // Consumer: entries waiting (0 when broken).
  uint32_t Ready() {
    if (broken_) return 0;
    const uint32_t tail = control_->tail.value.load(std::memory_order_acquire);
    ring_internal::Observed();
    const uint32_t ready = tail - head_;
    if (ready > capacity_) {  // the producer's tail is beyond the ring
      broken_ = true;
      return 0;
    }
    return ready;
  }
  // Consumer: announces that it is about to sleep; returns true when it may (nothing arrived
  // meanwhile). Call Awake() after the sleep, or when this returns false.
  bool PrepareToSleep() {
    control_->flags.value.store(kSleeping, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return Ready() == 0 && !broken_;
  }
  void Awake() { control_->flags.value.store(0, std::memory_order_relaxed); }

 private:
  RingControl* control_ = nullptr;
  Entry* entries_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t mask_ = 0;
  uint32_t head_ = 0;  // consumer's own copy: never read back from the segment
  uint32_t tail_ = 0;  // producer's own copy
  bool broken_ = false;
};

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_SPSC_RING_H_
