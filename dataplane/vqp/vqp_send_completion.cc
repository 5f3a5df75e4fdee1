// VirtualQp send path: physical send completions, failover of pieces, the end of a virtual WR.
#include <algorithm>

#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

using common::Status;

void VirtualQp::OnSendCompletion(int qp_index, const ibv_wc& wc, uint32_t fslot) {
  if (fslot >= send_.frags.size()) {
    ++counters_.protocol_errors;
    return;
  }
  Fragment& f = send_.frags[fslot];
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  --q.outstanding;
  q.outstanding_bytes -= f.length;
  DeviceLoad* load = qp_index < static_cast<int>(config_.num_qps)
                         ? &devices_.load[static_cast<size_t>(q.device)]
                         : nullptr;
  if (load != nullptr) {
    --load->outstanding;
    load->outstanding_bytes -= f.length;
  }
  if (wc.status == IBV_WC_SUCCESS) {
    const uint64_t now = NowNs();
    q.rate.OnComplete(now, f.length);
    if (load != nullptr) {
      load->rate.OnComplete(now, f.length);
      load->last_progress_ns = now;
    }
    if (f.kind == WrKind::kFragment && !f.tail && f.length > 0) {
      if (f.opcode == IBV_WR_RDMA_READ) {
        q.traffic.read_bytes += f.length;
        ++q.traffic.read_fragments;
      } else {
        q.traffic.write_bytes += f.length;
        ++q.traffic.write_fragments;
      }
    }
    FinishPiece(fslot, IBV_WC_SUCCESS);
    return;
  }
  MarkDead(qp_index, wc.status);
  if (f.owed) {  // still owed: paid again on the next healthy QP
    OwePiece(fslot, wc.status);
    return;
  }
  SendEntry& e = send_.entries[f.send_slot];
  if (IsOperationFault(wc.status)) e.op_fault = true;
  // A flush is a consequence: report the error that killed the QP, when known (the first real
  // error of the virtual WR) and when it was not another operation's own fault.
  const ibv_wc_status cause =
      wc.status == IBV_WC_WR_FLUSH_ERR && q.death != IBV_WC_SUCCESS && !IsOperationFault(q.death)
          ? q.death
          : wc.status;
  // Idempotent pieces fail over. User data is re-posted only with failover on; the pieces that keep
  // the peer's stream aligned (notifies, tails, sequence-numbered fragments, fences) always are, as
  // void markers where the data itself may not be.
  const bool data_piece = f.kind == WrKind::kFragment && !f.tail;
  // The budget limits re-posts of user data; stream pieces are re-posted while any data QP
  // lives (a lost one would misalign the peer for good). Every re-post follows a QP's death, so
  // they are bounded by the QP count either way.
  const bool within_budget = f.stream || f.replays < std::max<uint32_t>(config_.retry_budget, 1);
  const bool replay =
      !destroying_ && f.kind != WrKind::kMessage &&
      (f.stream || f.kind == WrKind::kFence || (data_piece && config_.failover && !e.op_fault)) &&
      within_budget &&
      AnyHealthyFor(f.kind == WrKind::kFence ? WrKind::kFence : WrKind::kFragment,
                    f.kind == WrKind::kFence ? f.fence_device : -1);
  if (f.kind == WrKind::kFence && !replay) {
    FinishPiece(fslot, IBV_WC_SUCCESS);  // no QP left on that device: its data was acknowledged
    return;
  }
  if (!replay) {
    // A stream piece no QP can carry now stays owed to the peer; its virtual WR fails.
    if (!destroying_ && f.stream) {
      OwePiece(fslot, cause);
    } else {
      FinishPiece(fslot, cause);
    }
    return;
  }
  if (f.kind == WrKind::kNotify && e.express) {
    // An express notify is not replayed on its own: it must follow its fragment, which may be
    // being replayed on another QP. The message goes the acknowledged way from here: once its
    // data is acknowledged, fences and the notify (same sequence number; a copy the peer already
    // has is dropped there).
    LeaveExpress(e);
    ++counters_.failovers;
    FinishPiece(fslot, IBV_WC_SUCCESS);
    return;
  }
  if (data_piece && f.stream && (!config_.failover || e.op_fault)) {
    // The data may not be re-sent: the message fails, its sequence number travels as a void.
    e.status = MergeStatus(e.status, cause);
    e.aborted = true;
    f.length = 0;
  }
  ++f.replays;
  ++counters_.failovers;
  // At most one entry per fragment slot: a piece waiting here is not in flight.
  if (!send_.retry.Push(fslot)) ++counters_.protocol_errors;
}

void VirtualQp::RetryPending() {
  while (!send_.retry.empty()) {
    const uint32_t fslot = send_.retry.Front();
    Fragment& f = send_.frags[fslot];
    const WrKind kind = f.kind == WrKind::kFence ? WrKind::kFence : WrKind::kFragment;
    const int qp = PickQp(kind, f.kind == WrKind::kFence ? f.fence_device : -1);
    if (qp == -1) return;  // wait for room
    if (qp >= 0) {
      f.qp = static_cast<uint16_t>(qp);
      const PostResult r = Submit(fslot);
      if (r == PostResult::kBlocked) return;
      if (r == PostResult::kNoQp) continue;  // died on post: pick again
      send_.entries[f.send_slot].devices_used |= 1u << qps_[static_cast<size_t>(qp)].device;
      --send_.entries[f.send_slot].inflight;  // Submit counted it again; it was never released
    }
    send_.retry.Pop();
    if (qp == -2) {
      if (!destroying_ && f.stream) {
        OwePiece(fslot, last_error_);
      } else {
        FinishPiece(fslot, f.kind == WrKind::kFence ? IBV_WC_SUCCESS : last_error_);
      }
    }
  }
}

void VirtualQp::FinishPiece(uint32_t fslot, ibv_wc_status status, bool release_seq) {
  const Fragment& f = send_.frags[fslot];
  if (release_seq && f.stream) protocol_->Release(f);
  send_.free_frags.push_back(fslot);
  if (f.owed) return;
  const uint32_t slot = f.send_slot;
  SendEntry& e = send_.entries[slot];
  if (status != IBV_WC_SUCCESS) {
    e.status = MergeStatus(e.status, status);
    e.aborted = true;
  }
  --e.inflight;
  // Fast paths: pieces still out, or the last piece of a plain WR that needs no notify.
  if (e.inflight > 0 && e.stage != SendStage::kData && e.stage != SendStage::kTail) return;
  if (e.inflight == 0 && e.stage == SendStage::kWaitData && !e.after_data) {
    e.stage = SendStage::kDone;
    return;
  }
  if (!Advance(slot)) Stall(slot);
}

}  // namespace braid::vqp
