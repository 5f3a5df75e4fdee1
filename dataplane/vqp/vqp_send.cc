// VirtualQp send path: validation, fragmentation, scheduling, notifies, failover, completion.
#include <arpa/inet.h>

#include <bit>
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

namespace {

constexpr uint64_t kMaxSendBytes = 1ull << 30;  // SEND is not fragmented

bool IsMessageOp(ibv_wr_opcode op) {
  return op == IBV_WR_SEND || op == IBV_WR_SEND_WITH_IMM || op == IBV_WR_ATOMIC_FETCH_AND_ADD ||
         op == IBV_WR_ATOMIC_CMP_AND_SWP;
}

ibv_wc_opcode WcOpcode(ibv_wr_opcode op) {
  switch (op) {
    case IBV_WR_RDMA_READ:
      return IBV_WC_RDMA_READ;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      return IBV_WC_SEND;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
      return IBV_WC_FETCH_ADD;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      return IBV_WC_COMP_SWAP;
    default:
      return IBV_WC_RDMA_WRITE;
  }
}

// The first real error wins; a flush only stands when nothing better is known.
ibv_wc_status Merge(ibv_wc_status current, ibv_wc_status incoming) {
  if (current == IBV_WC_SUCCESS) return incoming;
  if (current == IBV_WC_WR_FLUSH_ERR && incoming != IBV_WC_SUCCESS) return incoming;
  return current;
}

}  // namespace

Status VirtualQp::CheckKeys(uint32_t local, uint32_t remote, bool message_qp,
                            uint64_t length) const {
  if (length == 0) return Status::Ok();
  if (local_keys_.Complete(local) && (remote == UINT32_MAX || remote_keys_.Complete(remote))) {
    return Status::Ok();  // a key for every device: nothing more to check
  }
  const std::span<const std::pair<uint32_t, uint32_t>> pairs =
      message_qp ? std::span<const std::pair<uint32_t, uint32_t>>(&message_key_device_, 1)
                 : std::span<const std::pair<uint32_t, uint32_t>>(data_key_devices_);
  for (const auto& [device, remote_device] : pairs) {
    if (local_keys_.Get(local, device) == 0) {
      return Status::InvalidArgument("local key entry " + std::to_string(local) +
                                     " has no key for device " +
                                     cq_.device(static_cast<int>(device)).info().name +
                                     "; register the memory on every device the VQP uses");
    }
    if (remote != UINT32_MAX && remote_keys_.Get(remote, remote_device) == 0) {
      const std::string name = remote_device < remote_devices_.size()
                                   ? remote_devices_[remote_device].name
                                   : std::to_string(remote_device);
      return Status::InvalidArgument("remote key entry " + std::to_string(remote) +
                                     " has no key for the peer's device " + name +
                                     "; give a remote key for every device of the peer's card");
    }
  }
  return Status::Ok();
}

Status VirtualQp::ValidateSend(const VirtualSendWr& wr) const {
  if (!connected_) return Status::FailedPrecondition("VQP is not connected");
  const bool message = IsMessageOp(wr.opcode);
  switch (wr.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_RDMA_READ:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      break;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      if (wr.length != 8) return Status::InvalidArgument("atomics operate on 8 bytes");
      if (wr.remote_addr % 8 != 0) return Status::InvalidArgument("atomic target not 8-aligned");
      break;
    default:
      return Status::InvalidArgument("opcode " + std::to_string(wr.opcode) +
                                     " is not supported on a virtual QP");
  }
  if (wr.send_flags & ~static_cast<unsigned int>(IBV_SEND_SIGNALED)) {
    // Errors reach the caller: a flag the virtual layer would not honour (FENCE, INLINE, SOLICITED,
    // ...) is refused rather than silently dropped.
    return Status::InvalidArgument(
        "send flags other than IBV_SEND_SIGNALED are not supported on "
        "a virtual QP (got " +
        std::to_string(wr.send_flags) + ")");
  }
  if (multi() && !(wr.send_flags & IBV_SEND_SIGNALED)) {
    return Status::InvalidArgument(
        "every operation on a multi-QP virtual QP must be signaled (set IBV_SEND_SIGNALED)");
  }
  if ((wr.opcode == IBV_WR_SEND || wr.opcode == IBV_WR_SEND_WITH_IMM) &&
      wr.length > kMaxSendBytes) {
    return Status::InvalidArgument("SEND is not fragmented: at most 1 GiB");
  }
  if (wr.length > 0 &&
      (wr.local_addr + wr.length < wr.local_addr || wr.remote_addr + wr.length < wr.remote_addr)) {
    return Status::InvalidArgument("address range wraps around");
  }
  const bool needs_remote = wr.opcode != IBV_WR_SEND && wr.opcode != IBV_WR_SEND_WITH_IMM;
  BRAID_RETURN_IF_ERROR(
      CheckKeys(wr.local_keys, needs_remote ? wr.remote_keys : UINT32_MAX, message, wr.length));
  if (send_tail_ - send_head_ == config_.max_virtual_wrs) return Status::NoResource();
  if (message ? qps_[static_cast<size_t>(message_qp())].health == QpHealth::kDead
              : !AnyHealthyFor(WrKind::kFragment, -1)) {
    return Status::QpError(
        message ? "the message QP is dead"
                : "no healthy data QP: all are dead or out of service; retry once one is back");
  }
  return Status::Ok();
}

