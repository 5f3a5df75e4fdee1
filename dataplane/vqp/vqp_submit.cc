// VirtualQp send path: physical WRs built from fragments and posted on a chosen QP.
#include <cstring>

#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

using common::Status;

PostResult VirtualQp::PostOnDataQp(const Fragment& piece) {
  PostResult r;
  do {
    const int qp = PickQp(WrKind::kFragment, -1);
    if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
    r = PostPiece(piece, qp);
  } while (r == PostResult::kNoQp);  // that QP just died: pick another
  return r;
}

void VirtualQp::WritePayload(uint32_t slot, const wire::Payload& payload) {
  std::memcpy(control(NotifyPayloadOffset(slot)), &payload, sizeof(payload));
}

// Takes a fragment slot for `piece` and posts it on `qp_index`. kNoQp: the post failed and the QP
// is now Dead (the caller picks another); kBlocked: no room.
PostResult VirtualQp::PostPiece(Fragment piece, int qp_index) {
  if (send_.free_frags.empty()) return PostResult::kBlocked;
  const uint32_t fslot = send_.free_frags.back();
  send_.free_frags.pop_back();
  piece.qp = static_cast<uint16_t>(qp_index);
  send_.frags[fslot] = piece;
  const PostResult r = Submit(fslot);
  if (r != PostResult::kPosted) {
    send_.free_frags.push_back(fslot);
  } else if (qp_index < static_cast<int>(config_.num_qps)) {
    rr_ = static_cast<uint32_t>(qp_index + 1) == config_.num_qps  // ties rotate across QPs
              ? 0
              : static_cast<uint32_t>(qp_index + 1);
  }
  return r;
}

// Builds the physical WR of fragment `fslot` for its QP and posts it.
PostResult VirtualQp::Submit(uint32_t fslot) {
  Fragment& f = send_.frags[fslot];
  PhysQp& q = qps_[f.qp];
  SendEntry* entry = f.owed ? nullptr : &send_.entries[f.send_slot];
  static const VirtualSendWr kNoWr{};
  const VirtualSendWr& wr = entry != nullptr ? entry->wr : kNoWr;
  const auto device = static_cast<uint32_t>(q.device);
  ibv_sge sge{};
  ibv_send_wr pwr{};
  pwr.wr_id = WrTag::Encode(f.kind, fslot);
  pwr.send_flags = IBV_SEND_SIGNALED;
  pwr.opcode = f.opcode;
  pwr.sg_list = &sge;
  if (f.owed) {
    // A void: a zero-length write-with-imm that carries only the sequence number.
    pwr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    pwr.imm_data = protocol_->Imm(f, wr);
  } else
    switch (f.kind) {
      case WrKind::kFragment:
        if (f.tail) {
          sge = {control_addr(NotifyPayloadOffset(f.send_slot)), sizeof(wire::Payload),
                 control_.mrs[device]->lkey()};
          pwr.imm_data = protocol_->Imm(f, wr);
          break;
        }
        if (f.length == 0) {  // a void marker: keeps the peer's sequence without data
          pwr.imm_data = protocol_->Imm(f, wr);
          pwr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
          break;
        }
        sge = {wr.local_addr + f.offset, f.length, local_keys_.Get(wr.local_keys, device)};
        pwr.wr.rdma.remote_addr = wr.remote_addr + f.offset;
        pwr.wr.rdma.rkey = remote_keys_.Get(wr.remote_keys, q.remote_device);
        if (f.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
          pwr.imm_data = protocol_->Imm(f, wr);
        }
        break;
      case WrKind::kNotify:
        pwr.imm_data = wr.imm_data;
        if (f.opcode == IBV_WR_SEND_WITH_IMM) {
          sge = {control_addr(NotifyPayloadOffset(f.send_slot)), sizeof(wire::Payload),
                 control_.mrs[device]->lkey()};
        }
        break;
      case WrKind::kFence:
        sge = {control_addr(control_.fence_offset + 8), 1, control_.mrs[device]->lkey()};
        pwr.wr.rdma.remote_addr = peer_.control_addr;
        pwr.wr.rdma.rkey = peer_.control_rkeys[q.remote_device];
        break;
      case WrKind::kMessage:
        sge = {wr.local_addr, static_cast<uint32_t>(wr.length),
               local_keys_.Get(wr.local_keys, device)};
        pwr.imm_data = wr.imm_data;
        if (wr.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD || wr.opcode == IBV_WR_ATOMIC_CMP_AND_SWP) {
          pwr.wr.atomic.remote_addr = wr.remote_addr;
          pwr.wr.atomic.rkey = remote_keys_.Get(wr.remote_keys, q.remote_device);
          pwr.wr.atomic.compare_add = wr.compare_add;
          pwr.wr.atomic.swap = wr.swap;
        }
        break;
      default:
        break;
    }
  // A zero-length WR still points at a (zeroed) SGE; some drivers read sg_list regardless.
  pwr.num_sge = sge.length > 0 ? 1 : 0;
  ibv_send_wr* bad = nullptr;
  const Status s = q.qp->PostSend(&pwr, &bad);
  if (!s.ok()) {
    if (s.code() == common::StatusCode::kNoResource) return PostResult::kBlocked;
    MarkDead(f.qp, IBV_WC_GENERAL_ERR);  // a QP that refuses work is no longer usable
    return PostResult::kNoQp;
  }
  // Data QPs only: the message QP's SENDs may wait for receives (RNR) without the link stalling.
  DeviceLoad* load = f.qp < config_.num_qps ? &devices_.load[device] : nullptr;
  if (q.outstanding == 0 || (load != nullptr && load->outstanding == 0)) {
    const uint64_t now = NowNs();
    if (q.outstanding == 0) q.rate.OnBusy(now);
    if (load != nullptr && load->outstanding == 0) {
      load->rate.OnBusy(now);
      load->last_progress_ns = now;
    }
  }
  ++q.outstanding;
  q.outstanding_bytes += f.length;
  if (load != nullptr) {
    ++load->outstanding;
    load->outstanding_bytes += f.length;
  }
  if (entry != nullptr) ++entry->inflight;
  ++counters_.fragments_posted;
  counters_.bytes_posted += f.length;
  if (f.kind == WrKind::kNotify) ++counters_.notifies_posted;
  if (f.kind == WrKind::kFence) ++counters_.fences_posted;
  return PostResult::kPosted;
}

}  // namespace braid::vqp
