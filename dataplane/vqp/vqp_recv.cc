// VirtualQp receive path: pools, notifies and DQPLB reordering, user receives, in-order reports.
#include <arpa/inet.h>

#include <cstring>
#include <string>

#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

using common::Status;
using wire::kAbortedFlag;
using wire::kSeqMask;
using wire::kTailBit;
using wire::kVoidBit;
using wire::Payload;

Status VirtualQp::PostPhysicalRecv(int qp_index, WrKind kind, uint32_t slot, ibv_sge sge) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  ibv_recv_wr wr{};
  wr.wr_id = WrTag::Encode(kind, slot);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  BRAID_RETURN_IF_ERROR(q.qp->PostRecv(&wr, &bad));
  ++q.posted_recvs;
  return Status::Ok();
}

Status VirtualQp::PostPoolRecv(int qp_index, uint32_t pool_slot) {
  const int device = qps_[static_cast<size_t>(qp_index)].device;
  return PostPhysicalRecv(qp_index, WrKind::kPoolRecv, pool_slot,
                          {control_addr(PoolSlotOffset(pool_slot)), 16,
                           control_mrs_[static_cast<size_t>(device)]->lkey()});
}

Status VirtualQp::PostRecv(const VirtualRecvWr& wr) {
  if (!connected_) return Status::FailedPrecondition("VQP is not connected");
  if (recv_tail_ - recv_head_ == config_.max_virtual_wrs) return Status::NoResource();
  const uint32_t slot = SlotOf(recv_tail_);
  if (wr.length > 0 || !multi()) {
    // A SEND buffer (message QP), or a single-QP notification slot: a physical receive.
    PhysQp& q = qps_[static_cast<size_t>(message_qp())];
    if (q.health == QpHealth::kDead) return Status::QpError("the message QP is dead");
    ibv_sge sge;
    if (wr.length > 0) {
      if (wr.length > UINT32_MAX)
        return Status::InvalidArgument("a SEND buffer holds at most 4 GiB");
      const uint32_t lkey = local_keys_.Get(wr.local_keys, static_cast<uint32_t>(q.device));
      if (lkey == 0) {
        return Status::InvalidArgument("local key entry " + std::to_string(wr.local_keys) +
                                       " has no key for the message QP's device; register the "
                                       "memory on every device the VQP uses");
      }
      sge = {wr.local_addr, static_cast<uint32_t>(wr.length), lkey};
    } else {
      sge = {control_addr(UserRecvSlotOffset(slot)), 16,
             control_mrs_[static_cast<size_t>(q.device)]->lkey()};
    }
    BRAID_RETURN_IF_ERROR(PostPhysicalRecv(message_qp(), WrKind::kUserRecv, slot, sge));
  }
  RecvEntry& r = Recv(recv_tail_++);
  r = RecvEntry{};
  r.wr = wr;
  r.opcode = wr.length > 0 ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM;
  if (multi() && wr.length == 0) {
    // Messages that arrived before this receive was posted (the DQPLB sequence window).
    while (buffered_count_ > 0) {
      uint64_t i = std::max(recv_match_, recv_head_);
      while (i != recv_tail_ && (Recv(i).wr.length > 0 || Recv(i).done)) ++i;
      recv_match_ = i;
      if (i == recv_tail_) break;
      const Message m = buffered_[buffered_head_];
      buffered_head_ = (buffered_head_ + 1) % buffered_.size();
      --buffered_count_;
      Deliver(m.imm, m.bytes);
    }
    ReportRecvs();
  }
  return Status::Ok();
}

// One complete write-with-imm message, in the sender's posting order. `bytes` carries the
// aborted flag in its top bit (see OnPoolMessage).
void VirtualQp::Deliver(uint32_t imm, uint64_t bytes) {
  uint64_t i = std::max(recv_match_, recv_head_);
  while (i != recv_tail_ && (Recv(i).wr.length > 0 || Recv(i).done)) ++i;
  recv_match_ = i;
  if (i == recv_tail_) {
    if (buffered_count_ == buffered_.size()) {
      ++counters_.protocol_errors;  // the peer sent more messages than we can hold
      return;
    }
    buffered_[(buffered_head_ + buffered_count_) % buffered_.size()] = {imm, bytes};
    ++buffered_count_;
    ++counters_.buffered_messages;
    return;
  }
  RecvEntry& r = Recv(i);
  r.done = true;
  r.imm = imm;
  const bool aborted = (bytes >> 63) != 0;
  r.bytes = bytes & ~(1ull << 63);
  r.status = aborted ? IBV_WC_REM_ABORT_ERR : IBV_WC_SUCCESS;
  recv_match_ = i + 1;
}

