// SoftQp: construction, state transitions, receive posting and the error path.
// The requester and responder halves are in rc_requester.cc and rc_responder.cc.
#include "dataplane/soft/soft_qp.h"

#include <algorithm>

#include "dataplane/soft/soft_cq.h"
#include "dataplane/soft/soft_device.h"

namespace braid::soft {

using common::Status;
using verbs::QpState;

SoftQp::SoftQp(SoftDevice* device, uint32_t pd_id, uint32_t qp_num,
               const verbs::QpCreateParams& params)
    : device_(device),
      send_cq_(static_cast<SoftCq*>(params.send_cq)),
      recv_cq_(static_cast<SoftCq*>(params.recv_cq)),
      pd_id_(pd_id),
      qp_num_(qp_num),
      caps_(params.caps),
      sq_sig_all_(params.sq_sig_all) {}

bool SoftQp::AllocateQueues() {
  const size_t sq = caps_.max_send_wr;
  const size_t rq = caps_.max_recv_wr;
  return sq_.Allocate(sq) && sq_sges_.Allocate(sq * std::max(caps_.max_send_sge, 1u)) &&
         sq_inline_.Allocate(sq * caps_.max_inline_data) && rq_.Allocate(rq) &&
         rq_sges_.Allocate(rq * std::max(caps_.max_recv_sge, 1u));
}

SoftQp::~SoftQp() {
  device_->mrs().UnbindWindowsOf(qp_num_);
  device_->UnregisterQp(qp_num_);
}

Status SoftQp::ToInit(const verbs::QpInitParams& params) {
  if (state_ != QpState::kReset && state_ != QpState::kInit) {
    return Status::InvalidArgument("INIT is reachable only from RESET");
  }
  access_flags_ = params.access_flags;
  state_ = QpState::kInit;
  return Status::Ok();
}

Status SoftQp::ToRtr(const verbs::QpRtrParams& params) {
  if (state_ != QpState::kInit) return Status::InvalidArgument("RTR is reachable only from INIT");
  if (params.remote.psn > kPsnMask || params.remote.qp_num > kPsnMask) {
    return Status::InvalidArgument("remote PSN and QP number are 24-bit values");
  }
  if (params.min_rnr_timer > 31) return Status::InvalidArgument("min_rnr_timer exceeds 31");
  if (params.remote.gid.IsZero()) return Status::InvalidArgument("remote GID is required");
  auto channel = device_->fabric()->OpenChannel(device_, qp_num_, params);
  if (!channel.ok()) return channel.status();
  channel_ = std::move(channel).value();
  remote_ = params.remote;
  expected_psn_ = params.remote.psn;
  min_rnr_timer_ = params.min_rnr_timer;
  state_ = QpState::kRtr;
  return Status::Ok();
}

Status SoftQp::ToRts(const verbs::QpRtsParams& params) {
  if (state_ != QpState::kRtr) return Status::InvalidArgument("RTS is reachable only from RTR");
  if (params.sq_psn > kPsnMask) return Status::InvalidArgument("send PSN exceeds 24 bits");
  if (params.timeout > 31 || params.retry_cnt > 7 || params.rnr_retry > 7) {
    return Status::InvalidArgument("timeout ≤ 31, retry_cnt ≤ 7 and rnr_retry ≤ 7");
  }
  next_psn_ = params.sq_psn;
  ack_timeout_ns_ = verbs::AckTimeoutNs(params.timeout);
  retry_cnt_ = retries_left_ = params.retry_cnt;
  rnr_retry_ = rnr_retries_left_ = params.rnr_retry;
  state_ = QpState::kRts;
  channel_->OnLocalSendPsn(params.sq_psn);
  Pump();  // WRs may have been posted... never before RTS, but keep the queue moving
  return Status::Ok();
}

Status SoftQp::ToError() {
  if (state_ != QpState::kError) EnterError();
  return Status::Ok();
}

Status SoftQp::ToReset() {
  device_->mrs().UnbindWindowsOf(qp_num_);  // a window never outlives its connection
  channel_.reset();
  sq_head_ = sq_tx_ = sq_tail_ = 0;
  tx_bytes_ = 0;
  rq_head_ = rq_tail_ = 0;
  for (SendWqe& wqe : sq_) {
    wqe.done = wqe.transmitted = false;
    wqe.status = IBV_WC_SUCCESS;
  }
  atomic_cache_ = {};
  retransmit_deadline_ = UINT64_MAX;
  rnr_resume_at_ = 0;
  remote_ = {};
  state_ = QpState::kReset;
  return Status::Ok();
}

Status SoftQp::PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  for (; wr != nullptr; wr = wr->next) {
    Status bad;
    if (state_ == QpState::kReset) {
      bad = Status::InvalidArgument("post_recv on a QP in RESET");
    } else if (wr->num_sge < 0 || static_cast<uint32_t>(wr->num_sge) > caps_.max_recv_sge) {
      bad = Status::InvalidArgument("num_sge exceeds max_recv_sge");
    } else if (rq_tail_ - rq_head_ == rq_.size()) {
      bad = Status::NoResource();
    }
    if (!bad.ok()) {
      if (bad_wr != nullptr) *bad_wr = wr;
      return bad;
    }
    const uint64_t index = rq_tail_++;
    RecvWqe& slot = Rq(index);
    slot.sge = &rq_sges_[(index % rq_.size()) * std::max(caps_.max_recv_sge, 1u)];
    slot.wr_id = wr->wr_id;
    slot.num_sge = static_cast<uint32_t>(wr->num_sge);
    for (uint32_t i = 0; i < slot.num_sge; ++i) slot.sge[i] = wr->sg_list[i];
  }
  if (state_ == QpState::kError) FlushAll();
  return Status::Ok();
}

