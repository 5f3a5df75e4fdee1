// MemoryRoom: what the agent may still take in memory under its memory cgroup's limit, and the
// bytes held for what is being made.
//
// Pages of shared memory the agent makes (region files on tmpfs, session segments) are charged to
// its memory cgroup, and at the limit the kernel does not refuse a page: it OOM-kills the largest
// process in the cgroup, the agent, with every VQP and region of every client. So such memory is
// taken at once when made (posix_fallocate) and admitted first: Take says whether `bytes` fit
// under the tightest limit (MemoryCgroup) less kHeadroom, which the agent keeps for its own work,
// beside the bytes other Takes hold, and holds them (a ByteClaim) until the pages are taken and
// the cgroup counts them. Without a limit everything fits.
// Threading: any thread (Take takes a lock). A ByteClaim must not outlive what it was taken from;
// it may end on any thread.
#ifndef BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_
#define BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string_view>

#include "dataplane/common/result.h"
#include "dataplane/engine/memory_cgroup.h"

namespace braid::engine {

// Bytes held in a counter while something is being made; given back when it ends.
class ByteClaim {
 public:
  ByteClaim() = default;
  ByteClaim(std::atomic<uint64_t>* held, uint64_t bytes) : held_(held), bytes_(bytes) {
    held_->fetch_add(bytes_, std::memory_order_relaxed);
  }
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
  std::atomic<uint64_t>* held_ = nullptr;
  uint64_t bytes_ = 0;
};

class MemoryRoom {
 public:
  // What the agent keeps under its memory limit for its own work.
  static constexpr uint64_t kHeadroom = 256ull << 20;

  explicit MemoryRoom(MemoryCgroup cgroup = MemoryCgroup()) : cgroup_(std::move(cgroup)) {}
  MemoryRoom(const MemoryRoom&) = delete;
  MemoryRoom& operator=(const MemoryRoom&) = delete;

  struct Figures {
    uint64_t limit = 0;  // 0: none
    uint64_t room = 0;   // what new memory may still take under it, less the headroom
  };
  // Now, from the cgroup's files; bytes held by claims are not subtracted.
  Figures Read() const;
  // Holds `bytes` if they fit now (see above); otherwise kNoResource naming `what` ("a region of
  // 67108864 bytes"), the limit and what it leaves.
  common::Result<ByteClaim> Take(uint64_t bytes, std::string_view what);

 private:
  MemoryCgroup cgroup_;
  std::mutex take_mu_;              // one Take at a time: each sees the others' claims
  std::atomic<uint64_t> held_ = 0;  // bytes claimed, their pages not yet taken
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_
