#include "server/caller_budget.h"

#include <algorithm>
#include <utility>

namespace braid::server {

struct CallerBudget::Lease::State {
  std::mutex mu;
  std::unordered_map<engine::OwnerId, uint64_t> taken;  // guarded by mu; by owner
};

CallerBudget::CallerBudget(uint32_t full, uint32_t per_caller, uint32_t floor)
    : full_(full),
      per_caller_(per_caller),
      floor_(std::min(floor, full)),
      state_(std::make_shared<Lease::State>()) {}

CallerBudget::Lease CallerBudget::Take(engine::OwnerId owner) {
  Lease lease;
  lease.state_ = state_;
  lease.owner_ = owner;
  std::lock_guard<std::mutex> lock(state_->mu);
  uint64_t& taken = state_->taken[owner];
  const uint64_t left = per_caller_ > taken ? per_caller_ - taken : 0;
  lease.taken_ = static_cast<uint32_t>(std::min<uint64_t>(full_, left));
  lease.size_ = std::max(lease.taken_, floor_);
  taken += lease.taken_;
  return lease;
}

CallerBudget::Lease::Lease(Lease&& other) noexcept
    : state_(std::move(other.state_)),
      owner_(other.owner_),
      size_(other.size_),
      taken_(std::exchange(other.taken_, 0)) {}

CallerBudget::Lease& CallerBudget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Return();
    state_ = std::move(other.state_);
    owner_ = other.owner_;
    size_ = other.size_;
    taken_ = std::exchange(other.taken_, 0);
  }
  return *this;
}

CallerBudget::Lease::~Lease() { Return(); }

void CallerBudget::Lease::Return() {
  if (state_ == nullptr || taken_ == 0) return;
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->taken[owner_] -= taken_;
  taken_ = 0;
}

}  // namespace braid::server
