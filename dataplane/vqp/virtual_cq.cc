#include "dataplane/vqp/virtual_cq.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <string>

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

using common::Status;

common::Result<std::unique_ptr<VirtualCq>> VirtualCq::Create(
    std::span<verbs::Device* const> devices, int entries_per_device,
    uint32_t max_entries_per_device) {
  if (devices.empty() || devices.size() > kMaxDevices) {
    return Status::InvalidArgument("a virtual CQ spans 1 to 32 devices");
  }
  auto cq = std::make_unique<VirtualCq>(
      CreateKey(), std::vector<verbs::Device*>(devices.begin(), devices.end()));
  for (verbs::Device* device : devices) {
    if (device == nullptr) return Status::InvalidArgument("null device");
    BRAID_ASSIGN_OR_RETURN(auto physical, device->CreateCq(entries_per_device));
    const uint32_t first = static_cast<uint32_t>(physical->capacity());
    uint32_t limit = std::max(first, max_entries_per_device);
    if (device->info().max_cqe > 0)
      limit = std::max(first, std::min(limit, device->info().max_cqe));
    cq->cqs_.push_back(std::move(physical));
    cq->reserved_.push_back(0);
    cq->initial_.push_back(first);
    cq->limits_.push_back(limit);
  }
  return cq;
}

VirtualCq::~VirtualCq() {
  if (!routes_.empty()) {
    // Owners destroy what they own, once: a CQ destroyed under live VQPs would leave them dangling.
    // The owner destroys VQPs first; report the misuse rather than crash.
    std::fprintf(stderr, "braid: VirtualCq destroyed with %zu physical QPs still registered\n",
                 routes_.size());
  }
}

Status VirtualCq::CheckRoom(int device, uint64_t entries) const {
  const uint64_t r = reserved_[static_cast<size_t>(device)];
  const uint64_t cap = limit(device);
  if (r + entries <= cap) return Status::Ok();
  return Status::NoResource("device " + devices_[static_cast<size_t>(device)]->info().name +
                            " has " + std::to_string(cap - r) + " of its " + std::to_string(cap) +
                            " completion entries free and this VQP needs " +
                            std::to_string(entries) +
                            ": destroy VQPs no longer used, or create a smaller one");
}

Status VirtualCq::Reserve(int device, uint32_t entries) {
  BRAID_RETURN_IF_ERROR(CheckRoom(device, entries));
  const size_t d = static_cast<size_t>(device);
  const uint64_t needed = uint64_t{reserved_[d]} + entries;
  if (needed > capacity(device)) {
    // Grow geometrically, so N VQPs cost O(log N) resizes.
    const uint64_t target =
        std::min<uint64_t>(limit(device), std::max<uint64_t>(needed, 2ull * capacity(device)));
    Status s = cqs_[d]->Resize(static_cast<int>(target));
    if (!s.ok()) {
      return Status::NoResource("the completion queue of device " + devices_[d]->info().name +
                                " could not grow to " + std::to_string(target) + " entries (" +
                                std::string(s.message()) + ")");
    }
  }
  reserved_[d] += entries;
  return Status::Ok();
}

void VirtualCq::Release(int device, uint32_t entries) {
  const size_t d = static_cast<size_t>(device);
  reserved_[d] -= entries;
  // Shrink to half once no more than a quarter is reserved (hysteresis against flapping), never
  // below the first size. The CQ keeps what it holds; a refusal just leaves it larger.
  const uint64_t cap = capacity(device);
  if (cap > initial_[d] && uint64_t{reserved_[d]} * 4 <= cap) {
    const uint64_t target = std::max<uint64_t>(initial_[d], cap / 2);
    (void)cqs_[d]->Resize(static_cast<int>(target));
  }
}

namespace {
constexpr size_t kMinTable = 16;
uint64_t Hash(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 17; }
}  // namespace

// Routes change one QP at a time: insert into and delete from the table in place, rebuilding
// only when it needs to grow (at half full), so creating N VQPs costs O(N), not O(N^2).
void VirtualCq::Register(int device, uint32_t qp_num, VirtualQp* vqp, uint16_t qp_index) {
  const uint64_t key = Key(device, qp_num);
  if (FindRoute(key) != nullptr) Unregister(device, qp_num);
  const Route route{key, vqp, qp_index};
  routes_.push_back(route);
  if (routes_.size() * 2 > table_.size()) {
    RebuildRoutes();
    return;
  }
  for (uint64_t i = Hash(key);; ++i) {
    Route& slot = table_[i & table_mask_];
    if (slot.key == 0) {
      slot = route;
      return;
    }
  }
}