Status VirtualQp::PostSend(const VirtualSendWr& wr) {
  BRAID_RETURN_IF_ERROR(ValidateSend(wr));
  SendEntry& e = Send(send_tail_++);
  e.wr = wr;
  e.next_offset = 0;
  e.inflight = 0;
  e.devices_used = 0;
  e.notify_qp = -1;
  e.status = IBV_WC_SUCCESS;
  e.stage = Stage::kData;
  e.aborted = false;
  e.stalled = false;
  e.op_fault = false;
  e.seq_taken = false;
  if (multi() && config_.scheme == Scheme::kSpray && wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
    e.notify_seq = notify_seq_next_++;  // posting order = the peer's delivery order
  }
  Pump();
  ReportSends();
  return Status::Ok();
}

void VirtualQp::Pump() {
  PayOwed();
  RetryPending();
  while (send_dispatch_ != send_tail_) {
    if (!Advance(SlotOf(send_dispatch_))) break;
    ++send_dispatch_;
  }
  for (size_t n = stalled_count_; n > 0; --n) {
    const uint32_t slot = stalled_[stalled_head_];
    stalled_head_ = (stalled_head_ + 1) % stalled_.size();
    --stalled_count_;
    sends_[slot].stalled = false;
    if (!Advance(slot)) {
      sends_[slot].stalled = true;
      stalled_[(stalled_head_ + stalled_count_) % stalled_.size()] = slot;
      ++stalled_count_;
    }
  }
}

// One step of a virtual send WR's life. Returns false when it is blocked on QP capacity.
bool VirtualQp::Advance(uint32_t slot) {
  SendEntry& e = sends_[slot];
  const bool at_cursor = send_dispatch_ != send_tail_ && slot == SlotOf(send_dispatch_);
  const bool spray_notify =
      multi() && config_.scheme == Scheme::kSpray && e.wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  for (;;) {
    switch (e.stage) {
      case Stage::kData:
        if (!at_cursor) return true;  // dispatched in posting order only
        if (!e.aborted) {
          const PostResult r = PostDataFragments(slot);
          if (r == PostResult::kBlocked) return false;
          if (r == PostResult::kNoQp) {
            e.status = Merge(e.status, last_error_);
            e.aborted = true;
          }
        }
        e.stage = Stage::kTail;
        break;
      case Stage::kTail: {
        if (!at_cursor) return true;  // tails take sequence numbers in posting order
        const PostResult r = PostTail(slot);
        if (r == PostResult::kBlocked) return false;
        if (r == PostResult::kNoQp) {
          e.status = Merge(e.status, last_error_);
          e.aborted = true;
        }
        e.stage = Stage::kWaitData;
        break;
      }
      case Stage::kWaitData:
        if (e.inflight > 0) return true;
        e.stage = spray_notify ? Stage::kFence : Stage::kDone;
        break;
      case Stage::kFence: {
        const PostResult r = e.aborted ? PostResult::kPosted : PostFences(slot);
        if (r == PostResult::kBlocked) return false;
        e.stage = Stage::kWaitFence;
        break;
      }
      case Stage::kWaitFence:
        if (e.inflight > 0) return true;
        e.stage = Stage::kNotify;
        break;
      case Stage::kNotify: {
        const PostResult r = PostNotify(slot);
        if (r == PostResult::kBlocked) return false;
        if (r == PostResult::kNoQp) {
          e.status = Merge(e.status, last_error_);
          e.aborted = true;
          if (!destroying_) Owe(e.notify_seq, OwedKind::kVoidNotify);
        }
        e.stage = Stage::kWaitNotify;
        break;
      }
      case Stage::kWaitNotify:
        if (e.inflight > 0) return true;
        e.stage = Stage::kDone;
        break;
      case Stage::kDone:
        return true;
    }
  }
}

