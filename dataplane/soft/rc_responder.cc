// SoftQp responder: executes requests in PSN order and answers them.
#include <cstring>

#include "dataplane/soft/soft_cq.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

namespace {
uint32_t PsnPrev(uint32_t psn) { return (psn - 1) & kPsnMask; }
}  // namespace

void SoftQp::OnRequest(const Packet& p) {
  const int32_t d = PsnDiff(p.psn, expected_psn_);
  if (d > 0) return;  // out of sequence: a predecessor was lost; the requester goes back
  if (d == 0) {
    Execute(p);
    return;
  }
  // A duplicate (the requester retransmitted). Never execute a SEND or WRITE twice.
  switch (p.opcode) {
    case IBV_WR_RDMA_READ: ReplyRead(p); return;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      for (const AtomicResult& r : atomic_cache_) {
        if (r.valid && r.psn == p.psn) {
          ReplyAtomic(p.psn, r.orig);
          return;
        }
      }
      return;  // too old to answer: the requester's timeout handles it
    default: Reply(PacketType::kAck, PsnPrev(expected_psn_)); return;
  }
}

void SoftQp::Execute(const Packet& p) {
  switch (p.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM: {
      const bool with_imm = p.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
      if (!(access_flags_ & IBV_ACCESS_REMOTE_WRITE) ||
          (p.length > 0 && device_->mrs().CheckRemote(p.rkey, pd_id_, p.remote_addr, p.length,
                                                      IBV_ACCESS_REMOTE_WRITE) == nullptr)) {
        FailResponder(NakCode::kRemoteAccess, p.psn);
        return;
      }
      if (with_imm && rq_head_ == rq_tail_) {
        Reply(PacketType::kNak, p.psn, NakCode::kRnr);
        return;
      }
      if (p.length > 0) {
        std::memcpy(reinterpret_cast<void*>(p.remote_addr), p.payload.data(), p.length);
      }
      if (with_imm) {
        CompleteRecv(Rq(rq_head_++).wr_id, IBV_WC_RECV_RDMA_WITH_IMM, p, /*with_imm=*/true);
      }
      break;
    }
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM: {
      if (rq_head_ == rq_tail_) {
        Reply(PacketType::kNak, p.psn, NakCode::kRnr);
        return;
      }
      RecvWqe& r = Rq(rq_head_++);
      ibv_wc_status status = IBV_WC_SUCCESS;
      if (!ScatterToRecv(p, r, &status)) {
        recv_cq_->PushError(r.wr_id, status, qp_num_);
        FailResponder(status == IBV_WC_LOC_LEN_ERR ? NakCode::kInvalidRequest
                                                   : NakCode::kRemoteOperational,
                      p.psn);
        return;
      }
      CompleteRecv(r.wr_id, IBV_WC_RECV, p, p.opcode == IBV_WR_SEND_WITH_IMM);
      break;
    }
    case IBV_WR_RDMA_READ:
      if (!(access_flags_ & IBV_ACCESS_REMOTE_READ) ||
          (p.length > 0 && device_->mrs().CheckRemote(p.rkey, pd_id_, p.remote_addr, p.length,
                                                      IBV_ACCESS_REMOTE_READ) == nullptr)) {
        FailResponder(NakCode::kRemoteAccess, p.psn);
        return;
      }
      expected_psn_ = PsnNext(expected_psn_);
      ReplyRead(p);
      return;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP: {
      if (p.length != 8 || p.remote_addr % 8 != 0) {
        FailResponder(NakCode::kInvalidRequest, p.psn);
        return;
      }
      if (!(access_flags_ & IBV_ACCESS_REMOTE_ATOMIC) ||
          device_->mrs().CheckRemote(p.rkey, pd_id_, p.remote_addr, 8,
                                     IBV_ACCESS_REMOTE_ATOMIC) == nullptr) {
        FailResponder(NakCode::kRemoteAccess, p.psn);
        return;
      }
      // Host byte order; a soft responder executes atomically with respect to its own QPs
      // (one thread drives the device).
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
    default: FailResponder(NakCode::kInvalidRequest, p.psn); return;
  }
  expected_psn_ = PsnNext(expected_psn_);
  Reply(PacketType::kAck, p.psn);
}

void SoftQp::CompleteRecv(uint64_t wr_id, ibv_wc_opcode opcode, const Packet& p, bool with_imm) {
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

bool SoftQp::ScatterToRecv(const Packet& p, RecvWqe& r, ibv_wc_status* status) {
  uint64_t capacity = 0;
  for (uint32_t i = 0; i < r.num_sge; ++i) capacity += r.sge[i].length;
  if (p.length > capacity) {
    *status = IBV_WC_LOC_LEN_ERR;
    return false;
  }
  uint64_t off = 0;
  for (uint32_t i = 0; i < r.num_sge && off < p.length; ++i) {
    const uint64_t n = std::min<uint64_t>(r.sge[i].length, p.length - off);
    if (n == 0) continue;
    if (device_->mrs().CheckLocal(r.sge[i].lkey, pd_id_, r.sge[i].addr, n,
                                  IBV_ACCESS_LOCAL_WRITE) == nullptr) {
      *status = IBV_WC_LOC_PROT_ERR;
      return false;
    }
    std::memcpy(reinterpret_cast<void*>(r.sge[i].addr), p.payload.data() + off, n);
    off += n;
  }
  return true;
}

void SoftQp::Reply(PacketType type, uint32_t psn, NakCode nak) {
  std::unique_ptr<Packet> r = NewPacket(type, psn);
  r->nak = nak;
  r->rnr_timer = min_rnr_timer_;
  r->length = 0;
  r->payload.clear();
  channel_->Transmit(std::move(r));
}

void SoftQp::ReplyRead(const Packet& p) {
  if (p.length > 0 && device_->mrs().CheckRemote(p.rkey, pd_id_, p.remote_addr, p.length,
                                                 IBV_ACCESS_REMOTE_READ) == nullptr) {
    return;  // a duplicate whose region went away: let the requester time out
  }
  std::unique_ptr<Packet> r = NewPacket(PacketType::kReadResponse, p.psn);
  r->length = p.length;
  r->payload.resize(p.length);
  if (p.length > 0) {
    std::memcpy(r->payload.data(), reinterpret_cast<const void*>(p.remote_addr), p.length);
  }
  channel_->Transmit(std::move(r));
}

void SoftQp::ReplyAtomic(uint32_t psn, uint64_t orig) {
  std::unique_ptr<Packet> r = NewPacket(PacketType::kAtomicResponse, psn);
  r->length = 8;
  r->atomic_orig = orig;
  r->payload.clear();
  channel_->Transmit(std::move(r));
}

// A class C responder error: NAK the request, then the responder QP goes to ERR as well.
void SoftQp::FailResponder(NakCode nak, uint32_t psn) {
  Reply(PacketType::kNak, psn, nak);
  EnterError();
}

}  // namespace braid::soft
