#include "tests/testutil/vqp_testbed.h"

#include <random>
#include <string>

namespace braid::testing {

VqpTestbed::VqpTestbed(int nics, const vqp::VirtualQpConfig& config, uint8_t* buffer_a,
                       uint8_t* buffer_b, size_t buffer_bytes, soft::SimFabricOptions fabric,
                       int cq_entries)
    : fabric_(fabric) {
  Init(nics, config, buffer_a, buffer_b, buffer_bytes, cq_entries);
}

VqpTestbed::VqpTestbed(int nics, const vqp::VirtualQpConfig& config, size_t buffer_bytes,
                       soft::SimFabricOptions fabric, int cq_entries)
    : fabric_(fabric) {
  owned_[0].assign(buffer_bytes, 0);
  owned_[1].assign(buffer_bytes, 0);
  Init(nics, config, owned_[0].data(), owned_[1].data(), buffer_bytes, cq_entries);
}

void VqpTestbed::Fill(int host, size_t offset, size_t length, uint32_t seed) {
  std::mt19937 rng(seed);
  uint8_t* p = data(host) + offset;
  for (size_t i = 0; i < length; ++i) p[i] = static_cast<uint8_t>(rng());
}

void VqpTestbed::Init(int nics, const vqp::VirtualQpConfig& config, uint8_t* buffer_a,
                      uint8_t* buffer_b, size_t buffer_bytes, int cq_entries) {
  soft::SoftProviderOptions po;
  po.fabric = &fabric_;
  for (int i = 0; i < 2 * nics; ++i) {
    po.nics.push_back({"soft" + std::to_string(i), "127.0.0." + std::to_string(i + 1)});
  }
  provider_ = std::make_unique<soft::SoftProvider>(po);
  status_ = Build(hosts_[0], 0, nics, config, buffer_a, buffer_bytes, cq_entries);
  if (!status_.ok()) return;
  status_ = Build(hosts_[1], nics, nics, config, buffer_b, buffer_bytes, cq_entries);
  if (!status_.ok()) return;
  status_ = a().vqp->Connect(b().vqp->LocalCard());
  if (!status_.ok()) return;
  status_ = b().vqp->Connect(a().vqp->LocalCard());
  if (!status_.ok()) return;
  for (int h = 0; h < 2; ++h) {
    VqpHost& self = hosts_[h];
    VqpHost& peer = hosts_[1 - h];
    std::vector<uint32_t> lkeys, rkeys;
    for (auto& mr : self.mrs) lkeys.push_back(mr->lkey());
    for (auto& mr : peer.mrs) rkeys.push_back(mr->rkey());
    auto l = self.vqp->AddLocalKeys(lkeys);
    auto r = self.vqp->AddRemoteKeys(rkeys);
    if (!l.ok() || !r.ok()) {
      status_ = l.ok() ? r.status() : l.status();
      return;
    }
    self.local_keys = *l;
    self.remote_keys = *r;
  }
}

VqpTestbed::~VqpTestbed() {
  for (VqpHost& h : hosts_) h.vqp.reset();  // both VQPs before any CQ
  for (VqpHost& h : hosts_) {
    h.cq.reset();
    h.mrs.clear();
    h.pds.clear();
    h.devices.clear();
  }
}

common::Status VqpTestbed::Build(VqpHost& h, int first_nic, int nics,
                                 const vqp::VirtualQpConfig& config, uint8_t* buffer, size_t bytes,
                                 int cq_entries) {
  h.buffer = buffer;
  std::vector<verbs::Device*> devices;
  std::vector<verbs::ProtectionDomain*> pds;
  for (int i = 0; i < nics; ++i) {
    BRAID_ASSIGN_OR_RETURN(auto device,
                           provider_->OpenDevice("soft" + std::to_string(first_nic + i)));
    BRAID_ASSIGN_OR_RETURN(auto pd, device->AllocPd());
    BRAID_ASSIGN_OR_RETURN(
        auto mr, pd->RegisterMemory(buffer, bytes,
                                    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                        IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC));
    devices.push_back(device.get());
    pds.push_back(pd.get());
    h.devices.push_back(std::move(device));
    h.pds.push_back(std::move(pd));
    h.mrs.push_back(std::move(mr));
  }
  BRAID_ASSIGN_OR_RETURN(h.cq, vqp::VirtualCq::Create(devices, cq_entries));
  BRAID_ASSIGN_OR_RETURN(h.vqp, vqp::VirtualQp::Create(*h.cq, pds, config));
  return common::Status::Ok();
}

vqp::VirtualSendWr VqpTestbed::Wr(int from, ibv_wr_opcode opcode, uint64_t local_offset,
                                  uint64_t length, uint64_t remote_offset, uint64_t wr_id,
                                  uint32_t imm) {
  VqpHost& self = host(from);
  VqpHost& peer = host(1 - from);
  vqp::VirtualSendWr wr;
  wr.wr_id = wr_id;
  wr.opcode = opcode;
  wr.local_addr = self.addr(local_offset);
  wr.length = length;
  wr.local_keys = self.local_keys;
  wr.remote_addr = peer.addr(remote_offset);
  wr.remote_keys = self.remote_keys;
  wr.imm_data = imm;
  return wr;
}

std::vector<vqp::VirtualWc> VqpTestbed::Poll(int h, size_t count, int max_rounds) {
  std::vector<vqp::VirtualWc> out;
  for (int i = 0; i < max_rounds && backlog_[h].size() < count; ++i) {
    PollBoth(1, &backlog_[0], &backlog_[1]);
  }
  const size_t n = std::min(count, backlog_[h].size());
  out.assign(backlog_[h].begin(), backlog_[h].begin() + static_cast<std::ptrdiff_t>(n));
  backlog_[h].erase(backlog_[h].begin(), backlog_[h].begin() + static_cast<std::ptrdiff_t>(n));
  return out;
}

void VqpTestbed::PollBoth(int rounds, std::vector<vqp::VirtualWc>* a,
                          std::vector<vqp::VirtualWc>* b) {
  vqp::VirtualWc wc[32];
  for (int i = 0; i < rounds; ++i) {
    auto n = hosts_[0].cq->Poll(wc);
    if (n.ok()) a->insert(a->end(), wc, wc + *n);
    n = hosts_[1].cq->Poll(wc);
    if (n.ok()) b->insert(b->end(), wc, wc + *n);
  }
}

common::Status VqpTestbed::RecoverQp(int index) {
  vqp::VirtualQp& va = *hosts_[0].vqp;
  vqp::VirtualQp& vb = *hosts_[1].vqp;
  BRAID_RETURN_IF_ERROR(va.BeginReset(index));
  BRAID_RETURN_IF_ERROR(vb.BeginReset(index));
  for (int i = 0; i < 1000 && !(va.ResetReady(index) && vb.ResetReady(index)); ++i) {
    PollBoth(10, &backlog_[0], &backlog_[1]);
  }
  auto ca = va.ResetQp(index, 0x1000 + static_cast<uint32_t>(index));
  BRAID_RETURN_IF_ERROR(ca.status());
  auto cb = vb.ResetQp(index, 0x2000 + static_cast<uint32_t>(index));
  BRAID_RETURN_IF_ERROR(cb.status());
  BRAID_RETURN_IF_ERROR(va.ReconnectQp(index, *cb));
  BRAID_RETURN_IF_ERROR(vb.ReconnectQp(index, *ca));
  auto probing = [index](const vqp::VirtualQp& v) {
    return v.health(index) == vqp::QpHealth::kDraining && v.outstanding(index) > 0;
  };
  for (int i = 0; i < 1000 && (probing(va) || probing(vb)); ++i) {
    PollBoth(10, &backlog_[0], &backlog_[1]);
  }
  if (probing(va) || probing(vb)) return common::Status::Internal("a probe never came back");
  return common::Status::Ok();
}

}  // namespace braid::testing
