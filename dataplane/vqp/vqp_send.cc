// VirtualQp send path: validation, posting, the steps of a virtual WR, fragmentation, reports.
#include <bit>
#include <cstring>
#include <string>

#include "dataplane/common/quote.h"
#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

using common::Status;

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

}  // namespace

Status VirtualQp::CheckKeys(uint32_t local, uint32_t remote, bool message_qp,
                            uint64_t length) const {
  if (length == 0) return Status::Ok();
  if (local_keys_.Complete(local) && (remote == UINT32_MAX || remote_keys_.Complete(remote))) {
    return Status::Ok();  // a key for every device: nothing more to check
  }
  const std::span<const std::pair<uint32_t, uint32_t>> pairs =
      message_qp ? std::span<const std::pair<uint32_t, uint32_t>>(&peer_.message_key_device, 1)
                 : std::span<const std::pair<uint32_t, uint32_t>>(peer_.data_key_devices);
  for (const auto& [device, remote_device] : pairs) {
    if (local_keys_.Get(local, device) == 0) {
      return Status::InvalidArgument("local key entry " + std::to_string(local) +
                                     " has no key for device " +
                                     cq_.device(static_cast<int>(device)).info().name +
                                     "; register the memory on every device the VQP uses");
    }
    if (remote != UINT32_MAX && remote_keys_.Get(remote, remote_device) == 0) {
      const std::string name = remote_device < peer_.devices.size()
                                   ? peer_.devices[remote_device].name
                                   : std::to_string(remote_device);
      return Status::InvalidArgument("remote key entry " + std::to_string(remote) +
                                     " has no key for the peer's device " + common::Quote(name) +
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
  if (send_.tail - send_.head == config_.max_virtual_wrs) return Status::NoResource();
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
  SendEntry& e = Send(send_.tail++);
  e.wr = wr;
  e.next_offset = 0;
  e.inflight = 0;
  e.devices_used = 0;
  e.notify_qp = -1;
  e.status = IBV_WC_SUCCESS;
  e.stage = SendStage::kData;
  e.aborted = false;
  // `stalled` is left alone: it says whether the slot is queued in send_.stalled, and a slot can
  // be reported and reused while a reference to it is still queued there.
  e.op_fault = false;
  e.seq_taken = false;
  e.after_data = false;
  e.express = false;
  if (wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) protocol_->Accept(e);
  Pump();
  ReportSends();
  return Status::Ok();
}

void VirtualQp::Pump() {
  PayOwed();
  RetryPending();
  while (send_.dispatch != send_.tail) {
    if (!Advance(SlotOf(send_.dispatch))) break;
    ++send_.dispatch;
  }
  for (size_t n = send_.stalled.size(); n > 0; --n) {
    const uint32_t slot = send_.stalled.Pop();
    send_.entries[slot].stalled = false;
    if (!Advance(slot)) Stall(slot);
  }
}

void VirtualQp::Stall(uint32_t slot) {
  SendEntry& e = send_.entries[slot];
  if (e.stalled) return;  // queued already: one reference per slot, so the ring cannot overflow
  e.stalled = true;
  if (!send_.stalled.Push(slot)) ++counters_.protocol_errors;  // unreachable by the bound
}

// One step of a virtual send WR's life. Returns false when it is blocked on QP capacity.
bool VirtualQp::Advance(uint32_t slot) {
  SendEntry& e = send_.entries[slot];
  const bool at_cursor = send_.dispatch != send_.tail && slot == SlotOf(send_.dispatch);
  for (;;) {
    switch (e.stage) {
      case SendStage::kData:
        if (!at_cursor) return true;  // dispatched in posting order only
        if (!e.aborted) {
          const PostResult r = PostDataFragments(slot);
          if (r == PostResult::kBlocked) return false;
          if (r == PostResult::kNoQp) {
            e.status = MergeStatus(e.status, last_error_);
            e.aborted = true;
          }
        }
        e.stage = SendStage::kTail;
        break;
      case SendStage::kTail: {
        if (!at_cursor) return true;  // tails take sequence numbers in posting order
        const PostResult r = e.wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? protocol_->PostTail(slot)
                                                                       : PostResult::kPosted;
        if (r == PostResult::kBlocked) return false;
        if (r == PostResult::kNoQp) {
          e.status = MergeStatus(e.status, last_error_);
          e.aborted = true;
        }
        e.stage = SendStage::kWaitData;
        break;
      }
      case SendStage::kWaitData:
        if (e.inflight > 0) return true;
        e.stage = e.after_data ? SendStage::kFence : SendStage::kDone;
        break;
      case SendStage::kDone:
        return true;
      default:
        return protocol_->AdvanceAfterData(slot);
    }
  }
}

PostResult VirtualQp::PostDataFragments(uint32_t slot) {
  SendEntry& e = send_.entries[slot];
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
  const bool imm = wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  while (e.next_offset < wr.length) {
    if (healthy_data_qps_ == 0) return PostResult::kNoQp;
    const uint64_t remaining = wr.length - e.next_offset;
    Fragment piece;
    piece.send_slot = slot;
    piece.kind = WrKind::kFragment;
    piece.offset = e.next_offset;
    piece.length = static_cast<uint32_t>(std::min(remaining, config_.fragment_size));
    piece.opcode = wr.opcode == IBV_WR_RDMA_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    if (imm) {
      const PostResult shaped = protocol_->ShapeFragment(e, piece);
      if (shaped != PostResult::kPosted) return shaped;
    }
    int qp;
    PostResult r;
    do {
      qp = PickQp(WrKind::kFragment, -1, piece.length);
      if (qp < 0) return qp == -1 ? PostResult::kBlocked : PostResult::kNoQp;
      r = PostPiece(piece, qp);
    } while (r == PostResult::kNoQp);  // that QP just died: pick another
    if (r != PostResult::kPosted) return r;
    if (imm) protocol_->FragmentPosted(e, qp);
    e.devices_used |= 1u << qps_[static_cast<size_t>(qp)].device;
    e.next_offset += piece.length;
  }
  return PostResult::kPosted;
}

void VirtualQp::ReportSends() {
  while (send_.head != send_.tail) {
    SendEntry& e = Send(send_.head);
    if (e.stage != SendStage::kDone) break;
    if (e.status != IBV_WC_SUCCESS || (e.wr.send_flags & IBV_SEND_SIGNALED)) {
      cq_.Emit({e.wr.wr_id, e.status, WcOpcode(e.wr.opcode), vqp_num_, 0, e.wr.length});
    }
    ++send_.head;
    if (send_.dispatch < send_.head) send_.dispatch = send_.head;
  }
}

}  // namespace braid::vqp