void VirtualCq::Unregister(int device, uint32_t qp_num) {
  const uint64_t key = Key(device, qp_num);
  std::erase_if(routes_, [key](const Route& r) { return r.key == key; });
  if (table_.size() > kMinTable && routes_.size() * 8 < table_.size()) {
    // Down to an eighth full: the table and the list shrink with the QPs (a rebuild sizes the
    // table for four times the routes, so growing again takes a doubling of the routes).
    if (routes_.capacity() > 2 * routes_.size()) routes_.shrink_to_fit();
    RebuildRoutes();
    return;
  }
  // Linear probing: empty the slot, then move back every later entry of the run that may no
  // longer be reachable past the hole.
  uint64_t hole = Hash(key) & table_mask_;
  while (table_[hole].key != key) {
    if (table_[hole].key == 0) return;  // not in the table
    hole = (hole + 1) & table_mask_;
  }
  table_[hole] = Route{};
  for (uint64_t j = (hole + 1) & table_mask_; table_[j].key != 0; j = (j + 1) & table_mask_) {
    const uint64_t home = Hash(table_[j].key) & table_mask_;
    // The entry at j stays if its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    table_[hole] = table_[j];
    table_[j] = Route{};
    hole = j;
  }
}

void VirtualCq::RebuildRoutes() {
  const size_t size = std::bit_ceil(std::max<size_t>(kMinTable, routes_.size() * 4));
  table_ = std::vector<Route>(size);  // a new vector: a smaller table releases the old storage
  table_mask_ = size - 1;
  for (const Route& r : routes_) {
    for (uint64_t i = Hash(r.key);; ++i) {
      Route& slot = table_[i & table_mask_];
      if (slot.key == 0) {
        slot = r;
        break;
      }
    }
  }
}

const VirtualCq::Route* VirtualCq::FindRoute(uint64_t key) const {
  for (uint64_t i = Hash(key);; ++i) {
    const Route& slot = table_[i & table_mask_];
    if (slot.key == key) return &slot;
    if (slot.key == 0) return nullptr;
  }
}

void VirtualCq::ResizeReady(size_t size) {
  auto ring = std::make_unique_for_overwrite<ReadySlot[]>(size);  // untouched: see ReadySlot
  for (size_t i = 0; i < ready_count_; ++i) ring[i] = ready_[(ready_head_ + i) & ready_mask_];
  ready_ = std::move(ring);
  ready_size_ = size;
  ready_mask_ = size - 1;
  ready_head_ = 0;
}

void VirtualCq::AddReadyCapacity(size_t entries) {
  ready_needed_ += entries;
  if (ready_needed_ > ready_size_) ResizeReady(std::bit_ceil(ready_needed_ * 2));
}

void VirtualCq::RemoveReadyCapacity(size_t entries) {
  ready_needed_ -= entries;
  // Halve once no more than a quarter is needed (what is pending always fits: it is within what
  // is needed).
  if (ready_size_ > 64 && ready_needed_ * 4 <= ready_size_ && ready_count_ <= ready_size_ / 2) {
    ResizeReady(ready_size_ / 2);
  }
}

void VirtualCq::EmitOverflow() {
  // Capacity is reserved per VQP at creation, so this cannot happen; never lose silently.
  pending_error_ = Status::Internal("virtual completion ring overflowed");
}

int VirtualCq::TakeReady(std::span<VirtualWc> out) {
  int n = 0;
  while (ready_count_ > 0 && static_cast<size_t>(n) < out.size()) {
    std::memcpy(static_cast<void*>(&out[static_cast<size_t>(n++)]), &ready_[ready_head_],
                sizeof(VirtualWc));
    ready_head_ = (ready_head_ + 1) & ready_mask_;
    --ready_count_;
  }
  if (ready_count_ == 0) ready_head_ = 0;  // the next burst starts on the pages already used
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
      const Route* route = FindRoute(Key(static_cast<int>(d), wc.qp_num));
      if (route == nullptr) {
        ++unrouted_;
        continue;
      }
      route->vqp->OnCompletion(route->qp_index, wc);
    }
  }
}

common::Result<int> VirtualCq::Poll(std::span<VirtualWc> out) {
  int n = TakeReady(out);
  // Every virtual WR completes once: what was harvested before an error goes out first; the error
  // on the following call, before anything new is polled.
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
