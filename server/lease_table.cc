#include "server/lease_table.h"

#include <string>

namespace braid::server {

common::Result<uint64_t> LeaseTable::Open(engine::OwnerId owner) {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& open = open_of_[owner];
  if (open >= per_owner_) {
    return common::Status::NoResource();  // the caller says whose and which limit
  }
  ++open;
  const uint64_t id = next_++;
  leases_.emplace(id, Lease{owner, {}});
  return id;
}

common::Status LeaseTable::Check(uint64_t lease, engine::OwnerId owner) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease);
  if (it == leases_.end() || it->second.owner != owner) {
    return common::Status::NotFound("lease " + std::to_string(lease) +
                                    " is not open: its Hold call ended (or never was the "
                                    "caller's); open a new Hold call and use its lease_id");
  }
  return common::Status::Ok();
}

bool LeaseTable::Add(uint64_t lease, Kind kind, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease);
  if (it == leases_.end()) return false;
  const auto k = static_cast<size_t>(kind);
  it->second.ids[k].insert(id);
  lease_of_[k][id] = lease;
  return true;
}

void LeaseTable::Forget(Kind kind, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto k = static_cast<size_t>(kind);
  auto of = lease_of_[k].find(id);
  if (of == lease_of_[k].end()) return;
  if (auto it = leases_.find(of->second); it != leases_.end()) it->second.ids[k].erase(id);
  lease_of_[k].erase(of);
}

LeaseTable::Held LeaseTable::End(uint64_t lease) {
  std::lock_guard<std::mutex> lock(mu_);
  Held held;
  auto it = leases_.find(lease);
  if (it == leases_.end()) return held;
  held.owner = it->second.owner;
  if (--open_of_[held.owner] == 0) open_of_.erase(held.owner);
  for (size_t k = 0; k < 2; ++k) {
    std::vector<uint64_t>& out = k == 0 ? held.vqps : held.regions;
    for (uint64_t id : it->second.ids[k]) {
      out.push_back(id);
      lease_of_[k].erase(id);
    }
  }
  leases_.erase(it);
  return held;
}

size_t LeaseTable::open() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leases_.size();
}

}  // namespace braid::server
