#include "dataplane/vqp/virtual_cq.h"

#include <cstdio>
#include <string>

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

using common::Status;

common::Result<std::unique_ptr<VirtualCq>> VirtualCq::Create(
    std::span<verbs::Device* const> devices, int entries_per_device) {
  if (devices.empty() || devices.size() > kMaxDevices) {
    return Status::InvalidArgument("a virtual CQ spans 1 to 32 devices");
  }
  auto cq = std::make_unique<VirtualCq>(CreateKey(),
                                       std::vector<verbs::Device*>(devices.begin(), devices.end()));
  for (verbs::Device* device : devices) {
    if (device == nullptr) return Status::InvalidArgument("null device");
    BRAID_ASSIGN_OR_RETURN(auto physical, device->CreateCq(entries_per_device));
    cq->cqs_.push_back(std::move(physical));
    cq->reserved_.push_back(0);
  }
  return cq;
}

VirtualCq::~VirtualCq() {
  if (!routes_.empty()) {
    // N14: a CQ destroyed under live VQPs would leave them dangling. The owner destroys VQPs first;
    // report the misuse rather than crash.
    std::fprintf(stderr, "braid: VirtualCq destroyed with %zu physical QPs still registered\n",
                 routes_.size());
  }
}

Status VirtualCq::Reserve(int device, uint32_t entries) {
  uint32_t& r = reserved_[static_cast<size_t>(device)];
  const auto capacity = static_cast<uint32_t>(cqs_[static_cast<size_t>(device)]->capacity());
  if (uint64_t{r} + entries > capacity) {
    return Status::FailedPrecondition(
        "physical CQ of device " + devices_[static_cast<size_t>(device)]->info().name + " holds " +
        std::to_string(capacity) + " entries; " + std::to_string(r) + " are reserved and this VQP needs " +
        std::to_string(entries) + " more");
  }
  r += entries;
  return Status::Ok();
}

void VirtualCq::Release(int device, uint32_t entries) {
  reserved_[static_cast<size_t>(device)] -= entries;
}

void VirtualCq::Register(int device, uint32_t qp_num, VirtualQp* vqp, uint16_t qp_index) {
  routes_[Key(device, qp_num)] = Route{vqp, qp_index};
}

void VirtualCq::Unregister(int device, uint32_t qp_num) { routes_.erase(Key(device, qp_num)); }

void VirtualCq::AddReadyCapacity(size_t entries) {
  ready_needed_ += entries;
  if (ready_needed_ <= ready_.size()) return;
  std::vector<VirtualWc> grown(ready_needed_ * 2);
  for (size_t i = 0; i < ready_count_; ++i) grown[i] = ready_[(ready_head_ + i) % ready_.size()];
  ready_ = std::move(grown);
  ready_head_ = 0;
}

void VirtualCq::RemoveReadyCapacity(size_t entries) { ready_needed_ -= entries; }

void VirtualCq::Emit(const VirtualWc& wc) {
  if (ready_count_ == ready_.size()) {
    // Capacity is reserved per VQP at creation, so this cannot happen; never lose silently.
    pending_error_ = Status::Internal("virtual completion ring overflowed");
    return;
  }
  ready_[(ready_head_ + ready_count_) % ready_.size()] = wc;
  ++ready_count_;
}

int VirtualCq::TakeReady(std::span<VirtualWc> out) {
  int n = 0;
  while (ready_count_ > 0 && static_cast<size_t>(n) < out.size()) {
    out[static_cast<size_t>(n++)] = ready_[ready_head_];
    ready_head_ = (ready_head_ + 1) % ready_.size();
    --ready_count_;
  }
  return n;
}

void VirtualCq::PollPhysical() {
  for (size_t d = 0; d < cqs_.size(); ++d) {
    common::Result<int> got = cqs_[d]->Poll(batch_);
    if (!got.ok()) {
      pending_error_ = got.status();
      continue;
    }
    for (int i = 0; i < *got; ++i) {
      const ibv_wc& wc = batch_[static_cast<size_t>(i)];
      auto it = routes_.find(Key(static_cast<int>(d), wc.qp_num));
      if (it == routes_.end()) {
        ++unrouted_;
        continue;
      }
      it->second.vqp->OnCompletion(it->second.qp_index, wc);
    }
  }
}

common::Result<int> VirtualCq::Poll(std::span<VirtualWc> out) {
  int n = TakeReady(out);
  // N1: what was harvested before an error goes out first; the error on the following call,
  // before anything new is polled.
  if (n == 0 && !pending_error_.ok()) {
    Status error = std::move(pending_error_);
    pending_error_ = Status::Ok();
    return error;
  }
  if (static_cast<size_t>(n) < out.size() && pending_error_.ok()) {
    PollPhysical();
    n += TakeReady(out.subspan(static_cast<size_t>(n)));
  }
  if (n == 0 && !pending_error_.ok()) {
    Status error = std::move(pending_error_);
    pending_error_ = Status::Ok();
    return error;
  }
  return n;
}

}  // namespace braid::vqp
