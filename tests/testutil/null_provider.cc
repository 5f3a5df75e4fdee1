#include "tests/testutil/null_provider.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <utility>

namespace braid::testing {

using common::Status;

common::Result<int> NullCq::Poll(std::span<ibv_wc> out) {
  ++polls_;
  if (fail_next_poll_) {
    fail_next_poll_ = false;
    return Status::CqOverflow("injected CQ failure");
  }
  int n = 0;
  while (count_ > 0 && static_cast<size_t>(n) < out.size()) {
    out[static_cast<size_t>(n++)] = ring_[head_];
    head_ = (head_ + 1) % ring_.size();
    --count_;
  }
  return n;
}

void NullCq::Push(const ibv_wc& wc) {
  if (count_ == ring_.size()) return;  // reservations keep this from happening
  ring_[(head_ + count_) % ring_.size()] = wc;
  ++count_;
}

Status NullCq::Resize(int entries) {
  if (entries <= 0 || static_cast<size_t>(entries) < count_) {
    return Status::InvalidArgument("NullCq: new size below what it holds");
  }
  std::vector<ibv_wc> ring(static_cast<size_t>(entries));
  for (size_t i = 0; i < count_; ++i) ring[i] = ring_[(head_ + i) % ring_.size()];
  ring_ = std::move(ring);
  head_ = 0;
  return Status::Ok();
}

Status NullQp::ToInit(const verbs::QpInitParams&) {
  state_ = verbs::QpState::kInit;
  return Status::Ok();
}
Status NullQp::ToRtr(const verbs::QpRtrParams&) {
  state_ = verbs::QpState::kRtr;
  return Status::Ok();
}
Status NullQp::ToRts(const verbs::QpRtsParams&) {
  state_ = verbs::QpState::kRts;
  return Status::Ok();
}
Status NullQp::ToError() {
  state_ = verbs::QpState::kError;
  while (recv_count_ > 0) {
    ibv_wc wc{};
    wc.wr_id = recvs_[recv_head_].wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.qp_num = qp_num_;
    recv_cq_->Push(wc);
    recv_head_ = (recv_head_ + 1) % recvs_.size();
    --recv_count_;
  }
  return Status::Ok();
}
void NullQp::Hold(bool on) {
  held_ = on;
  if (on) return;
  for (const ibv_wc& wc : held_wcs_) send_cq_->Push(wc);
  held_wcs_.clear();
}

Status NullQp::ToReset() {
  state_ = verbs::QpState::kReset;
  recv_count_ = 0;
  return Status::Ok();
}

void NullQp::Log(const ibv_send_wr& wr) {
  static std::atomic<uint64_t> next_order{0};
  SentWr s;
  s.order = next_order.fetch_add(1);
  s.opcode = wr.opcode;
  s.imm_data = wr.imm_data;
  s.remote_addr = wr.opcode == IBV_WR_ATOMIC_CMP_AND_SWP || wr.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD
                      ? wr.wr.atomic.remote_addr
                      : wr.wr.rdma.remote_addr;
  if (wr.num_sge > 0) {
    s.length = wr.sg_list[0].length;
    std::memcpy(s.payload, reinterpret_cast<const void*>(wr.sg_list[0].addr),
                std::min<size_t>(sizeof(s.payload), wr.sg_list[0].length));
  }
  sent_.push_back(s);
}

Status NullQp::PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) {
  for (; wr != nullptr; wr = wr->next) {
    if (state_ != verbs::QpState::kRts && state_ != verbs::QpState::kError) {
      *bad_wr = wr;
      return Status::InvalidArgument("null QP not in RTS");
    }
    last_send_ = *wr;
    ++sends_;
    if (record_) Log(*wr);
    reads_ += wr->opcode == IBV_WR_RDMA_READ;
    ibv_wc wc{};
    wc.wr_id = wr->wr_id;
    wc.qp_num = qp_num_;
    if (state_ == verbs::QpState::kError) {
      wc.status = IBV_WC_WR_FLUSH_ERR;
    } else if (fail_sends_ > 0) {
      --fail_sends_;
      wc.status = fail_status_;
      state_ = verbs::QpState::kError;
    } else {
      wc.status = IBV_WC_SUCCESS;
      wc.opcode = wr->opcode == IBV_WR_RDMA_READ ? IBV_WC_RDMA_READ : IBV_WC_RDMA_WRITE;
    }
    if (held_) {
      held_wcs_.push_back(wc);
    } else {
      send_cq_->Push(wc);
    }
  }
  return Status::Ok();
}

Status NullQp::PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  if (!fail_next_recv_.ok()) {
    *bad_wr = wr;
    return std::exchange(fail_next_recv_, Status::Ok());
  }
  for (; wr != nullptr; wr = wr->next) {
    if (recv_count_ == recvs_.size()) {
      *bad_wr = wr;
      return Status::NoResource();
    }
    Recv& r = recvs_[(recv_head_ + recv_count_) % recvs_.size()];
    r.wr_id = wr->wr_id;
    r.num_sge = wr->num_sge;
    r.sge = wr->num_sge > 0 ? wr->sg_list[0] : ibv_sge{};
    ++recv_count_;
    if (state_ == verbs::QpState::kError) (void)ToError();
  }
  return Status::Ok();
}