VirtualQp::PostResult VirtualQp::PostDataFragments(uint32_t slot) {
  SendEntry& e = sends_[slot];
  const VirtualSendWr& wr = e.wr;
  if (IsMessageOp(wr.opcode)) {
    if (e.next_offset != 0) return PostResult::kPosted;  // already posted
    Fragment piece;
    piece.send_slot = slot;
    piece.kind = WrKind::kMessage;
    piece.opcode = wr.opcode;
    piece.length = static_cast<uint32_t>(wr.length);
    const int qp = PickQp(WrKind::kMessage, -1);
    if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
    const PostResult r = PostPiece(piece, qp);
    if (r == PostResult::kPosted) e.next_offset = UINT64_MAX;
    return r == PostResult::kPosted || r == PostResult::kBlocked ? r : PostResult::kNoQp;
  }
  const bool dqplb_imm =
      multi() && config_.scheme == Scheme::kDqplb && wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  const bool single_imm = !multi() && wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  while (e.next_offset < wr.length) {
    if (healthy_data_qps_ == 0) return PostResult::kNoQp;
    const uint64_t remaining = wr.length - e.next_offset;
    Fragment piece;
    piece.send_slot = slot;
    piece.kind = WrKind::kFragment;
    piece.offset = e.next_offset;
    piece.length = static_cast<uint32_t>(std::min(remaining, config_.fragment_size));
    piece.opcode = wr.opcode == IBV_WR_RDMA_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    if (dqplb_imm) {
      if (SeqWindowFull())
        return PostResult::kBlocked;  // sequence window: back-pressure, not corruption
      piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
      piece.seq = seq_next_;
    } else if (single_imm && wr.length <= config_.fragment_size) {
      piece.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;  // one fragment: the write carries the imm
    }
    int qp;
    PostResult r;
    do {
      qp = PickQp(WrKind::kFragment, -1, piece.length);
      if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
      r = PostPiece(piece, qp);
    } while (r == PostResult::kNoQp);  // that QP just died: pick another
    if (r != PostResult::kPosted) return r;
    if (dqplb_imm) {
      ++seq_next_;
      e.seq_taken = true;
    }
    e.devices_used |= 1u << qps_[static_cast<size_t>(qp)].device;
    e.next_offset += piece.length;
  }
  return PostResult::kPosted;
}

VirtualQp::PostResult VirtualQp::PostTail(uint32_t slot) {
  SendEntry& e = sends_[slot];
  const VirtualSendWr& wr = e.wr;
  if (wr.opcode != IBV_WR_RDMA_WRITE_WITH_IMM) return PostResult::kPosted;
  Fragment piece;
  piece.send_slot = slot;
  if (multi() && config_.scheme == Scheme::kDqplb) {
    // Every DQPLB message ends with a tail, aborted or not, so the peer's stream stays aligned.
    if (healthy_data_qps_ == 0) {
      // Nothing can carry it now. A message the peer has seen part of must still end there.
      if (e.seq_taken && !destroying_) Owe(seq_next_++, OwedKind::kVoidTail);
      return PostResult::kNoQp;
    }
    if (SeqWindowFull()) return PostResult::kBlocked;
    Payload p{wr.length, wr.imm_data, e.aborted ? kAbortedFlag : 0};
    std::memcpy(control(NotifyPayloadOffset(slot)), &p, sizeof(p));
    piece.kind = WrKind::kFragment;
    piece.tail = true;
    piece.opcode = IBV_WR_SEND_WITH_IMM;
    piece.seq = seq_next_;
  } else if (!multi() && !e.aborted && (wr.length == 0 || wr.length > config_.fragment_size)) {
    // Single QP: RC order on the one QP makes a notify right behind the data safe.
    Payload p{wr.length, 0, 0};
    std::memcpy(control(NotifyPayloadOffset(slot)), &p, sizeof(p));
    piece.kind = WrKind::kNotify;
    piece.opcode = wr.length == 0 ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_SEND_WITH_IMM;
  } else {
    return PostResult::kPosted;
  }
  PostResult r;
  do {
    const int qp = PickQp(WrKind::kFragment, -1);
    if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
    r = PostPiece(piece, qp);
  } while (r == PostResult::kNoQp);
  if (r == PostResult::kPosted && piece.tail) ++seq_next_;
  return r;
}

