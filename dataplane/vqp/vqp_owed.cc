// VirtualQp: stream pieces and owed sequence numbers.
//
// The peer's reorder window waits for every sequence number the sender handed out (SPRAY notify
// numbers, DQPLB fragment and tail numbers). When no data QP is left to carry a piece that took
// one, its virtual WR fails but the number is owed, and paid as a void (a zero-length
// WRITE_WITH_IMM carrying only the number) as soon as a data QP is healthy again. See doc/vqp.md
// ("Failure handling").
#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

bool VirtualQp::CarriesDqplbSeq(const Fragment& f) const {
  return f.kind == WrKind::kFragment && multi() && config_.scheme == Scheme::kDqplb &&
         (f.tail || f.opcode == IBV_WR_RDMA_WRITE_WITH_IMM);
}

bool VirtualQp::CarriesSeq(const Fragment& f) const {
  return CarriesDqplbSeq(f) ||
         (f.kind == WrKind::kNotify && multi() && config_.scheme == Scheme::kSpray);
}

void VirtualQp::Owe(uint32_t seq, OwedKind kind) {
  if (owed_count_ == owed_.size()) {  // bounded by construction: every piece in flight + one per WR
    ++counters_.protocol_errors;
    return;
  }
  owed_[(owed_head_ + owed_count_) % owed_.size()] = {seq, kind};
  ++owed_count_;
}

void VirtualQp::OwePiece(uint32_t fslot, ibv_wc_status status) {
  const Fragment& f = frags_[fslot];
  Owe(f.seq, f.kind == WrKind::kNotify ? OwedKind::kVoidNotify
                                       : (f.tail ? OwedKind::kVoidTail : OwedKind::kVoid));
  FinishPiece(fslot, status, /*release_seq=*/false);
}

void VirtualQp::PayOwed() {
  while (owed_count_ > 0) {
    const int qp = PickQp(WrKind::kFragment, -1);
    if (qp < 0) return;  // none healthy, or no room yet
    const Owed o = owed_[owed_head_];
    Fragment piece;
    piece.owed = true;
    piece.kind = o.kind == OwedKind::kVoidNotify ? WrKind::kNotify : WrKind::kFragment;
    piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    piece.tail = o.kind == OwedKind::kVoidTail;
    piece.seq = o.seq;
    const PostResult r = PostPiece(piece, qp);
    if (r == PostResult::kBlocked) return;
    if (r == PostResult::kNoQp) continue;  // that QP died on post: pick another
    owed_head_ = (owed_head_ + 1) % owed_.size();
    --owed_count_;
  }
}

}  // namespace braid::vqp
