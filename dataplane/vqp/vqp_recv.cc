// VirtualQp receive path: pools, notifies and DQPLB reordering, user receives, in-order reports.
#include <arpa/inet.h>

#include <cstring>
#include <string>

#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

using common::Status;
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
                           control_.mrs[static_cast<size_t>(device)]->lkey()});
}

Status VirtualQp::PostRecv(const VirtualRecvWr& wr) {
  if (!connected_) return Status::FailedPrecondition("VQP is not connected");
  if (recv_.tail - recv_.head == config_.max_virtual_wrs) return Status::NoResource();
  const uint32_t slot = SlotOf(recv_.tail);
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
             control_.mrs[static_cast<size_t>(q.device)]->lkey()};
    }
    BRAID_RETURN_IF_ERROR(PostPhysicalRecv(message_qp(), WrKind::kUserRecv, slot, sge));
  }
  RecvEntry& r = Recv(recv_.tail++);
  r = RecvEntry{};
  r.wr = wr;
  r.opcode = wr.length > 0 ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM;
  if (multi() && wr.length == 0) {
    // Messages that arrived before this receive was posted (the DQPLB sequence window).
    while (!recv_.buffered.empty()) {
      uint64_t i = std::max(recv_.match, recv_.head);
      while (i != recv_.tail && (Recv(i).wr.length > 0 || Recv(i).done)) ++i;
      recv_.match = i;
      if (i == recv_.tail) break;
      const Message m = recv_.buffered.Pop();
      Deliver(m.imm, m.bytes);
    }
    ReportRecvs();
  }
  return Status::Ok();
}

// One complete write-with-imm message, in the sender's posting order. `bytes` carries the
// aborted flag in its top bit (see OnPoolMessage).
void VirtualQp::Deliver(uint32_t imm, uint64_t bytes) {
  uint64_t i = std::max(recv_.match, recv_.head);
  while (i != recv_.tail && (Recv(i).wr.length > 0 || Recv(i).done)) ++i;
  recv_.match = i;
  if (i == recv_.tail) {
    if (!recv_.buffered.Push({imm, bytes})) {
      ++counters_.protocol_errors;  // the peer sent more messages than we can hold
      return;
    }
    ++counters_.buffered_messages;
    return;
  }
  RecvEntry& r = Recv(i);
  r.done = true;
  r.imm = imm;
  const bool aborted = (bytes >> 63) != 0;
  r.bytes = bytes & ~(1ull << 63);
  r.status = aborted ? IBV_WC_REM_ABORT_ERR : IBV_WC_SUCCESS;
  recv_.match = i + 1;
}

bool VirtualQp::OnPoolMessage(const ibv_wc& wc, uint32_t pool_slot) {
  Payload p;
  std::memcpy(&p, control(PoolSlotOffset(pool_slot)), sizeof(p));
  uint32_t seq;
  ReorderWindow::Entry entry;
  if (!protocol_->Decode(wc, p, &seq, &entry)) {
    ++counters_.protocol_errors;
    return true;
  }
  const ReorderWindow::Arrival arrival = window_.Insert(seq, entry);
  if (arrival == ReorderWindow::Arrival::kOutOfWindow) {
    recv_.parked[pool_slot] = {true, seq, entry};
    ++recv_.parked_count;
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
        recv_.message_incomplete = recv_.message_incomplete || (e.bytes >> 63) != 0;
        continue;
      }
      Deliver(e.imm, e.bytes | (recv_.message_incomplete ? 1ull << 63 : 0));
      recv_.message_incomplete = false;
    }
    if (!moved || recv_.parked_count == 0) break;
    for (uint32_t slot = 0; slot < recv_.parked.size() && recv_.parked_count > 0; ++slot) {
      Parked& pk = recv_.parked[slot];
      if (!pk.valid) continue;
      const ReorderWindow::Arrival a = window_.Insert(pk.seq, pk.entry);
      if (a == ReorderWindow::Arrival::kOutOfWindow) continue;
      if (a == ReorderWindow::Arrival::kDuplicate) ++counters_.duplicates_dropped;
      pk.valid = false;
      --recv_.parked_count;
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
  if (slot >= recv_.entries.size()) {
    ++counters_.protocol_errors;
    return;
  }
  RecvEntry& r = recv_.entries[slot];
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
  while (recv_.head != recv_.tail && Recv(recv_.head).done) {
    const RecvEntry& r = Recv(recv_.head);
    cq_.Emit({r.wr.wr_id, r.status, r.opcode, vqp_num_, r.imm, r.bytes});
    ++recv_.head;
  }
}

}  // namespace braid::vqp