void SoftQp::BeginInbound(const PacketHeader& h, Placement* placement) {
  inbound_ = Inbound{};
  if (state_ != QpState::kRtr && state_ != QpState::kRts) return;  // as an HCA: ignored
  if (h.src_qpn != remote_.qp_num) return;                         // not our peer
  if (h.type == PacketType::kRequest) {
    BeginRequest(h, placement);
  } else if (state_ == QpState::kRts) {
    BeginResponse(h, placement);
  }
}

void SoftQp::EndInbound(const PacketHeader& h) {
  if (state_ != QpState::kRtr && state_ != QpState::kRts) return;
  if (h.src_qpn != remote_.qp_num) return;
  if (h.type == PacketType::kRequest) {
    EndRequest(h);
  } else if (state_ == QpState::kRts) {
    EndResponse(h);
  }
}

uint64_t SoftQp::next_deadline() const {
  if (state_ != QpState::kRts) return UINT64_MAX;
  uint64_t next = retransmit_deadline_;
  if (rnr_resume_at_ != 0 && rnr_resume_at_ < next) next = rnr_resume_at_;
  return next;
}

void SoftQp::OnTimer(uint64_t now_ns) {
  if (state_ != QpState::kRts) return;
  if (rnr_resume_at_ != 0 && now_ns >= rnr_resume_at_) {
    rnr_resume_at_ = 0;
    Pump();
  }
  if (retransmit_deadline_ <= now_ns) OnRetransmitTimeout(now_ns);
}

PacketHeader SoftQp::MakeHeader(PacketType type, uint32_t psn) const {
  PacketHeader h;
  h.type = type;
  h.src_qpn = qp_num_;
  h.dst_qpn = remote_.qp_num;
  h.psn = psn;
  return h;
}

void SoftQp::CompleteSend(const SendWqe& wqe, ibv_wc_status status) {
  if (status != IBV_WC_SUCCESS) {
    send_cq_->PushError(wqe.wr_id, status, qp_num_);
    return;
  }
  if (!wqe.signaled && !sq_sig_all_) return;
  ibv_wc wc{};
  wc.wr_id = wqe.wr_id;
  wc.status = IBV_WC_SUCCESS;
  wc.qp_num = qp_num_;
  wc.byte_len = wqe.length;
  switch (wqe.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      wc.opcode = IBV_WC_RDMA_WRITE;
      break;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      wc.opcode = IBV_WC_SEND;
      break;
    case IBV_WR_RDMA_READ:
      wc.opcode = IBV_WC_RDMA_READ;
      break;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
      wc.opcode = IBV_WC_FETCH_ADD;
      break;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      wc.opcode = IBV_WC_COMP_SWAP;
      break;
    case IBV_WR_BIND_MW:
      wc.opcode = IBV_WC_BIND_MW;
      break;
    case IBV_WR_LOCAL_INV:
      wc.opcode = IBV_WC_LOCAL_INV;
      break;
    default:
      break;
  }
  send_cq_->Push(wc);
}

void SoftQp::EnterError() {
  // The flushed WRs' memory goes back to the application: the link lets go of it first.
  if (channel_ != nullptr) channel_->Quiesce();
  state_ = QpState::kError;
  retransmit_deadline_ = UINT64_MAX;
  rnr_resume_at_ = 0;
  FlushAll();
}

void SoftQp::FlushAll() {
  while (sq_head_ != sq_tail_) {
    CompleteSend(Sq(sq_head_), IBV_WC_WR_FLUSH_ERR);
    ++sq_head_;
  }
  sq_tx_ = sq_tail_;
  tx_bytes_ = 0;
  while (rq_head_ != rq_tail_) {
    recv_cq_->PushError(Rq(rq_head_).wr_id, IBV_WC_WR_FLUSH_ERR, qp_num_);
    ++rq_head_;
  }
}

common::Status SoftQp::InjectBreak() const { return device_->fabric()->BreakQp(*this); }

}  // namespace braid::soft
