// ClaimLedger: bytes held for things being made, so that those made at once cannot all take the
// same room. Take, under the ledger's lock, reads the room free now, holds the bytes if they fit
// beside those already held, and hands back a ByteClaim that gives them back when it ends (once
// the thing is made and whatever counts its room, a file system or a memory cgroup, counts it).
// Used by RegionDir (its file system's space) and MemoryRoom (the memory cgroup's limit).
// Threading: any thread (Take takes a lock). A ByteClaim must not outlive its ledger; it may end
// on any thread.
#ifndef BRAID_DATAPLANE_ENGINE_CLAIM_LEDGER_H_
#define BRAID_DATAPLANE_ENGINE_CLAIM_LEDGER_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>

#include "dataplane/common/result.h"

namespace braid::engine {

class ByteClaim {
 public:
  ByteClaim() = default;
  ByteClaim(ByteClaim&& other) noexcept : held_(other.held_), bytes_(other.bytes_) {
    other.held_ = nullptr;
  }
  ByteClaim& operator=(ByteClaim&& other) noexcept {
    if (this != &other) {
      Release();
      held_ = other.held_;
      bytes_ = other.bytes_;
      other.held_ = nullptr;
    }
    return *this;
  }
  ByteClaim(const ByteClaim&) = delete;
  ByteClaim& operator=(const ByteClaim&) = delete;
  ~ByteClaim() { Release(); }
  void Release() {
    if (held_ != nullptr) held_->fetch_sub(bytes_, std::memory_order_relaxed);
    held_ = nullptr;
  }

 private:
  friend class ClaimLedger;
  ByteClaim(std::atomic<uint64_t>* held, uint64_t bytes) : held_(held), bytes_(bytes) {
    held_->fetch_add(bytes_, std::memory_order_relaxed);
  }
  std::atomic<uint64_t>* held_ = nullptr;
  uint64_t bytes_ = 0;
};

class ClaimLedger {
 public:
  // `free()` gives the room free now: a Result of an optional (nullopt: unbounded). `bytes` are
  // held when they fit beside the bytes held already; otherwise `refuse(free, held)` is the answer.
  template <typename Free, typename Refuse>
  common::Result<ByteClaim> Take(uint64_t bytes, Free&& free, Refuse&& refuse) {
    std::lock_guard<std::mutex> lock(mu_);
    BRAID_ASSIGN_OR_RETURN(const std::optional<uint64_t> now, free());
    const uint64_t held = held_.load(std::memory_order_relaxed);
    if (now.has_value() && (*now < held || *now - held < bytes)) return refuse(*now, held);
    return ByteClaim(&held_, bytes);
  }

 private:
  std::mutex mu_;  // one Take at a time: each sees the others' claims
  std::atomic<uint64_t> held_ = 0;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_CLAIM_LEDGER_H_
