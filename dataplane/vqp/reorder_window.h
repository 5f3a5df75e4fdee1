// ReorderWindow: turns sequence-numbered arrivals on several QPs back into one ordered stream.
//
// Used by the receiver for DQPLB fragment sequence numbers (24-bit ring) and SPRAY notify
// sequence numbers (32-bit). `size` (a power of two) bounds how far ahead of the next expected
// number an arrival may be; the sender's window guarantees it never is (the DQPLB sequence window).
// A number already consumed is a duplicate (a replay: idempotent pieces fail over) and is dropped.
// Threading: the owner's thread; no allocation after construction.
#ifndef BRAID_DATAPLANE_VQP_REORDER_WINDOW_H_
#define BRAID_DATAPLANE_VQP_REORDER_WINDOW_H_

#include <cstdint>

#include "dataplane/common/zeroed_array.h"

namespace braid::vqp {

class ReorderWindow {
 public:
  struct Entry {
    bool present = false;
    bool last = false;   // ends a message (DQPLB tail, SPRAY notify)
    uint32_t imm = 0;    // the sender's immediate (last only)
    uint64_t bytes = 0;  // the message's byte count (last only)
  };
  enum class Arrival { kAccepted, kDuplicate, kOutOfWindow };

  // `bits` = 24 or 32: the width of the sequence numbers; `start`: the first expected number.
  // Out of memory, the window has size() 0 (nothing is accepted): its owner checks.
  ReorderWindow(uint32_t size, int bits, uint32_t start = 0);

  Arrival Insert(uint32_t seq, const Entry& entry);
  // Pops the next entry if it has arrived.
  bool PopNext(Entry* out);
  uint32_t next() const { return next_; }
  uint32_t size() const { return static_cast<uint32_t>(ring_.size()); }

 private:
  int32_t Diff(uint32_t a, uint32_t b) const;

  common::ZeroedArray<Entry> ring_;
  uint32_t mask_;
  uint32_t seq_mask_;
  int shift_;
  uint32_t next_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_REORDER_WINDOW_H_
