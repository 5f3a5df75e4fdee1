// DeadlineHeap: the deadlines of the engine's transfers, earliest first.
//
// An entry names a transfer slot and the slot's generation when the deadline was set. A slot
// released (or reused) since has another generation, so its entry is stale: the caller's `stale`
// predicate says so, and stale entries are skipped when they surface and purged when the heap is
// full. The engine looks at the top only, so its per-loop work follows the deadlines that are due,
// not the number of transfers.
//
// Threading: the engine thread only. Allocation: the constructor reserves `capacity` entries;
// Push never allocates while stale entries can be purged (the engine sizes it for twice its
// transfer slots).
#ifndef BRAID_DATAPLANE_ENGINE_DEADLINE_HEAP_H_
#define BRAID_DATAPLANE_ENGINE_DEADLINE_HEAP_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace braid::engine {

class DeadlineHeap {
 public:
  struct Entry {
    uint64_t at_ns = 0;
    uint32_t index = 0;
    uint32_t generation = 0;
  };

  explicit DeadlineHeap(size_t capacity) { heap_.reserve(capacity); }

  size_t size() const { return heap_.size(); }
  bool empty() const { return heap_.empty(); }

  // Adds `entry`. When the reserved room is used up, first drops every entry for which
  // `stale(entry)` is true.
  template <typename Stale>
  void Push(const Entry& entry, Stale&& stale) {
    if (heap_.size() + 1 >= heap_.capacity()) {
      std::erase_if(heap_, stale);
      std::make_heap(heap_.begin(), heap_.end(), Later);
    }
    heap_.push_back(entry);
    std::push_heap(heap_.begin(), heap_.end(), Later);
  }

  // Pops the earliest entry if it is due at `now` (at_ns <= now); false when none is.
  bool PopDue(uint64_t now, Entry* out) {
    if (heap_.empty() || heap_.front().at_ns > now) return false;
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    *out = heap_.back();
    heap_.pop_back();
    return true;
  }

 private:
  // The heap's order: the earliest deadline on top.
  static bool Later(const Entry& a, const Entry& b) { return a.at_ns > b.at_ns; }

  std::vector<Entry> heap_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_DEADLINE_HEAP_H_
