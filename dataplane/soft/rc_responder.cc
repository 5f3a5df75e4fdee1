// SoftQp responder: checks each request in PSN order, says where its payload goes, and once the
// payload is in place completes it and answers (ACK after placement).
#include <cstring>

#include "dataplane/soft/soft_cq.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

namespace {
uint32_t PsnPrev(uint32_t psn) { return (psn - 1) & kPsnMask; }
bool IsWrite(ibv_wr_opcode op) {
  return op == IBV_WR_RDMA_WRITE || op == IBV_WR_RDMA_WRITE_WITH_IMM;
}
bool IsSend(ibv_wr_opcode op) { return op == IBV_WR_SEND || op == IBV_WR_SEND_WITH_IMM; }
bool IsAtomic(ibv_wr_opcode op) {
  return op == IBV_WR_ATOMIC_FETCH_AND_ADD || op == IBV_WR_ATOMIC_CMP_AND_SWP;
}
}  // namespace

void SoftQp::BeginRequest(const PacketHeader& p, Placement* placement) {
  const int32_t d = PsnDiff(p.psn, expected_psn_);
  if (d != 0) {
    // d > 0: out of sequence (a predecessor was lost; the requester goes back). d < 0: a
    // retransmission of something already executed. Either way the payload is discarded.
    inbound_.verdict = d > 0 ? Verdict::kIgnore : Verdict::kDuplicate;
    return;
  }
  auto fail = [this](NakCode nak) {
    inbound_.verdict = Verdict::kFail;
    inbound_.nak = nak;
  };
  const bool payload_expected = IsWrite(p.opcode) || IsSend(p.opcode);
  if (payload_expected ? p.payload_len != p.length : p.payload_len != 0) {
    fail(NakCode::kInvalidRequest);  // a malformed request
    return;
  }
  if (IsWrite(p.opcode)) {
    if (!(access_flags_ & IBV_ACCESS_REMOTE_WRITE) ||
        (p.length > 0 &&
         device_->mrs().CheckRemote(p.rkey, pd_id_, qp_num_, p.remote_addr, p.length,
                                    IBV_ACCESS_REMOTE_WRITE) == nullptr)) {
      fail(NakCode::kRemoteAccess);
      return;
    }
    if (p.opcode == IBV_WR_RDMA_WRITE_WITH_IMM && rq_head_ == rq_tail_) {
      inbound_.verdict = Verdict::kRnr;  // checked before anything is placed
      return;
    }
    if (p.length > 0) {
      placement->iov[0] = {reinterpret_cast<void*>(p.remote_addr), p.length};
      placement->count = 1;
    }
    inbound_.verdict = Verdict::kExecute;
    return;
  }
  if (IsSend(p.opcode)) {
    if (rq_head_ == rq_tail_) {
      inbound_.verdict = Verdict::kRnr;
      return;
    }
    ibv_wc_status status = IBV_WC_SUCCESS;
    if (!PlaceInRecv(p.length, Rq(rq_head_), placement, &status)) {
      placement->count = 0;
      inbound_.verdict = Verdict::kFailRecv;
      inbound_.recv_error = status;
      inbound_.nak =
          status == IBV_WC_LOC_LEN_ERR ? NakCode::kInvalidRequest : NakCode::kRemoteOperational;
      return;
    }
    inbound_.verdict = Verdict::kExecute;
    return;
  }
  if (p.opcode == IBV_WR_RDMA_READ) {
    if (!(access_flags_ & IBV_ACCESS_REMOTE_READ) ||
        (p.length > 0 && device_->mrs().CheckRemote(p.rkey, pd_id_, qp_num_, p.remote_addr,
                                                    p.length, IBV_ACCESS_REMOTE_READ) == nullptr)) {
      fail(NakCode::kRemoteAccess);
      return;
    }
    inbound_.verdict = Verdict::kExecute;
    return;
  }
  if (IsAtomic(p.opcode)) {
    if (p.length != 8 || p.remote_addr % 8 != 0) {
      fail(NakCode::kInvalidRequest);
      return;
    }
    if (!(access_flags_ & IBV_ACCESS_REMOTE_ATOMIC) ||
        device_->mrs().CheckRemote(p.rkey, pd_id_, qp_num_, p.remote_addr, 8,
                                   IBV_ACCESS_REMOTE_ATOMIC) == nullptr) {
      fail(NakCode::kRemoteAccess);
      return;
    }
    inbound_.verdict = Verdict::kExecute;
    return;
  }
  fail(NakCode::kInvalidRequest);
}

