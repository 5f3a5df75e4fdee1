// Ring<T>: a first-in first-out queue of fixed capacity.
//
// Init() sizes it (and allocates); Push, Front and Pop never allocate. Callers size the ring for
// the most it can ever hold; a Push beyond that is refused (false) and writes nothing, so a broken
// bound loses an entry the caller counts, never memory. Threading: the owner's thread only.
#ifndef BRAID_DATAPLANE_VQP_RING_H_
#define BRAID_DATAPLANE_VQP_RING_H_

#include <cstddef>

#include "dataplane/common/zeroed_array.h"

namespace braid::vqp {

template <typename T>
class Ring {
 public:
  // Empties the ring with room for `capacity` items (untouched until used); false when out of
  // memory.
  [[nodiscard]] bool Init(size_t capacity) {
    head_ = 0;
    count_ = 0;
    return items_.Allocate(capacity);
  }
  size_t size() const { return count_; }
  size_t capacity() const { return items_.size(); }
  bool empty() const { return count_ == 0; }
  bool full() const { return count_ == items_.size(); }

  // False (and nothing stored) when the ring is full.
  [[nodiscard]] bool Push(const T& item) {
    if (full()) return false;
    items_[Index(count_)] = item;
    ++count_;
    return true;
  }
  // REQUIRES: !empty().
  const T& Front() const { return items_[head_]; }
  T Pop() {
    const T item = items_[head_];
    head_ = Index(1);
    --count_;
    return item;
  }

 private:
  size_t Index(size_t k) const {
    const size_t i = head_ + k;
    return i >= items_.size() ? i - items_.size() : i;
  }

  common::ZeroedArray<T> items_;
  size_t head_ = 0;
  size_t count_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_RING_H_
