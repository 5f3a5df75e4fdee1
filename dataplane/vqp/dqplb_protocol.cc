#include "dataplane/vqp/dqplb_protocol.h"

#include <arpa/inet.h>

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

using wire::kAbortedFlag;
using wire::kSeqMask;
using wire::kTailBit;
using wire::kVoidBit;

PostResult DqplbProtocol::ShapeFragment(const SendEntry& entry, Fragment& piece) {
  (void)entry;
  if (window_.full()) return PostResult::kBlocked;  // back-pressure, not corruption
  piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  piece.seq = window_.next();
  piece.stream = true;
  return PostResult::kPosted;
}

void DqplbProtocol::FragmentPosted(SendEntry& entry, int qp) {
  (void)qp;
  window_.Take();
  entry.seq_taken = true;
}

PostResult DqplbProtocol::PostTail(uint32_t slot) {
  SendEntry& e = vqp_.entry(slot);
  if (vqp_.healthy_data_qps() == 0) {
    // Nothing can carry it now. A message the peer has seen part of must still end there.
    if (e.seq_taken && !vqp_.destroying_) vqp_.Owe(window_.Take(), OwedKind::kVoidTail);
    return PostResult::kNoQp;
  }
  if (window_.full()) return PostResult::kBlocked;
  vqp_.WritePayload(slot, {e.wr.length, e.wr.imm_data, e.aborted ? kAbortedFlag : 0});
  Fragment piece;
  piece.send_slot = slot;
  piece.kind = WrKind::kFragment;
  piece.tail = true;
  piece.stream = true;
  piece.opcode = IBV_WR_SEND_WITH_IMM;
  piece.seq = window_.next();
  const PostResult r = vqp_.PostOnDataQp(piece);
  if (r == PostResult::kPosted) window_.Take();
  return r;
}

uint32_t DqplbProtocol::Imm(const Fragment& piece, const VirtualSendWr& wr) const {
  (void)wr;
  uint32_t v = piece.seq & kSeqMask;
  if (piece.owed) {
    v |= kVoidBit | (piece.tail ? kTailBit : 0);  // a number paid without its data
  } else if (piece.tail) {
    v |= kTailBit;
  } else if (piece.length == 0) {
    v |= kVoidBit;  // a void marker: keeps the peer's sequence without data
  }
  return htonl(v);
}

void DqplbProtocol::Release(const Fragment& piece) {
  if (piece.kind == WrKind::kFragment) window_.Release(piece.seq);
}

bool DqplbProtocol::Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
                           ReorderWindow::Entry* entry) const {
  const uint32_t v = ntohl(wc.imm_data);
  *seq = v & kSeqMask;
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM && (v & kTailBit)) {
    // A void tail: the sender failed the message and owed its end.
    *entry = {true, true, 0, 1ull << 63};
  } else if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    // A fragment, or a void marker standing in for a fragment that was not delivered: the message
    // it belongs to is incomplete (bit 63 of bytes).
    *entry = {true, false, 0, (v & kVoidBit) ? 1ull << 63 : 0};
  } else if (wc.opcode == IBV_WC_RECV && (v & kTailBit)) {
    *entry = {true, true, payload.value,
              payload.bytes | (payload.flags & kAbortedFlag ? 1ull << 63 : 0)};
  } else {
    return false;
  }
  return true;
}

}  // namespace braid::vqp
