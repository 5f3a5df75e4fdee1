// MemoryRoom: what the agent may still take in memory under its memory cgroup's limit, and the
// bytes held for what is being made.
//
// Pages of shared memory the agent makes (region files on tmpfs, session segments) are charged to
// its memory cgroup, and at the limit the kernel does not refuse a page: it OOM-kills the largest
// process in the cgroup, the agent, with every VQP and region of every client. So such memory is
// taken at once when made (posix_fallocate) and admitted first: Take says whether `bytes` fit
// under the tightest limit (MemoryCgroup) less the reserve the agent keeps for its own work,
// beside the bytes other Takes hold, and holds them (a ByteClaim, ClaimLedger) until the pages are
// taken and the cgroup counts them. Without a limit everything fits.
// Threading: any thread.
#ifndef BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_
#define BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_

#include <cstdint>
#include <string_view>

#include "dataplane/common/result.h"
#include "dataplane/engine/claim_ledger.h"
#include "dataplane/engine/memory_cgroup.h"

namespace braid::engine {

class MemoryRoom {
 public:
  // `reserve`: what the agent keeps under its memory limit for its own work (its heap, gRPC's
  // buffers, stream queues), which the pages it makes for clients may not take.
  explicit MemoryRoom(uint64_t reserve, MemoryCgroup cgroup = MemoryCgroup())
      : reserve_(reserve), cgroup_(std::move(cgroup)) {}
  MemoryRoom(const MemoryRoom&) = delete;
  MemoryRoom& operator=(const MemoryRoom&) = delete;

  struct Figures {
    uint64_t limit = 0;  // 0: none
    uint64_t room = 0;   // what new memory may still take under it, less the reserve
  };
  // Now, from the cgroup's files; bytes held by claims are not subtracted.
  Figures Read() const;
  // Holds `bytes` if they fit now (see above); otherwise kNoResource naming `what` ("a region of
  // 67108864 bytes"), the limit and what it leaves.
  common::Result<ByteClaim> Take(uint64_t bytes, std::string_view what);

 private:
  const uint64_t reserve_;
  MemoryCgroup cgroup_;
  ClaimLedger claims_;  // bytes claimed, their pages not yet taken
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_MEMORY_ROOM_H_
