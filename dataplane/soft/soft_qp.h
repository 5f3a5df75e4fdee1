// SoftQp: a reliable-connected QP implemented in userspace.
//
// Requester (rc_requester.cc): a send-queue ring of WQEs. Memory-window binds and invalidations
// (IBV_WR_BIND_MW, IBV_WR_LOCAL_INV; mr_table.h) are executed on this NIC when transmission reaches
// them, in posting order, use no PSN and complete in order with the rest (IBV_WC_MW_BIND_ERR when
// refused). A bind names its window by wr.bind_mw.mw->rkey and its region by
// wr.bind_mw.bind_info.mr->lkey. Posting copies the WR into a slot (and
// inline data into the slot's buffer); transmission checks local keys, gathers the payload and
// hands one request per WQE to the channel. ACKs are cumulative; a READ or ATOMIC response also
// acknowledges everything before it. Completions are generated strictly in posting order, and a
// send completion is only generated after the responder placed the data (it ACKs after placement).
// Lost packets are recovered go-back-N after the local ACK timeout (4.096 µs × 2^timeout), up to
// retry_cnt times, then IBV_WC_RETRY_EXC_ERR. RNR NAKs are retried after the responder's RNR
// timer, up to rnr_retry times (7 = forever), then IBV_WC_RNR_RETRY_EXC_ERR.
//
// Responder (rc_responder.cc): executes requests in PSN order after rkey, bounds and access
// checks; duplicates are re-acknowledged (READ re-executed, ATOMIC answered from a result cache,
// SEND never consumes a second receive); out-of-sequence requests are dropped.
//
// Errors: the first error completion moves the QP to ERR; every other outstanding and later-posted
// WR (send and receive) completes with IBV_WC_WR_FLUSH_ERR; a QP in ERR never completes anything
// successfully and ignores the network. Error completions carry poison (soft_cq.h).
//
// Threading: the fabric's thread. PostSend / PostRecv allocate nothing.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_QP_H_
#define BRAID_DATAPLANE_SOFT_SOFT_QP_H_

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/common/zeroed_array.h"
#include "dataplane/soft/link.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

class SoftCq;
class SoftDevice;

inline constexpr uint32_t kMaxSge = 16;
inline constexpr uint32_t kMaxInline = 1024;
inline constexpr uint32_t kMaxQpWr = 1 << 16;

class SoftQp final : public verbs::Qp {
  friend class SoftDevice;  // timer_armed_
 public:
  SoftQp(SoftDevice* device, uint32_t pd_id, uint32_t qp_num, const verbs::QpCreateParams& params);
  ~SoftQp() override;
  // Allocates the queues for the caps given at construction; false when out of memory. Called
  // once, before the QP is registered with its device.
  [[nodiscard]] bool AllocateQueues();

