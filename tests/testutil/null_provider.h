// NullProvider: a provider whose QPs complete every send at once, for measuring the virtual
// layer's own cost and for tests that need exact control over physical completions.
//
// A send completes successfully the moment it is posted (or with `fail_next_sends` errors).
// Receives stay posted until the test delivers an arrival with DeliverRecv(). A CQ can be told to
// fail its next poll. Nothing allocates on post or poll.
// Threading: one thread.
#ifndef BRAID_TESTS_TESTUTIL_NULL_PROVIDER_H_
#define BRAID_TESTS_TESTUTIL_NULL_PROVIDER_H_

#include <memory>
#include <string_view>
#include <vector>

#include "dataplane/verbs/provider.h"

namespace braid::testing {

class NullCq final : public verbs::Cq {
 public:
  explicit NullCq(int capacity) : ring_(static_cast<size_t>(capacity)) {}
  common::Result<int> Poll(std::span<ibv_wc> out) override;
  int capacity() const override { return static_cast<int>(ring_.size()); }
  int wakeup_fd() const override { return -1; }
  common::Status RequestNotify() override { return common::Status::Ok(); }
  common::Status ConsumeWakeup() override { return common::Status::Ok(); }
  common::Status Resize(int entries) override;
  void Push(const ibv_wc& wc);
  void FailNextPoll() { fail_next_poll_ = true; }
  size_t size() const { return count_; }
  uint64_t polls() const { return polls_; }  // Poll calls so far

 private:
  std::vector<ibv_wc> ring_;
  size_t head_ = 0;
  size_t count_ = 0;
  bool fail_next_poll_ = false;
  uint64_t polls_ = 0;
};

class NullQp final : public verbs::Qp {
 public:
  NullQp(uint32_t qp_num, NullCq* send_cq, NullCq* recv_cq, uint32_t max_recv)
      : qp_num_(qp_num), send_cq_(send_cq), recv_cq_(recv_cq), recvs_(max_recv) {}
  uint32_t qp_num() const override { return qp_num_; }
  verbs::QpState state() const override { return state_; }
  common::Status ToInit(const verbs::QpInitParams&) override;
  common::Status ToRtr(const verbs::QpRtrParams&) override;
  common::Status ToRts(const verbs::QpRtsParams&) override;
  common::Status ToError() override;
  common::Status ToReset() override;
  common::Status PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) override;
  common::Status PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) override;

  // An arrival from the (imaginary) peer: consumes the oldest posted receive, copies `payload`
  // into it and completes it. False when no receive is posted.
  bool DeliverRecv(ibv_wc_opcode opcode, uint32_t imm_net, uint32_t byte_len,
                   const void* payload = nullptr, uint32_t payload_len = 0);
  size_t posted_recvs() const { return recv_count_; }
  // The next PostRecv is refused with `status` (as a provider that cannot post would).
  void FailNextPostRecv(common::Status status) { fail_next_recv_ = std::move(status); }
  void FailNextSends(int n, ibv_wc_status status) {
    fail_sends_ = n;
    fail_status_ = status;
  }
  const ibv_send_wr& last_send() const { return last_send_; }
  // One posted send WR, as recorded while Record(true): `order` counts posts on every NullQp of
  // the process, so logs of several QPs can be merged into posting order.
  struct SentWr {
    uint64_t order = 0;
    ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
    uint32_t imm_data = 0;  // network order, as posted
    uint32_t length = 0;
    uint64_t remote_addr = 0;
    uint8_t payload[16] = {};  // the first 16 bytes of the SGE (a notify or tail payload)
  };
  // While held, this QP's send completions wait (as behind a stalled link), in order; they are
  // delivered when the hold ends.
  void Hold(bool on);
  void Record(bool on) { record_ = on; }
  const std::vector<SentWr>& sent() const { return sent_; }
  uint64_t sends() const { return sends_; }
  uint64_t reads() const { return reads_; }  // RDMA READs posted

 private:
  void Log(const ibv_send_wr& wr);
  struct Recv {
    uint64_t wr_id;
    ibv_sge sge;
    int num_sge;
  };
  uint32_t qp_num_;
  NullCq* send_cq_;
  NullCq* recv_cq_;
  verbs::QpState state_ = verbs::QpState::kReset;
  std::vector<Recv> recvs_;
  size_t recv_head_ = 0;
  size_t recv_count_ = 0;
  int fail_sends_ = 0;
  ibv_wc_status fail_status_ = IBV_WC_RETRY_EXC_ERR;
  ibv_send_wr last_send_{};
  uint64_t sends_ = 0;
  uint64_t reads_ = 0;
  common::Status fail_next_recv_;
  bool record_ = false;
  bool held_ = false;
  std::vector<ibv_wc> held_wcs_;
  std::vector<SentWr> sent_;
};

class NullDevice final : public verbs::Device {
 public:
  explicit NullDevice(int index);
  const verbs::DeviceInfo& info() const override { return info_; }
  common::Result<std::unique_ptr<verbs::ProtectionDomain>> AllocPd() override;
  common::Result<std::unique_ptr<verbs::Cq>> CreateCq(int min_entries) override;
  // Every QP created on this device, by creation order (not owned).
  std::vector<NullQp*>& qps() { return qps_; }

 private:
  verbs::DeviceInfo info_;
  std::vector<NullQp*> qps_;
  uint32_t next_qp_num_ = 0x100;
  uint32_t next_key_ = 1;
  friend class NullPd;
};

// A provider of NullDevices ("null0", "null1", ...): an engine over it measures its own cost (a
// write completes the moment it is posted, and moves no bytes). Threading: the engine's thread.
class NullProvider final : public verbs::Provider {
 public:
  explicit NullProvider(int devices = 1) : devices_(devices) {}
  std::string_view name() const override { return "null"; }
  common::Result<std::vector<verbs::DeviceInfo>> ListDevices() override;
  common::Result<std::unique_ptr<verbs::Device>> OpenDevice(std::string_view name) override;

 private:
  int devices_;
};

// The baseline the virtual layer's cost is measured against: one NullQp in RTS on its own CQ, with
// a signaled 64-byte RDMA WRITE ready to post.
struct NullBaseline {
  NullBaseline();
  NullDevice device{0};
  std::unique_ptr<verbs::Cq> cq_owner;
  NullCq* cq = nullptr;
  std::unique_ptr<NullQp> qp;
  uint8_t buffer[64] = {};
  ibv_sge sge{};
  ibv_send_wr wr{};
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_NULL_PROVIDER_H_