// A SPRAY notify follows its data: before it, a 1-byte READ on each other device that carried the
// message's data has completed: at the peer a READ cannot pass that device's earlier writes.
VirtualQp::PostResult VirtualQp::PostFences(uint32_t slot) {
  SendEntry& e = sends_[slot];
  if (e.notify_qp < 0 || qps_[static_cast<size_t>(e.notify_qp)].health != QpHealth::kHealthy) {
    e.notify_qp = -1;
    for (uint32_t i = 0; i < config_.num_qps; ++i) {  // lowest healthy index: RC order for notifies
      if (qps_[i].health == QpHealth::kHealthy) {
        e.notify_qp = static_cast<int>(i);
        break;
      }
    }
    if (e.notify_qp < 0) return PostResult::kNoQp;
    e.devices_used &= ~(1u << qps_[static_cast<size_t>(e.notify_qp)].device);
  }
  while (e.devices_used != 0) {
    const int device = std::countr_zero(e.devices_used);
    const int qp = PickQp(WrKind::kFence, device);
    if (qp == -1) return PostResult::kBlocked;
    if (qp >= 0) {
      Fragment piece;
      piece.send_slot = slot;
      piece.kind = WrKind::kFence;
      piece.opcode = IBV_WR_RDMA_READ;
      piece.length = 1;
      piece.fence_device = device;
      const PostResult r = PostPiece(piece, qp);
      if (r == PostResult::kBlocked) return r;
      if (r == PostResult::kNoQp) continue;  // that QP died: try another on the device
    }
    // Posted, or no healthy QP is left on that device (its data was acknowledged before it died).
    e.devices_used &= ~(1u << device);
  }
  return PostResult::kPosted;
}

VirtualQp::PostResult VirtualQp::PostNotify(uint32_t slot) {
  SendEntry& e = sends_[slot];
  Payload p{e.wr.length, e.notify_seq, e.aborted ? kAbortedFlag : 0};
  std::memcpy(control(NotifyPayloadOffset(slot)), &p, sizeof(p));
  Fragment piece;
  piece.send_slot = slot;
  piece.kind = WrKind::kNotify;
  piece.opcode = IBV_WR_SEND_WITH_IMM;
  piece.seq = e.notify_seq;
  PostResult r;
  do {
    int qp = e.notify_qp;
    if (qp < 0 || qps_[static_cast<size_t>(qp)].health != QpHealth::kHealthy) {
      qp = PickQp(WrKind::kNotify, -1);
      if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
    } else if (qps_[static_cast<size_t>(qp)].outstanding >= config_.qp_capacity) {
      return PostResult::kBlocked;
    }
    r = PostPiece(piece, qp);
    if (r == PostResult::kNoQp) e.notify_qp = -1;
  } while (r == PostResult::kNoQp);
  return r;
}

// Takes a fragment slot for `piece` and posts it on `qp_index`. kNoQp: the post failed and the QP
// is now Dead (the caller picks another); kBlocked: no room.
VirtualQp::PostResult VirtualQp::PostPiece(Fragment piece, int qp_index) {
  if (free_frags_.empty()) return PostResult::kBlocked;
  const uint32_t fslot = free_frags_.back();
  free_frags_.pop_back();
  piece.qp = static_cast<uint16_t>(qp_index);
  frags_[fslot] = piece;
  const PostResult r = Submit(fslot);
  if (r != PostResult::kPosted) {
    free_frags_.push_back(fslot);
  } else if (qp_index < static_cast<int>(config_.num_qps)) {
    rr_ = static_cast<uint32_t>(qp_index + 1) == config_.num_qps  // ties rotate across QPs
              ? 0
              : static_cast<uint32_t>(qp_index + 1);
  }
  return r;
}

