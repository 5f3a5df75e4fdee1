// SoftQp requester: posting, transmission, acknowledgement, retransmission, in-order completion.
#include <cstring>

#include "dataplane/soft/soft_cq.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

using common::Status;
using verbs::QpState;

namespace {

constexpr uint64_t kMaxMessageBytes = 1ull << 31;  // as a typical HCA's max_msg_sz

bool IsAtomic(ibv_wr_opcode op) {
  return op == IBV_WR_ATOMIC_FETCH_AND_ADD || op == IBV_WR_ATOMIC_CMP_AND_SWP;
}
bool NeedsResponse(ibv_wr_opcode op) { return op == IBV_WR_RDMA_READ || IsAtomic(op); }

ibv_wc_status NakStatus(NakCode nak) {
  switch (nak) {
    case NakCode::kRemoteAccess:
      return IBV_WC_REM_ACCESS_ERR;
    case NakCode::kInvalidRequest:
      return IBV_WC_REM_INV_REQ_ERR;
    case NakCode::kRemoteOperational:
      return IBV_WC_REM_OP_ERR;
    case NakCode::kRnr:
      return IBV_WC_RNR_RETRY_EXC_ERR;
  }
  return IBV_WC_GENERAL_ERR;
}

}  // namespace

Status SoftQp::ValidateSend(const ibv_send_wr& wr) const {
  if (state_ != QpState::kRts && state_ != QpState::kError) {
    return Status::InvalidArgument("post_send needs a QP in RTS (or ERR, which flushes)");
  }
  if (sq_tail_ - sq_head_ == sq_.size()) return Status::NoResource();
  if (wr.num_sge < 0 || static_cast<uint32_t>(wr.num_sge) > caps_.max_send_sge) {
    return Status::InvalidArgument("num_sge exceeds max_send_sge");
  }
  uint64_t length = 0;
  for (int i = 0; i < wr.num_sge; ++i) length += wr.sg_list[i].length;
  if (length > kMaxMessageBytes) return Status::InvalidArgument("message exceeds 2 GiB");
  switch (wr.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      break;
    case IBV_WR_RDMA_READ:
      if (wr.send_flags & IBV_SEND_INLINE) return Status::InvalidArgument("inline READ");
      break;
    case IBV_WR_BIND_MW:
      if (wr.bind_mw.mw == nullptr || wr.bind_mw.bind_info.mr == nullptr) {
        return Status::InvalidArgument("a window bind names its window and its memory region");
      }
      if (wr.bind_mw.mw->type != IBV_MW_TYPE_2) {
        return Status::InvalidArgument("only type-2 windows are bound with a work request");
      }
      break;
    case IBV_WR_LOCAL_INV:
      break;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      if (wr.num_sge != 1 || length != 8) {
        return Status::InvalidArgument("atomics take one 8-byte SGE");
      }
      if (wr.send_flags & IBV_SEND_INLINE) return Status::InvalidArgument("inline atomic");
      break;
    default:
      return Status::NotSupported("opcode not supported by the soft provider");
  }
  if ((wr.send_flags & IBV_SEND_INLINE) && length > caps_.max_inline_data) {
    return Status::InvalidArgument("inline data exceeds max_inline_data");
  }
  return Status::Ok();
}

