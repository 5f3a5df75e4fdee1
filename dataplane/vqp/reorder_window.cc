#include "dataplane/vqp/reorder_window.h"

namespace braid::vqp {

ReorderWindow::ReorderWindow(uint32_t size, int bits, uint32_t start)
    : mask_(size - 1),
      seq_mask_(bits >= 32 ? 0xFFFFFFFFu : ((1u << bits) - 1)),
      shift_(32 - bits),
      next_(start & seq_mask_) {
  if (!ring_.Allocate(size)) mask_ = 0;
}

int32_t ReorderWindow::Diff(uint32_t a, uint32_t b) const {
  return static_cast<int32_t>(((a - b) & seq_mask_) << shift_) >> shift_;
}

ReorderWindow::Arrival ReorderWindow::Insert(uint32_t seq, const Entry& entry) {
  const int32_t d = Diff(seq, next_);
  if (d < 0) return Arrival::kDuplicate;
  if (static_cast<uint32_t>(d) >= ring_.size()) return Arrival::kOutOfWindow;
  Entry& slot = ring_[seq & mask_];
  if (slot.present) return Arrival::kDuplicate;
  slot = entry;
  slot.present = true;
  return Arrival::kAccepted;
}

bool ReorderWindow::PopNext(Entry* out) {
  if (ring_.empty()) return false;
  Entry& slot = ring_[next_ & mask_];
  if (!slot.present) return false;
  *out = slot;
  slot = Entry{};
  next_ = (next_ + 1) & seq_mask_;
  return true;
}

}  // namespace braid::vqp
