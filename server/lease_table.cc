#include "server/lease_table.h"

#include <string>

#include "dataplane/common/random_bytes.h"

namespace braid::server {
namespace {

uint64_t RandomId() {
  uint64_t id = 0;
  common::RandomBytes(&id, sizeof(id));
  return id >> 1;  // 63 bits: a lease id stays positive wherever it is read as signed
}

// `lease` in `leases` if it is `owner`'s; end() otherwise (missing or another's look the same).
template <typename Map>
auto Owned(Map& leases, uint64_t lease, engine::OwnerId owner) {
  auto it = leases.find(lease);
  return it != leases.end() && it->second.owner == owner ? it : leases.end();
}

}  // namespace

common::Result<LeaseTable::Ticket> LeaseTable::Open(engine::OwnerId owner,
                                                    std::weak_ptr<LeaseCall> call) {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& open = open_of_[owner];
  if (open >= per_owner_) {
    return common::Status::NoResource();  // the caller says whose and which limit
  }
  ++open;
  uint64_t id = 0;
  while (id == 0 || leases_.count(id) != 0) id = RandomId();
  const Ticket t{id, next_call_++};
  leases_.emplace(t.lease, Lease{owner, {}, t.call, false, std::move(call)});
  return t;
}

common::Result<LeaseTable::Ticket> LeaseTable::Resume(uint64_t lease, engine::OwnerId owner,
                                                      std::weak_ptr<LeaseCall> call) {
  std::shared_ptr<LeaseCall> previous;
  Ticket t{lease, 0};
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = Owned(leases_, lease, owner);
    if (it == leases_.end()) {
      return common::Status::NotFound(
          "lease " + std::to_string(lease) +
          " cannot be resumed: it ended (its Hold call ended more than lease_grace_ms ago, or "
          "the agent restarted) or is not the caller's; open a new Hold call");
    }
    previous = it->second.holder.lock();
    t.call = next_call_++;
    it->second.call = t.call;
    it->second.detached = false;
    it->second.holder = std::move(call);
  }
  if (previous) previous->Release("another Hold call took the lease over");
  return t;
}

common::Result<LeaseTable::Held> LeaseTable::End(uint64_t lease, engine::OwnerId owner) {
  std::shared_ptr<LeaseCall> holder;
  Held held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = Owned(leases_, lease, owner);
    if (it == leases_.end()) {
      return common::Status::NotFound("lease " + std::to_string(lease) +
                                      " is not open (or is not the caller's): nothing to end");
    }
    holder = it->second.holder.lock();
    held = EndLocked(it);
  }
  if (holder) holder->Release("the client ended its lease");
  return held;
}

common::Status LeaseTable::Check(uint64_t lease, engine::OwnerId owner) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = Owned(leases_, lease, owner);
  if (it == leases_.end()) {
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

LeaseTable::Held LeaseTable::CallEnded(Ticket ticket, bool keep) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(ticket.lease);
  if (it == leases_.end() || it->second.call != ticket.call) return {};  // taken over
  if (!keep) return EndLocked(it);
  it->second.detached = true;
  it->second.holder.reset();
  return {};
}

LeaseTable::Held LeaseTable::Expire(Ticket ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(ticket.lease);
  if (it == leases_.end() || it->second.call != ticket.call || !it->second.detached) return {};
  return EndLocked(it);
}

LeaseTable::Held LeaseTable::EndLocked(std::unordered_map<uint64_t, Lease>::iterator it) {
  Held held;
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