// Builds the physical WR of fragment `fslot` for its QP and posts it.
VirtualQp::PostResult VirtualQp::Submit(uint32_t fslot) {
  Fragment& f = frags_[fslot];
  PhysQp& q = qps_[f.qp];
  SendEntry* entry = f.owed ? nullptr : &sends_[f.send_slot];
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
    pwr.imm_data = config_.scheme == Scheme::kDqplb
                       ? htonl((f.seq & kSeqMask) | kVoidBit | (f.tail ? kTailBit : 0))
                       : htonl(f.seq);
  } else
    switch (f.kind) {
      case WrKind::kFragment:
        if (f.tail) {
          sge = {control_addr(NotifyPayloadOffset(f.send_slot)), sizeof(Payload),
                 control_mrs_[device]->lkey()};
          pwr.imm_data = htonl((f.seq & kSeqMask) | kTailBit);
          break;
        }
        if (f.length == 0) {  // a DQPLB void marker: keeps the peer's sequence without data
          pwr.imm_data = htonl((f.seq & kSeqMask) | kVoidBit);
          pwr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
          break;
        }
        sge = {wr.local_addr + f.offset, f.length, local_keys_.Get(wr.local_keys, device)};
        pwr.wr.rdma.remote_addr = wr.remote_addr + f.offset;
        pwr.wr.rdma.rkey = remote_keys_.Get(wr.remote_keys, q.remote_device);
        if (f.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
          pwr.imm_data = multi() ? htonl(f.seq & kSeqMask) : wr.imm_data;
        }
        break;
      case WrKind::kNotify:
        pwr.imm_data = wr.imm_data;
        if (f.opcode == IBV_WR_SEND_WITH_IMM) {
          sge = {control_addr(NotifyPayloadOffset(f.send_slot)), sizeof(Payload),
                 control_mrs_[device]->lkey()};
        }
        break;
      case WrKind::kFence:
        sge = {control_addr(fence_offset_ + 8), 1, control_mrs_[device]->lkey()};
        pwr.wr.rdma.remote_addr = remote_control_addr_;
        pwr.wr.rdma.rkey = remote_control_rkeys_[q.remote_device];
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
  DeviceLoad* load = f.qp < config_.num_qps ? &device_load_[device] : nullptr;
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

void VirtualQp::OnSendCompletion(int qp_index, const ibv_wc& wc, uint32_t fslot) {
  if (fslot >= frags_.size()) {
    ++counters_.protocol_errors;
    return;
  }
  Fragment& f = frags_[fslot];
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  --q.outstanding;
  q.outstanding_bytes -= f.length;
  DeviceLoad* load = qp_index < static_cast<int>(config_.num_qps)
                         ? &device_load_[static_cast<size_t>(q.device)]
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
  SendEntry& e = sends_[f.send_slot];
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
  const bool seq_piece = f.kind == WrKind::kFragment && multi() &&
                         config_.scheme == Scheme::kDqplb &&
                         (f.tail || f.opcode == IBV_WR_RDMA_WRITE_WITH_IMM);
  const bool stream_piece = f.kind == WrKind::kNotify && multi();
  const bool data_piece = f.kind == WrKind::kFragment && !f.tail;
  // The budget limits re-posts of user data; stream pieces are re-posted while any data QP
  // lives (a lost one would misalign the peer for good). Every re-post follows a QP's death, so
  // they are bounded by the QP count either way.
  const bool within_budget =
      stream_piece || seq_piece || f.replays < std::max<uint32_t>(config_.retry_budget, 1);
  const bool replay = !destroying_ && f.kind != WrKind::kMessage &&
                      (stream_piece || seq_piece || f.kind == WrKind::kFence ||
                       (data_piece && config_.failover && !e.op_fault)) &&
                      within_budget &&
                      AnyHealthyFor(f.kind == WrKind::kFence ? WrKind::kFence : WrKind::kFragment,
                                    f.kind == WrKind::kFence ? f.fence_device : -1);
  if (f.kind == WrKind::kFence && !replay) {
    FinishPiece(fslot, IBV_WC_SUCCESS);  // no QP left on that device: its data was acknowledged
    return;
  }
  if (!replay) {
    // A stream piece no QP can carry now stays owed to the peer; its virtual WR fails.
    if (!destroying_ && CarriesSeq(f)) {
      OwePiece(fslot, cause);
    } else {
      FinishPiece(fslot, cause);
    }
    return;
  }
  if (data_piece && seq_piece && (!config_.failover || e.op_fault)) {
    // The data may not be re-sent: the message fails, its sequence number travels as a void.
    e.status = Merge(e.status, cause);
    e.aborted = true;
    f.length = 0;
  }
  ++f.replays;
  ++counters_.failovers;
  retry_[(retry_head_ + retry_count_) % retry_.size()] = fslot;
  ++retry_count_;
}

void VirtualQp::RetryPending() {
  while (retry_count_ > 0) {
    const uint32_t fslot = retry_[retry_head_];
    Fragment& f = frags_[fslot];
    const WrKind kind = f.kind == WrKind::kFence ? WrKind::kFence : WrKind::kFragment;
    const int qp = PickQp(kind, f.kind == WrKind::kFence ? f.fence_device : -1);
    if (qp == -1) return;  // wait for room
    if (qp >= 0) {
      f.qp = static_cast<uint16_t>(qp);
      const PostResult r = Submit(fslot);
      if (r == PostResult::kBlocked) return;
      if (r == PostResult::kNoQp) continue;  // died on post: pick again
      sends_[f.send_slot].devices_used |= 1u << qps_[static_cast<size_t>(qp)].device;
      --sends_[f.send_slot].inflight;  // Submit counted it again; it was never released
    }
    retry_head_ = (retry_head_ + 1) % retry_.size();
    --retry_count_;
    if (qp == -2) {
      if (!destroying_ && CarriesSeq(f)) {
        OwePiece(fslot, last_error_);
      } else {
        FinishPiece(fslot, f.kind == WrKind::kFence ? IBV_WC_SUCCESS : last_error_);
      }
    }
  }
}

void VirtualQp::SeqDone(uint32_t seq) {
  const uint32_t mask = seq_window_ - 1;  // a power of two
  seq_done_[seq & mask] = 1;
  while (seq_oldest_ != seq_next_ && seq_done_[seq_oldest_ & mask]) {
    seq_done_[seq_oldest_ & mask] = 0;
    ++seq_oldest_;
  }
}

void VirtualQp::FinishPiece(uint32_t fslot, ibv_wc_status status, bool release_seq) {
  const Fragment& f = frags_[fslot];
  if (release_seq && CarriesDqplbSeq(f)) SeqDone(f.seq);
  free_frags_.push_back(fslot);
  if (f.owed) return;
  const uint32_t slot = f.send_slot;
  SendEntry& e = sends_[slot];
  if (status != IBV_WC_SUCCESS) {
    e.status = Merge(e.status, status);
    e.aborted = true;
  }
  --e.inflight;
  // Fast paths: pieces still out, or the last piece of a plain WR that needs no notify.
  if (e.inflight > 0 && e.stage != Stage::kData && e.stage != Stage::kTail) return;
  if (e.inflight == 0 && e.stage == Stage::kWaitData &&
      !(multi() && config_.scheme == Scheme::kSpray && e.wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM)) {
    e.stage = Stage::kDone;
    return;
  }
  if (!Advance(slot) && !e.stalled) {
    e.stalled = true;
    stalled_[(stalled_head_ + stalled_count_) % stalled_.size()] = slot;
    ++stalled_count_;
  }
}

void VirtualQp::ReportSends() {
  while (send_head_ != send_tail_) {
    SendEntry& e = Send(send_head_);
    if (e.stage != Stage::kDone) break;
    if (e.status != IBV_WC_SUCCESS || (e.wr.send_flags & IBV_SEND_SIGNALED)) {
      cq_.Emit({e.wr.wr_id, e.status, WcOpcode(e.wr.opcode), vqp_num_, 0, e.wr.length});
    }
    ++send_head_;
    if (send_dispatch_ < send_head_) send_dispatch_ = send_head_;
  }
}

}  // namespace braid::vqp
