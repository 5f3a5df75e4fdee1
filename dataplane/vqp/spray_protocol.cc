#include "dataplane/vqp/spray_protocol.h"

#include <arpa/inet.h>

#include <bit>

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

using wire::kAbortedFlag;

void SprayProtocol::Accept(SendEntry& entry) {
  entry.notify_seq = next_notify_seq_++;  // posting order = the peer's delivery order
  entry.after_data = true;
  entry.express = entry.wr.length > 0 && entry.wr.length <= vqp_.config().fragment_size;
}

void SprayProtocol::FragmentPosted(SendEntry& entry, int qp) {
  if (entry.express) entry.notify_qp = qp;
}

// The express notify, right behind the message's one fragment on its QP; when that QP cannot take
// it now, the message goes the acknowledged way (fences, then the notify, after the data's ACK).
PostResult SprayProtocol::PostTail(uint32_t slot) {
  SendEntry& e = vqp_.entry(slot);
  if (!e.express) return PostResult::kPosted;
  const int qp = e.notify_qp;
  // A QP that died on post brings the fragment's replay through its failure; a full one, none.
  if (e.aborted || qp < 0 || vqp_.health(qp) != QpHealth::kHealthy ||
      vqp_.outstanding(qp) >= vqp_.config().qp_capacity ||
      vqp_.PostPiece(PrepareNotify(slot), qp) != PostResult::kPosted) {
    LeaveExpress(e);
    return PostResult::kPosted;
  }
  e.after_data = false;  // done once the fragment and the notify are acknowledged
  return PostResult::kPosted;
}

bool SprayProtocol::AdvanceAfterData(uint32_t slot) {
  SendEntry& e = vqp_.entry(slot);
  for (;;) {
    switch (e.stage) {
      case SendStage::kFence: {
        const PostResult r = e.aborted ? PostResult::kPosted : PostFences(slot);
        if (r == PostResult::kBlocked) return false;
        e.stage = SendStage::kWaitFence;
        break;
      }
      case SendStage::kWaitFence:
        if (e.inflight > 0) return true;
        e.stage = SendStage::kNotify;
        break;
      case SendStage::kNotify: {
        const PostResult r = PostNotify(slot);
        if (r == PostResult::kBlocked) return false;
        if (r == PostResult::kNoQp) {
          e.status = MergeStatus(e.status, vqp_.last_error_);
          e.aborted = true;
          if (!vqp_.destroying_) vqp_.Owe(e.notify_seq, OwedKind::kVoidNotify);
        }
        e.stage = SendStage::kWaitNotify;
        break;
      }
      case SendStage::kWaitNotify:
        if (e.inflight > 0) return true;
        e.stage = SendStage::kDone;
        return true;
      default:
        return true;
    }
  }
}

// Before the notify, a 1-byte READ on each other device that carried the message's data has
// completed: at the peer a READ cannot pass that device's earlier writes.
PostResult SprayProtocol::PostFences(uint32_t slot) {
  SendEntry& e = vqp_.entry(slot);
  const int num_qps = static_cast<int>(vqp_.config().num_qps);
  if (e.notify_qp < 0 || vqp_.health(e.notify_qp) != QpHealth::kHealthy) {
    e.notify_qp = -1;
    for (int i = 0; i < num_qps; ++i) {  // lowest healthy index: RC order for notifies
      if (vqp_.health(i) == QpHealth::kHealthy) {
        e.notify_qp = i;
        break;
      }
    }
    if (e.notify_qp < 0) return PostResult::kNoQp;
    e.devices_used &= ~(1u << vqp_.physical_device(e.notify_qp));
  }
  while (e.devices_used != 0) {
    const int device = std::countr_zero(e.devices_used);
    const int qp = vqp_.PickQp(WrKind::kFence, device);
    if (qp == -1) return PostResult::kBlocked;
    if (qp >= 0) {
      Fragment piece;
      piece.send_slot = slot;
      piece.kind = WrKind::kFence;
      piece.opcode = IBV_WR_RDMA_READ;
      piece.length = 1;
      piece.fence_device = device;
      const PostResult r = vqp_.PostPiece(piece, qp);
      if (r == PostResult::kBlocked) return r;
      if (r == PostResult::kNoQp) continue;  // that QP died: try another on the device
    }
    // Posted, or no healthy QP is left on that device (its data was acknowledged before it died).
    e.devices_used &= ~(1u << device);
  }
  return PostResult::kPosted;
}

Fragment SprayProtocol::PrepareNotify(uint32_t slot) {
  const SendEntry& e = vqp_.entry(slot);
  vqp_.WritePayload(slot, {e.wr.length, e.notify_seq, e.aborted ? kAbortedFlag : 0});
  Fragment piece;
  piece.send_slot = slot;
  piece.kind = WrKind::kNotify;
  piece.stream = true;
  piece.opcode = IBV_WR_SEND_WITH_IMM;
  piece.seq = e.notify_seq;
  return piece;
}

PostResult SprayProtocol::PostNotify(uint32_t slot) {
  SendEntry& e = vqp_.entry(slot);
  const Fragment piece = PrepareNotify(slot);
  PostResult r;
  do {
    int qp = e.notify_qp;
    if (qp < 0 || vqp_.health(qp) != QpHealth::kHealthy) {
      qp = vqp_.PickQp(WrKind::kNotify, -1);
      if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
    } else if (vqp_.outstanding(qp) >= vqp_.config().qp_capacity) {
      return PostResult::kBlocked;
    }
    r = vqp_.PostPiece(piece, qp);
    if (r == PostResult::kNoQp) e.notify_qp = -1;
  } while (r == PostResult::kNoQp);
  return r;
}

uint32_t SprayProtocol::Imm(const Fragment& piece, const VirtualSendWr& wr) const {
  (void)wr;
  return htonl(piece.seq);  // only voids carry a SPRAY number in their immediate
}

bool SprayProtocol::Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
                           ReorderWindow::Entry* entry) const {
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    // A void notify: the sender owed this sequence number for a message it failed.
    *seq = ntohl(wc.imm_data);
    *entry = {true, true, 0, 1ull << 63};
    return true;
  }
  if (wc.opcode != IBV_WC_RECV || !(wc.wc_flags & IBV_WC_WITH_IMM)) return false;
  *seq = payload.value;
  *entry = {true, true, wc.imm_data,
            payload.bytes | (payload.flags & kAbortedFlag ? 1ull << 63 : 0)};
  return true;
}

}  // namespace braid::vqp
