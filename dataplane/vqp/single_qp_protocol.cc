#include "dataplane/vqp/single_qp_protocol.h"

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

PostResult SingleQpProtocol::ShapeFragment(const SendEntry& entry, Fragment& piece) {
  if (entry.wr.length <= vqp_.config().fragment_size) {
    piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;  // one fragment: the write carries the immediate
  }
  return PostResult::kPosted;
}

PostResult SingleQpProtocol::PostTail(uint32_t slot) {
  const SendEntry& e = vqp_.entry(slot);
  const VirtualSendWr& wr = e.wr;
  if (e.aborted || (wr.length > 0 && wr.length <= vqp_.config().fragment_size)) {
    return PostResult::kPosted;  // nothing to end: the write carried the immediate
  }
  // RC order on the one QP makes a notify right behind the data safe.
  vqp_.WritePayload(slot, {wr.length, 0, 0});
  Fragment piece;
  piece.send_slot = slot;
  piece.kind = WrKind::kNotify;
  piece.opcode = wr.length == 0 ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_SEND_WITH_IMM;
  return vqp_.PostOnDataQp(piece);
}

uint32_t SingleQpProtocol::Imm(const Fragment& piece, const VirtualSendWr& wr) const {
  (void)piece;
  return wr.imm_data;
}

bool SingleQpProtocol::Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
                              ReorderWindow::Entry* entry) const {
  (void)wc;
  (void)payload;
  (void)seq;
  (void)entry;
  return false;  // a single-QP VQP has no receive pool
}

}  // namespace braid::vqp