void SoftQp::EnqueueSend(const ibv_send_wr& wr) {
  const uint64_t index = sq_tail_++;
  const size_t slot = index % sq_.size();
  SendWqe& w = Sq(index);
  w.sge = &sq_sges_[slot * std::max(caps_.max_send_sge, 1u)];
  w.inline_data = caps_.max_inline_data == 0 ? nullptr : &sq_inline_[slot * caps_.max_inline_data];
  w.wr_id = wr.wr_id;
  w.opcode = wr.opcode;
  w.signaled = (wr.send_flags & IBV_SEND_SIGNALED) != 0;
  w.is_inline = (wr.send_flags & IBV_SEND_INLINE) != 0;
  w.transmitted = false;
  w.done = false;
  w.status = IBV_WC_SUCCESS;
  w.psn = next_psn_;
  w.length = 0;
  w.local = wr.opcode == IBV_WR_BIND_MW || wr.opcode == IBV_WR_LOCAL_INV;
  if (w.local) {  // no PSN, no payload
    w.num_sge = 0;
    if (wr.opcode == IBV_WR_BIND_MW) {
      w.window_key = wr.bind_mw.mw->rkey;
      w.rkey = wr.bind_mw.rkey;
      w.region_lkey = wr.bind_mw.bind_info.mr->lkey;
      w.remote_addr = wr.bind_mw.bind_info.addr;
      w.bind_length = wr.bind_mw.bind_info.length;
      w.bind_access = wr.bind_mw.bind_info.mw_access_flags;
    } else {
      w.rkey = wr.invalidate_rkey;
    }
    return;
  }
  next_psn_ = PsnNext(next_psn_);
  w.num_sge = static_cast<uint32_t>(wr.num_sge);
  for (uint32_t i = 0; i < w.num_sge; ++i) {
    w.sge[i] = wr.sg_list[i];
    if (w.is_inline) {  // inline data is copied now; the buffer may be reused at once
      std::memcpy(w.inline_data + w.length, reinterpret_cast<const void*>(wr.sg_list[i].addr),
                  wr.sg_list[i].length);
    }
    w.length += wr.sg_list[i].length;
  }
  if (IsAtomic(wr.opcode)) {
    w.remote_addr = wr.wr.atomic.remote_addr;
    w.rkey = wr.wr.atomic.rkey;
    w.compare_add = wr.wr.atomic.compare_add;
    w.swap = wr.wr.atomic.swap;
  } else {
    w.remote_addr = wr.wr.rdma.remote_addr;
    w.rkey = wr.wr.rdma.rkey;
  }
  w.imm_data = wr.imm_data;
}

Status SoftQp::PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) {
  Status result;
  for (; wr != nullptr; wr = wr->next) {
    result = ValidateSend(*wr);
    if (!result.ok()) {
      if (bad_wr != nullptr) *bad_wr = wr;
      break;
    }
    EnqueueSend(*wr);
  }
  if (state_ == QpState::kError) {
    FlushAll();
  } else {
    Pump();
  }
  return result;
}

bool SoftQp::CheckLocalKeys(const SendWqe& w) const {
  if (w.is_inline) return true;
  const unsigned int required = NeedsResponse(w.opcode) ? IBV_ACCESS_LOCAL_WRITE : 0;
  for (uint32_t i = 0; i < w.num_sge; ++i) {
    const ibv_sge& s = w.sge[i];
    if (s.length == 0) continue;
    if (device_->mrs().CheckLocal(s.lkey, pd_id_, s.addr, s.length, required) == nullptr) {
      return false;
    }
  }
  return true;
}

bool SoftQp::ExecuteLocal(const SendWqe& w) {
  if (w.opcode == IBV_WR_LOCAL_INV) return device_->mrs().InvalidateWindow(w.rkey, qp_num_);
  return device_->mrs().BindWindow(
      {w.window_key, w.rkey, w.region_lkey, w.remote_addr, w.bind_length, w.bind_access}, pd_id_,
      qp_num_);
}

void SoftQp::TransmitWqe(SendWqe& w) {
  PacketHeader h = MakeHeader(PacketType::kRequest, w.psn);
  h.opcode = w.opcode;
  h.length = w.length;
  h.remote_addr = w.remote_addr;
  h.rkey = w.rkey;
  h.imm_data = w.imm_data;
  h.compare_add = w.compare_add;
  h.swap = w.swap;
  // The payload is gathered from where it is: registered memory, or the WQE's inline copy.
  std::array<iovec, kMaxSge> iov;
  size_t n = 0;
  if (!NeedsResponse(w.opcode) && w.length > 0) {
    h.payload_len = w.length;
    if (w.is_inline) {
      iov[n++] = {w.inline_data, w.length};
    } else {
      for (uint32_t i = 0; i < w.num_sge; ++i) {
        if (w.sge[i].length > 0) {
          iov[n++] = {reinterpret_cast<void*>(w.sge[i].addr), w.sge[i].length};
        }
      }
    }
  }
  w.transmitted = true;
  const std::span<const iovec> payload(iov.data(), n);
  if (sq_head_ != sq_tx_) {
    channel_->TransmitBehind(h, payload);  // earlier requests are out: their ACKs bring a pass
  } else {
    channel_->Transmit(h, payload);
  }
}

