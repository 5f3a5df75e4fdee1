// VirtualQp: stream pieces and owed sequence numbers.
//
// The peer's reorder window waits for every sequence number the sender handed out (SPRAY notify
// numbers, DQPLB fragment and tail numbers). When no data QP is left to carry a piece that took
// one, its virtual WR fails but the number is owed, and paid as a void (a zero-length
// WRITE_WITH_IMM carrying only the number) as soon as a data QP is healthy again. See doc/vqp.md
// ("Failure handling").
#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

void VirtualQp::Owe(uint32_t seq, OwedKind kind) {
  // Bounded by construction: every piece in flight, and one notify or tail per WR.
  if (!send_.owed.Push({seq, kind})) ++counters_.protocol_errors;
}

void VirtualQp::OwePiece(uint32_t fslot, ibv_wc_status status) {
  const Fragment& f = send_.frags[fslot];
  Owe(f.seq, f.kind == WrKind::kNotify ? OwedKind::kVoidNotify
                                       : (f.tail ? OwedKind::kVoidTail : OwedKind::kVoid));
  FinishPiece(fslot, status, /*release_seq=*/false);
}

void VirtualQp::PayOwed() {
  while (!send_.owed.empty()) {
    const int qp = PickQp(WrKind::kFragment, -1);
    if (qp < 0) return;  // none healthy, or no room yet
    const Owed o = send_.owed.Front();
    Fragment piece;
    piece.owed = true;
    piece.stream = true;
    piece.kind = o.kind == OwedKind::kVoidNotify ? WrKind::kNotify : WrKind::kFragment;
    piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    piece.tail = o.kind == OwedKind::kVoidTail;
    piece.seq = o.seq;
    const PostResult r = PostPiece(piece, qp);
    if (r == PostResult::kBlocked) return;
    if (r == PostResult::kNoQp) continue;  // that QP died on post: pick another
    send_.owed.Pop();
  }
}

}  // namespace braid::vqp