bool NullQp::DeliverRecv(ibv_wc_opcode opcode, uint32_t imm_net, uint32_t byte_len,
                         const void* payload, uint32_t payload_len) {
  if (recv_count_ == 0) return false;
  const Recv r = recvs_[recv_head_];
  recv_head_ = (recv_head_ + 1) % recvs_.size();
  --recv_count_;
  if (payload != nullptr && r.num_sge > 0) {
    std::memcpy(reinterpret_cast<void*>(r.sge.addr), payload, std::min(payload_len, r.sge.length));
  }
  ibv_wc wc{};
  wc.wr_id = r.wr_id;
  wc.status = IBV_WC_SUCCESS;
  wc.opcode = opcode;
  wc.byte_len = byte_len;
  wc.imm_data = imm_net;
  wc.wc_flags = IBV_WC_WITH_IMM;
  wc.qp_num = qp_num_;
  recv_cq_->Push(wc);
  return true;
}

class NullMr final : public verbs::MemoryRegion {
 public:
  NullMr(void* addr, size_t length, uint32_t key) : addr_(addr), length_(length), key_(key) {
    handle_.addr = addr;
    handle_.length = length;
    handle_.lkey = lkey();
    handle_.rkey = rkey();
  }
  void* addr() const override { return addr_; }
  size_t length() const override { return length_; }
  uint32_t lkey() const override { return key_; }
  uint32_t rkey() const override { return key_ | 0x80000000u; }
  ibv_mr* handle() override { return &handle_; }

 private:
  void* addr_;
  size_t length_;
  uint32_t key_;
  ibv_mr handle_{};
};

class NullPd final : public verbs::ProtectionDomain {
 public:
  explicit NullPd(NullDevice* device) : device_(device) {}
  common::Result<std::unique_ptr<verbs::MemoryRegion>> RegisterMemory(void* addr, size_t length,
                                                                      unsigned int) override {
    return std::unique_ptr<verbs::MemoryRegion>(
        std::make_unique<NullMr>(addr, length, device_->next_key_++));
  }
  common::Result<std::unique_ptr<verbs::Qp>> CreateQp(const verbs::QpCreateParams& p) override {
    auto qp = std::make_unique<NullQp>(device_->next_qp_num_++, static_cast<NullCq*>(p.send_cq),
                                       static_cast<NullCq*>(p.recv_cq), p.caps.max_recv_wr);
    device_->qps_.push_back(qp.get());
    return std::unique_ptr<verbs::Qp>(std::move(qp));
  }

 private:
  NullDevice* device_;
};

NullDevice::NullDevice(int index) {
  info_.name = "null" + std::to_string(index);
  info_.provider = "null";
  info_.port_active = true;
  info_.gid = verbs::Gid::FromIpv4(0x7f000001u + static_cast<uint32_t>(index));
  info_.active_mtu = IBV_MTU_4096;
  info_.max_qp_wr = 1 << 16;
  info_.max_cqe = 1 << 22;
  info_.max_mr_size = uint64_t{1} << 40;
}

common::Result<std::unique_ptr<verbs::ProtectionDomain>> NullDevice::AllocPd() {
  return std::unique_ptr<verbs::ProtectionDomain>(std::make_unique<NullPd>(this));
}

common::Result<std::unique_ptr<verbs::Cq>> NullDevice::CreateCq(int min_entries) {
  return std::unique_ptr<verbs::Cq>(std::make_unique<NullCq>(min_entries));
}

common::Result<std::vector<verbs::DeviceInfo>> NullProvider::ListDevices() {
  std::vector<verbs::DeviceInfo> out;
  for (int i = 0; i < devices_; ++i) out.push_back(NullDevice(i).info());
  if (out.empty()) return Status::NotFound("the null provider was made with no device");
  return out;
}

common::Result<std::unique_ptr<verbs::Device>> NullProvider::OpenDevice(std::string_view name) {
  for (int i = 0; i < devices_; ++i) {
    auto device = std::make_unique<NullDevice>(i);
    if (device->info().name == name) return std::unique_ptr<verbs::Device>(std::move(device));
  }
  return Status::NotFound("no null device named " + std::string(name.substr(0, 100)));
}

NullBaseline::NullBaseline() {
  cq_owner = std::move(device.CreateCq(4096)).value();
  cq = static_cast<NullCq*>(cq_owner.get());
  qp = std::make_unique<NullQp>(1, cq, cq, 16);
  (void)qp->ToInit({});
  (void)qp->ToRtr({});
  (void)qp->ToRts({});
  sge = {reinterpret_cast<uint64_t>(buffer), sizeof(buffer), 1};
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_SIGNALED;
}

}  // namespace braid::testing