void SoftQp::Pump() {
  if (state_ != QpState::kRts || rnr_resume_at_ != 0) return;
  const uint64_t window = channel_->window_bytes();
  while (sq_tx_ != sq_tail_) {
    SendWqe& w = Sq(sq_tx_);
    if (w.done) {
      if (!w.transmitted) break;  // a local error, completed once it reaches the head
      tx_bytes_ += w.length;      // acknowledged already: no need to send it again
      ++sq_tx_;
      continue;
    }
    if (w.local) {
      if (!ExecuteLocal(w)) {
        w.done = true;
        w.status = IBV_WC_MW_BIND_ERR;
        break;
      }
      w.transmitted = w.done = true;
      ++sq_tx_;
      continue;
    }
    if (sq_tx_ != sq_head_ && tx_bytes_ + w.length > window) break;  // until ACKs make room
    if (!CheckLocalKeys(w)) {  // every transmission reads the memory: its keys must still hold
      w.done = true;
      w.status = IBV_WC_LOC_PROT_ERR;
      break;
    }
    TransmitWqe(w);
    tx_bytes_ += w.length;
    ++sq_tx_;
  }
  if (sq_head_ != sq_tx_ && retransmit_deadline_ == UINT64_MAX && ack_timeout_ns_ != 0) {
    retransmit_deadline_ = device_->fabric()->NowNs() + ack_timeout_ns_;
    device_->ArmTimer(this);
  }
  CompleteHead();
}

uint64_t SoftQp::AckBefore(uint32_t psn, bool inclusive) {
  for (uint64_t i = sq_head_; i != sq_tx_; ++i) {
    SendWqe& w = Sq(i);
    if (w.local) continue;  // done when executed; it has no PSN
    const int32_t d = PsnDiff(w.psn, psn);
    if (d > 0 || (d == 0 && !inclusive)) return i;
    if (!NeedsResponse(w.opcode)) w.done = true;
  }
  return sq_tx_;
}

void SoftQp::CompleteHead() {
  while (sq_head_ != sq_tail_) {
    SendWqe& w = Sq(sq_head_);
    if (!w.done) break;
    const ibv_wc_status status = w.status;
    CompleteSend(w, status);
    w.done = false;
    if (sq_head_ < sq_tx_) tx_bytes_ -= w.length;
    ++sq_head_;
    if (sq_tx_ < sq_head_) sq_tx_ = sq_head_;
    if (status != IBV_WC_SUCCESS) {
      EnterError();
      return;
    }
  }
}

// Progress was made: retries start over, requests held back by the link's window go out, and the
// ACK timer restarts for what is still out.
void SoftQp::OnAckProgress() {
  retries_left_ = retry_cnt_;
  rnr_retries_left_ = rnr_retry_;
  retransmit_deadline_ = UINT64_MAX;
  CompleteHead();
  if (state_ == QpState::kRts && sq_tx_ != sq_tail_) Pump();
  if (state_ == QpState::kRts && sq_head_ != sq_tx_ && ack_timeout_ns_ != 0 &&
      retransmit_deadline_ == UINT64_MAX) {
    retransmit_deadline_ = device_->fabric()->NowNs() + ack_timeout_ns_;
    device_->ArmTimer(this);
  }
}

void SoftQp::OnAck(uint32_t psn) {
  if (sq_head_ == sq_tx_) return;
  if (PsnDiff(psn, Sq(sq_head_).psn) < 0) return;  // stale
  AckBefore(psn, /*inclusive=*/true);
  OnAckProgress();
}

// A READ response's data goes straight into the WR's local SGEs.
void SoftQp::BeginResponse(const PacketHeader& p, Placement* placement) {
  if (p.type != PacketType::kReadResponse) return;
  for (uint64_t i = sq_head_; i != sq_tx_; ++i) {
    const SendWqe& w = Sq(i);
    if (w.local || w.psn != p.psn) continue;
    if (w.opcode != IBV_WR_RDMA_READ || w.done) return;  // a duplicate: discard
    inbound_.verdict = Verdict::kExecute;
    uint64_t left = std::min<uint64_t>(p.payload_len, w.length);
    for (uint32_t s = 0; s < w.num_sge && left > 0; ++s) {
      const uint64_t n = std::min<uint64_t>(w.sge[s].length, left);
      // Translated when the data arrives, as an HCA does: a region deregistered since the post
      // fails the READ instead of taking its bytes.
      if (device_->mrs().CheckLocal(w.sge[s].lkey, pd_id_, w.sge[s].addr, n,
                                    IBV_ACCESS_LOCAL_WRITE) == nullptr) {
        placement->count = 0;
        inbound_.cut = true;
        return;
      }
      placement->iov[placement->count++] = {reinterpret_cast<void*>(w.sge[s].addr), n};
      left -= n;
    }
    return;
  }
}