  uint32_t qp_num() const override { return qp_num_; }
  verbs::QpState state() const override { return state_; }
  common::Status ToInit(const verbs::QpInitParams& params) override;
  common::Status ToRtr(const verbs::QpRtrParams& params) override;
  common::Status ToRts(const verbs::QpRtsParams& params) override;
  common::Status ToError() override;
  common::Status ToReset() override;
  common::Status PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) override;
  common::Status PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) override;
  common::Status InjectBreak() const override;

  // Provider-internal: called by the device. An inbound message in two steps (see link.h).
  void BeginInbound(const PacketHeader& header, Placement* placement);
  void EndInbound(const PacketHeader& header);
  // The link stopped placing the inbound message's payload (its memory was deregistered): the
  // message fails at EndInbound as an access to a key that is gone.
  void CutInbound() { inbound_.cut = true; }
  void OnTimer(uint64_t now_ns);
  // Earliest time OnTimer has work (UINT64_MAX: none).
  uint64_t next_deadline() const;
  SoftDevice* device() const { return device_; }
  const verbs::Gid& remote_gid() const { return remote_.gid; }
  uint32_t remote_qp_num() const { return remote_.qp_num; }

 private:
  struct SendWqe {
    uint64_t wr_id = 0;
    ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
    bool signaled = false;
    bool is_inline = false;
    bool local = false;        // a window bind or invalidation: done on this NIC, no packet
    bool transmitted = false;  // checked and sent (a local one: executed) at least once
    bool done = false;         // acknowledged (or failed): may complete
    ibv_wc_status status = IBV_WC_SUCCESS;
    uint32_t psn = 0;
    uint32_t length = 0;
    uint64_t remote_addr = 0;
    uint32_t rkey = 0;
    uint32_t imm_data = 0;
    uint64_t compare_add = 0;
    uint64_t swap = 0;
    uint32_t window_key = 0;  // a bind: the window (`rkey` is its new key)
    uint32_t region_lkey = 0;
    uint64_t bind_length = 0;
    unsigned int bind_access = 0;
    uint32_t num_sge = 0;
    // Set when the slot is taken: its max_send_sge entries of sq_sges_ and, when the QP takes
    // inline data, its max_inline_data bytes of sq_inline_.
    ibv_sge* sge = nullptr;
    uint8_t* inline_data = nullptr;
  };
  struct RecvWqe {
    uint64_t wr_id = 0;
    uint32_t num_sge = 0;
    ibv_sge* sge = nullptr;  // max_recv_sge entries of rq_sges_, set when the slot is taken
  };
  // What BeginInbound decided, for EndInbound (one inbound message at a time per QP).
  enum class Verdict : uint8_t {
    kIgnore,     // wrong state, not our peer, out of sequence or stale: nothing to do
    kDuplicate,  // an already executed request: answer it again, never execute it twice
    kExecute,    // checks passed: complete it
    kRnr,        // no receive posted: RNR NAK
    kFail,       // class C error: NAK `nak`, QP to ERR
    kFailRecv,   // a receive is consumed in error (`recv_error`), then as kFail
  };
  struct Inbound {
    Verdict verdict = Verdict::kIgnore;
    NakCode nak = NakCode::kRnr;
    ibv_wc_status recv_error = IBV_WC_SUCCESS;
    bool cut = false;  // the payload was not all placed (CutInbound): an executed one fails
  };
  struct AtomicResult {
    uint32_t psn = 0;
    uint64_t orig = 0;
    bool valid = false;
  };

  // Requester (rc_requester.cc).
  common::Status ValidateSend(const ibv_send_wr& wr) const;
  void EnqueueSend(const ibv_send_wr& wr);
  void Pump();
  bool CheckLocalKeys(const SendWqe& wqe) const;
  // Executes a window bind or invalidation: whether the NIC accepted it.
  bool ExecuteLocal(const SendWqe& wqe);
  void TransmitWqe(SendWqe& wqe);
  void BeginResponse(const PacketHeader& header, Placement* placement);
  void EndResponse(const PacketHeader& header);
  void OnAck(uint32_t psn);
  void OnReadResponse(const PacketHeader& header, bool cut);
  void OnAtomicResponse(const PacketHeader& header);
  void OnNak(const PacketHeader& header);
  // Marks every transmitted WQE before `psn` acknowledged (except READ/ATOMIC, which need their
  // response) and returns the slot index holding `psn`, or tail when none does.
  uint64_t AckBefore(uint32_t psn, bool inclusive);
  void CompleteHead();
  void OnAckProgress();
  // `now`: when the progress pass began. The link's delivery is judged as of then, so the time
  // the pass spent reading what arrived (for any QP) does not count against this one.
  void OnRetransmitTimeout(uint64_t now);
  void RewindTo(uint64_t index);
  SendWqe& Sq(uint64_t index) { return sq_[index % sq_.size()]; }

  // Responder (rc_responder.cc).
  void BeginRequest(const PacketHeader& header, Placement* placement);
  void EndRequest(const PacketHeader& header);
  void Reply(PacketType type, uint32_t psn, NakCode nak = NakCode::kRnr);
  void ReplyRead(const PacketHeader& request);
  void ReplyAtomic(uint32_t psn, uint64_t orig);
  void FailResponder(NakCode nak, uint32_t psn);
  // Checks the receive's SGEs for `length` bytes and lays them out in `placement`.
  bool PlaceInRecv(uint32_t length, const RecvWqe& wqe, Placement* placement,
                   ibv_wc_status* status) const;
  void CompleteRecv(uint64_t wr_id, ibv_wc_opcode opcode, const PacketHeader& header,
                    bool with_imm);
  RecvWqe& Rq(uint64_t index) { return rq_[index % rq_.size()]; }

  // Both.
  void EnterError();
  void FlushAll();
  void CompleteSend(const SendWqe& wqe, ibv_wc_status status);
  // A header addressed to the peer QP (the rest is the caller's).
  PacketHeader MakeHeader(PacketType type, uint32_t psn) const;
  bool RequireState(verbs::QpState from) const { return state_ == from; }

  SoftDevice* device_;
  SoftCq* send_cq_;
  SoftCq* recv_cq_;
  uint32_t pd_id_;
  uint32_t qp_num_;
  verbs::QpCaps caps_;
  bool sq_sig_all_;
  verbs::QpState state_ = verbs::QpState::kReset;
  unsigned int access_flags_ = 0;
  verbs::RemoteQpAddress remote_;
  std::unique_ptr<Channel> channel_;

  // Send queue: [sq_head_, sq_tx_) transmitted, [sq_tx_, sq_tail_) waiting.
  // The WQEs' scatter/gather lists, sized by the QP's caps (most QPs take one SGE: a WQE with
  // room for kMaxSge would be 16 times larger, and a VQP has thousands of them).
  // Zeroed arrays: a queue sized for its worst case costs memory only as far as it is used.
  common::ZeroedArray<ibv_sge> sq_sges_;
  common::ZeroedArray<SendWqe> sq_;
  common::ZeroedArray<uint8_t> sq_inline_;  // max_inline_data bytes per WQE
  uint64_t sq_head_ = 0;
  uint64_t sq_tx_ = 0;
  uint64_t sq_tail_ = 0;
  uint64_t tx_bytes_ = 0;  // the lengths of [sq_head_, sq_tx_): held to the link's window_bytes()
  uint32_t next_psn_ = 0;
  uint64_t ack_timeout_ns_ = 0;  // 0 = never
  uint8_t retry_cnt_ = 7;
  uint8_t rnr_retry_ = 7;
  uint8_t retries_left_ = 7;
  uint8_t rnr_retries_left_ = 7;
  uint64_t retransmit_deadline_ = UINT64_MAX;
  bool timer_armed_ = false;    // in the device's armed-timer list
  uint64_t rnr_resume_at_ = 0;  // no transmission before this time (RNR back-off)

  // Receive queue and responder state.
  common::ZeroedArray<ibv_sge> rq_sges_;
  common::ZeroedArray<RecvWqe> rq_;
  uint64_t rq_head_ = 0;
  uint64_t rq_tail_ = 0;
  uint32_t expected_psn_ = 0;
  uint8_t min_rnr_timer_ = 12;
  std::array<AtomicResult, 16> atomic_cache_{};
  Inbound inbound_;
  uint32_t atomic_cache_next_ = 0;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SOFT_QP_H_
