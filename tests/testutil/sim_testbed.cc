#include "tests/testutil/sim_testbed.h"

#include <string>

namespace braid::testing {

SimTestbed::SimTestbed(int num_nics, size_t buffer_bytes, soft::SimFabricOptions options,
                       int cq_entries)
    : fabric_(options) {
  soft::SoftProviderOptions po;
  po.fabric = &fabric_;
  for (int i = 0; i < num_nics; ++i) {
    po.nics.push_back({"soft" + std::to_string(i), "127.0.0." + std::to_string(i + 1)});
  }
  provider_ = std::make_unique<soft::SoftProvider>(po);
  for (const soft::SoftNicConfig& cfg : po.nics) {
    auto nic = std::make_unique<SimNic>();
    auto device = provider_->OpenDevice(cfg.name);
    if (!device.ok()) {
      status_ = device.status();
      return;
    }
    nic->device = std::move(device).value();
    nic->pd = std::move(nic->device->AllocPd()).value();
    auto cq = nic->device->CreateCq(cq_entries);
    if (!cq.ok()) {
      status_ = cq.status();
      return;
    }
    nic->cq = std::move(cq).value();
    nic->storage.assign((buffer_bytes + 7) / 8, 0);
    auto mr = nic->pd->RegisterMemory(nic->data(), buffer_bytes,
                                      IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                          IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC);
    if (!mr.ok()) {
      status_ = mr.status();
      return;
    }
    nic->mr = std::move(mr).value();
    nics_.push_back(std::move(nic));
  }
}

SimTestbed::~SimTestbed() = default;

common::Result<SimQpPair> SimTestbed::Connect(int a, int b, const verbs::QpCaps& caps,
                                              const RcOptions& options) {
  SimNic& na = nic(a);
  SimNic& nb = nic(b);
  BRAID_ASSIGN_OR_RETURN(auto qa, na.pd->CreateQp({na.cq.get(), na.cq.get(), caps, false}));
  BRAID_ASSIGN_OR_RETURN(auto qb, nb.pd->CreateQp({nb.cq.get(), nb.cq.get(), caps, false}));
  BRAID_RETURN_IF_ERROR(ConnectRc(*qa, na.device->info(), *qb, nb.device->info(), options));
  return SimQpPair{std::move(qa), std::move(qb)};
}

}  // namespace braid::testing