void SoftQp::EndRequest(const PacketHeader& p) {
  if (inbound_.cut && inbound_.verdict == Verdict::kExecute) {
    // Its region was deregistered while the payload arrived: a receive's buffer is a local
    // protection error (consumed, the requester told REMOTE_OP), a WRITE's a remote access one.
    if (IsSend(p.opcode)) {
      inbound_.verdict = Verdict::kFailRecv;
      inbound_.recv_error = IBV_WC_LOC_PROT_ERR;
      inbound_.nak = NakCode::kRemoteOperational;
    } else {
      inbound_.verdict = Verdict::kFail;
      inbound_.nak = NakCode::kRemoteAccess;
    }
  }
  switch (inbound_.verdict) {
    case Verdict::kIgnore:
      return;
    case Verdict::kDuplicate:
      // Never execute a SEND or WRITE twice; re-execute a READ; answer an ATOMIC from the cache.
      if (p.opcode == IBV_WR_RDMA_READ) {
        ReplyRead(p);
      } else if (IsAtomic(p.opcode)) {
        for (const AtomicResult& r : atomic_cache_) {
          if (r.valid && r.psn == p.psn) {
            ReplyAtomic(p.psn, r.orig);
            break;
          }
        }  // too old to answer: the requester's timeout handles it
      } else {
        Reply(PacketType::kAck, PsnPrev(expected_psn_));
      }
      return;
    case Verdict::kRnr:
      Reply(PacketType::kNak, p.psn, NakCode::kRnr);
      return;
    case Verdict::kFailRecv:
      recv_cq_->PushError(Rq(rq_head_++).wr_id, inbound_.recv_error, qp_num_);
      FailResponder(inbound_.nak, p.psn);
      return;
    case Verdict::kFail:
      FailResponder(inbound_.nak, p.psn);
      return;
    case Verdict::kExecute:
      break;
  }
  if (p.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
    CompleteRecv(Rq(rq_head_++).wr_id, IBV_WC_RECV_RDMA_WITH_IMM, p, /*with_imm=*/true);
  } else if (IsSend(p.opcode)) {
    CompleteRecv(Rq(rq_head_++).wr_id, IBV_WC_RECV, p, p.opcode == IBV_WR_SEND_WITH_IMM);
  } else if (p.opcode == IBV_WR_RDMA_READ) {
    expected_psn_ = PsnNext(expected_psn_);
    ReplyRead(p);
    return;
  } else if (IsAtomic(p.opcode)) {
    // Host byte order; one thread drives the device, so this is atomic for its QPs.
    void* target = reinterpret_cast<void*>(p.remote_addr);
    uint64_t orig;
    std::memcpy(&orig, target, 8);
    uint64_t next = orig;
    if (p.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD) {
      next = orig + p.compare_add;
    } else if (orig == p.compare_add) {
      next = p.swap;
    }
    std::memcpy(target, &next, 8);
    atomic_cache_[atomic_cache_next_++ % atomic_cache_.size()] = {p.psn, orig, true};
    expected_psn_ = PsnNext(expected_psn_);
    ReplyAtomic(p.psn, orig);
    return;
  }
  expected_psn_ = PsnNext(expected_psn_);
  if (p.opcode == IBV_WR_RDMA_WRITE_WITH_IMM || IsSend(p.opcode)) {
    channel_->TransmitAck(MakeHeader(PacketType::kAck, p.psn));  // a receive completed: coalesce
  } else {
    Reply(PacketType::kAck, p.psn);
  }
}

void SoftQp::CompleteRecv(uint64_t wr_id, ibv_wc_opcode opcode, const PacketHeader& p,
                          bool with_imm) {
  ibv_wc wc{};
  wc.wr_id = wr_id;
  wc.status = IBV_WC_SUCCESS;
  wc.opcode = opcode;
  wc.byte_len = p.length;
  if (with_imm) {
    wc.imm_data = p.imm_data;
    wc.wc_flags = IBV_WC_WITH_IMM;
  }
  wc.qp_num = qp_num_;
  wc.src_qp = remote_.qp_num;
  recv_cq_->Push(wc);
}

bool SoftQp::PlaceInRecv(uint32_t length, const RecvWqe& r, Placement* placement,
                         ibv_wc_status* status) const {
  uint64_t capacity = 0;
  for (uint32_t i = 0; i < r.num_sge; ++i) capacity += r.sge[i].length;
  if (length > capacity) {
    *status = IBV_WC_LOC_LEN_ERR;
    return false;
  }
  uint64_t off = 0;
  for (uint32_t i = 0; i < r.num_sge && off < length; ++i) {
    const uint64_t n = std::min<uint64_t>(r.sge[i].length, length - off);
    if (n == 0) continue;
    if (device_->mrs().CheckLocal(r.sge[i].lkey, pd_id_, r.sge[i].addr, n,
                                  IBV_ACCESS_LOCAL_WRITE) == nullptr) {
      *status = IBV_WC_LOC_PROT_ERR;
      return false;
    }
    placement->iov[placement->count++] = {reinterpret_cast<void*>(r.sge[i].addr), n};
    off += n;
  }
  return true;
}

void SoftQp::Reply(PacketType type, uint32_t psn, NakCode nak) {
  PacketHeader r = MakeHeader(type, psn);
  r.nak = nak;
  r.rnr_timer = min_rnr_timer_;
  channel_->Transmit(r, {});
}

void SoftQp::ReplyRead(const PacketHeader& p) {
  if (p.length > 0 && device_->mrs().CheckRemote(p.rkey, pd_id_, qp_num_, p.remote_addr, p.length,
                                                 IBV_ACCESS_REMOTE_READ) == nullptr) {
    return;  // a duplicate whose region went away: let the requester time out
  }
  PacketHeader r = MakeHeader(PacketType::kReadResponse, p.psn);
  r.length = p.length;
  r.payload_len = p.length;
  const iovec data{reinterpret_cast<void*>(p.remote_addr), p.length};  // sent from where it is
  channel_->Transmit(r, p.length > 0 ? std::span<const iovec>(&data, 1) : std::span<const iovec>());
}

void SoftQp::ReplyAtomic(uint32_t psn, uint64_t orig) {
  PacketHeader r = MakeHeader(PacketType::kAtomicResponse, psn);
  r.length = 8;
  r.atomic_orig = orig;
  channel_->Transmit(r, {});
}

// A class C responder error: NAK the request, then the responder QP goes to ERR as well.
void SoftQp::FailResponder(NakCode nak, uint32_t psn) {
  EnterError();
  Reply(PacketType::kNak, psn, nak);  // its last frame: the link let go of everything before it
}

}  // namespace braid::soft