void SoftQp::EndResponse(const PacketHeader& p) {
  switch (p.type) {
    case PacketType::kAck:
      OnAck(p.psn);
      break;
    case PacketType::kNak:
      OnNak(p);
      break;
    case PacketType::kReadResponse:
      if (inbound_.verdict == Verdict::kExecute) OnReadResponse(p, inbound_.cut);
      break;
    case PacketType::kAtomicResponse:
      OnAtomicResponse(p);
      break;
    case PacketType::kRequest:
      break;
  }
}

void SoftQp::OnReadResponse(const PacketHeader& p, bool cut) {
  const uint64_t i = AckBefore(p.psn, /*inclusive=*/false);
  if (i == sq_tx_) return;
  SendWqe& w = Sq(i);
  if (w.psn != p.psn || w.opcode != IBV_WR_RDMA_READ || w.done) return;
  w.done = true;  // the data was placed by the link before this call (all of it unless `cut`)
  if (cut) w.status = IBV_WC_LOC_PROT_ERR;
  OnAckProgress();
}

void SoftQp::OnAtomicResponse(const PacketHeader& p) {
  const uint64_t i = AckBefore(p.psn, /*inclusive=*/false);
  if (i == sq_tx_) return;
  SendWqe& w = Sq(i);
  if (w.psn != p.psn || !IsAtomic(w.opcode) || w.done) return;
  std::memcpy(reinterpret_cast<void*>(w.sge[0].addr), &p.atomic_orig, sizeof(uint64_t));
  w.done = true;
  OnAckProgress();
}

void SoftQp::OnNak(const PacketHeader& p) {
  const uint64_t i = AckBefore(p.psn, /*inclusive=*/false);
  if (i == sq_tx_) return;
  SendWqe& w = Sq(i);
  if (w.psn != p.psn || w.done) return;
  if (p.nak == NakCode::kRnr) {
    if (rnr_retry_ != 7) {
      if (rnr_retries_left_ == 0) {
        w.done = true;
        w.status = IBV_WC_RNR_RETRY_EXC_ERR;
        CompleteHead();
        return;
      }
      --rnr_retries_left_;
    }
    RewindTo(i);
    retransmit_deadline_ = UINT64_MAX;
    rnr_resume_at_ = device_->fabric()->NowNs() + verbs::RnrTimerNs(p.rnr_timer);
    device_->ArmTimer(this);
    CompleteHead();
    return;
  }
  w.done = true;
  w.status = NakStatus(p.nak);
  CompleteHead();
}

void SoftQp::OnRetransmitTimeout(uint64_t now) {
  retransmit_deadline_ = UINT64_MAX;
  uint64_t i = sq_head_;
  while (i != sq_tx_ && Sq(i).done) ++i;
  if (i == sq_tx_) return;
  if (channel_ != nullptr && now >= ack_timeout_ns_ &&
      channel_->DeliveringSince(now - ack_timeout_ns_)) {
    // A reliable link moved this connection's bytes within the last timeout: the peer is alive
    // and the request is queued, not lost. Wait another timeout; no retry is spent.
    retransmit_deadline_ = now + ack_timeout_ns_;
    device_->ArmTimer(this);
    return;
  }
  if (retries_left_ == 0) {
    Sq(i).done = true;
    Sq(i).status = IBV_WC_RETRY_EXC_ERR;
    CompleteHead();
    return;
  }
  --retries_left_;
  RewindTo(i);
  Pump();
}

void SoftQp::RewindTo(uint64_t index) {
  for (uint64_t i = index; i != sq_tx_; ++i) tx_bytes_ -= Sq(i).length;
  sq_tx_ = index;
}

}  // namespace braid::soft