bool VirtualQp::OnPoolMessage(const ibv_wc& wc, uint32_t pool_slot) {
  Payload p;
  std::memcpy(&p, control(PoolSlotOffset(pool_slot)), sizeof(p));
  uint32_t seq;
  ReorderWindow::Entry entry;
  if (config_.scheme == Scheme::kSpray) {
    if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      // A void notify: the sender owed this sequence number for a message it failed.
      seq = ntohl(wc.imm_data);
      entry = {true, true, 0, 1ull << 63};
    } else if (wc.opcode != IBV_WC_RECV || !(wc.wc_flags & IBV_WC_WITH_IMM)) {
      ++counters_.protocol_errors;
      return true;
    } else {
      seq = p.value;
      entry = {true, true, wc.imm_data, p.bytes | (p.flags & kAbortedFlag ? 1ull << 63 : 0)};
    }
  } else {
    const uint32_t v = ntohl(wc.imm_data);
    seq = v & kSeqMask;
    if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM && (v & kTailBit)) {
      // A void tail: the sender failed the message and owed its end.
      entry = {true, true, 0, 1ull << 63};
    } else if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      // A fragment, or a void marker standing in for a fragment that was not delivered: the
      // message it belongs to is incomplete (bit 63 of bytes).
      entry = {true, false, 0, (v & kVoidBit) ? 1ull << 63 : 0};
    } else if (wc.opcode == IBV_WC_RECV && (v & kTailBit)) {
      entry = {true, true, p.value, p.bytes | (p.flags & kAbortedFlag ? 1ull << 63 : 0)};
    } else {
      ++counters_.protocol_errors;
      return true;
    }
  }
  const ReorderWindow::Arrival arrival = window_.Insert(seq, entry);
  if (arrival == ReorderWindow::Arrival::kOutOfWindow) {
    parked_[pool_slot] = {true, seq, entry};
    ++parked_count_;
    ++counters_.parked_arrivals;
    return false;
  }
  if (arrival == ReorderWindow::Arrival::kDuplicate) ++counters_.duplicates_dropped;
  DrainWindow();
  return true;
}

// Delivers every message the window holds in order, then retries parked arrivals.
void VirtualQp::DrainWindow() {
  bool moved = true;
  while (moved) {
    moved = false;
    ReorderWindow::Entry e;
    while (window_.PopNext(&e)) {
      moved = true;
      if (!e.last) {
        message_incomplete_ = message_incomplete_ || (e.bytes >> 63) != 0;
        continue;
      }
      Deliver(e.imm, e.bytes | (message_incomplete_ ? 1ull << 63 : 0));
      message_incomplete_ = false;
    }
    if (!moved || parked_count_ == 0) break;
    for (uint32_t slot = 0; slot < parked_.size() && parked_count_ > 0; ++slot) {
      Parked& pk = parked_[slot];
      if (!pk.valid) continue;
      const ReorderWindow::Arrival a = window_.Insert(pk.seq, pk.entry);
      if (a == ReorderWindow::Arrival::kOutOfWindow) continue;
      if (a == ReorderWindow::Arrival::kDuplicate) ++counters_.duplicates_dropped;
      pk.valid = false;
      --parked_count_;
      const int qp = static_cast<int>(slot / config_.qp_capacity);
      if (!destroying_ && qps_[static_cast<size_t>(qp)].health != QpHealth::kDead &&
          !PostPoolRecv(qp, slot).ok()) {
        MarkDead(qp, IBV_WC_GENERAL_ERR);
      }
    }
  }
}

void VirtualQp::OnRecvCompletion(int qp_index, const ibv_wc& wc, WrKind kind, uint32_t slot) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  --q.posted_recvs;
  if (wc.status != IBV_WC_SUCCESS) MarkDead(qp_index, wc.status);
  if (kind == WrKind::kPoolRecv) {
    if (wc.status != IBV_WC_SUCCESS) return;  // flushed: the QP is gone
    if (!OnPoolMessage(wc, slot)) return;     // parked: re-posted once the window moves
    if (!destroying_ && q.health != QpHealth::kDead && !PostPoolRecv(qp_index, slot).ok()) {
      MarkDead(qp_index, IBV_WC_GENERAL_ERR);
    }
    return;
  }
  if (slot >= recvs_.size()) {
    ++counters_.protocol_errors;
    return;
  }
  RecvEntry& r = recvs_[slot];
  r.done = true;
  r.status = wc.status;
  if (wc.status != IBV_WC_SUCCESS) return;  // opcode, byte_len and imm are undefined: route by tag
  if (r.wr.length > 0) {
    r.bytes = wc.byte_len;
    r.imm = (wc.wc_flags & IBV_WC_WITH_IMM) ? wc.imm_data : 0;
    return;
  }
  // Single QP: a direct WRITE_WITH_IMM, or a notify (SEND_WITH_IMM) after a fragmented write.
  r.imm = wc.imm_data;
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    r.bytes = wc.byte_len;
  } else {
    Payload p;
    std::memcpy(&p, control(UserRecvSlotOffset(slot)), sizeof(p));
    r.bytes = p.bytes;
  }
}

void VirtualQp::ReportRecvs() {
  while (recv_head_ != recv_tail_ && Recv(recv_head_).done) {
    const RecvEntry& r = Recv(recv_head_);
    cq_.Emit({r.wr.wr_id, r.status, r.opcode, vqp_num_, r.imm, r.bytes});
    ++recv_head_;
  }
}

}  // namespace braid::vqp
