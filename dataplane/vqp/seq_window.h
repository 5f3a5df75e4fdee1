// SeqWindow: the sender's side of the DQPLB sequence window.
//
// A sequence number is taken when a piece that carries one is posted and released when that piece
// is acknowledged (or paid as a void). At most `size` numbers are outstanding, the size of the
// peer's reorder window, so no arrival can run beyond it: a full window is back-pressure, never
// corruption. Threading: the owning VQP's (engine) thread; no allocation after Init.
#ifndef BRAID_DATAPLANE_VQP_SEQ_WINDOW_H_
#define BRAID_DATAPLANE_VQP_SEQ_WINDOW_H_

#include <cstdint>
#include <vector>

namespace braid::vqp {

class SeqWindow {
 public:
  // `size`: a power of two.
  void Init(uint32_t size) {
    done_.assign(size, 0);
    next_ = 0;
    oldest_ = 0;
  }
  bool full() const { return next_ - oldest_ >= done_.size(); }
  // The number the next piece will take.
  uint32_t next() const { return next_; }
  uint32_t Take() { return next_++; }
  // `seq` is acknowledged; the window slides past every acknowledged number at its start.
  void Release(uint32_t seq) {
    const uint32_t mask = static_cast<uint32_t>(done_.size()) - 1;
    done_[seq & mask] = 1;
    while (oldest_ != next_ && done_[oldest_ & mask]) {
      done_[oldest_ & mask] = 0;
      ++oldest_;
    }
  }

 private:
  std::vector<uint8_t> done_;
  uint32_t next_ = 0;
  uint32_t oldest_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_SEQ_WINDOW_H_
