#include "tests/testutil/null_vqp_bed.h"

namespace braid::testing {

NullVqpBed::NullVqpBed(int devices, const vqp::VirtualQpConfig& config, int cq_entries)
    : buffer_(1 << 20) {
  std::vector<verbs::Device*> raw;
  std::vector<verbs::ProtectionDomain*> pds;
  for (int i = 0; i < devices; ++i) {
    devices_.push_back(std::make_unique<NullDevice>(i));
    pds_.push_back(std::move(devices_.back()->AllocPd()).value());
    raw.push_back(devices_.back().get());
    pds.push_back(pds_.back().get());
  }
  auto cq = vqp::VirtualCq::Create(raw, cq_entries);
  auto peer_cq = vqp::VirtualCq::Create(raw, cq_entries);
  if (!cq.ok() || !peer_cq.ok()) {
    status_ = cq.ok() ? peer_cq.status() : cq.status();
    return;
  }
  cq_ = std::move(cq).value();
  peer_cq_ = std::move(peer_cq).value();
  auto a = vqp::VirtualQp::Create(*cq_, pds, config);
  auto b = vqp::VirtualQp::Create(*peer_cq_, pds, config);
  if (!a.ok() || !b.ok()) {
    status_ = a.ok() ? b.status() : a.status();
    return;
  }
  vqp_ = std::move(a).value();
  peer_ = std::move(b).value();
  status_ = vqp_->Connect(peer_->LocalCard());
  if (!status_.ok()) return;
  std::vector<uint32_t> keys(static_cast<size_t>(devices), 0x1234);
  auto l = vqp_->AddLocalKeys(keys);
  auto r = vqp_->AddRemoteKeys(keys);
  if (!l.ok() || !r.ok()) {
    status_ = l.ok() ? r.status() : l.status();
    return;
  }
  local_keys_ = *l;
  remote_keys_ = *r;
}

NullVqpBed::~NullVqpBed() {
  vqp_.reset();
  peer_.reset();
  cq_.reset();
  peer_cq_.reset();
  pds_.clear();
}

NullQp& NullVqpBed::qp(int i) {
  // Physical QP i was created on device (i's device); find it by QP number there.
  const int d = vqp_->physical_device(i);
  const uint32_t qpn = vqp_->physical_qp(i).qp_num();
  for (NullQp* q : devices_[static_cast<size_t>(d)]->qps()) {
    if (q->qp_num() == qpn && q == &vqp_->physical_qp(i)) return *q;
  }
  return *devices_[static_cast<size_t>(d)]->qps().front();
}

vqp::VirtualSendWr NullVqpBed::Write(uint64_t wr_id, uint64_t length, ibv_wr_opcode op) {
  vqp::VirtualSendWr wr;
  wr.wr_id = wr_id;
  wr.opcode = op;
  wr.local_addr = reinterpret_cast<uint64_t>(buffer_.data());
  wr.length = length;
  wr.local_keys = local_keys_;
  wr.remote_addr = 0x10000;
  wr.remote_keys = remote_keys_;
  return wr;
}

}  // namespace braid::testing
