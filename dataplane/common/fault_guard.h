// FaultGuard: keeps the agent running when a client cuts short a file the agent has mapped.
//
// A file in /dev/shm or on hugetlbfs cannot be sealed, so whoever may write it (a client's own
// file, or the agent's region file its client opened) may truncate it while the agent maps it; a
// CPU access to a page past the new end then raises SIGBUS, which would kill the agent and every
// other client with it. A guarded range is one such mapping. On the first fault inside it, a
// process-wide SIGBUS handler replaces the whole range with private anonymous pages (zero-filled,
// no longer the client's file), marks the guard cut short, and the faulting access goes on with
// those pages. Kernel copies into or out of the range (sendmsg, readv) fail with EFAULT instead of
// raising the signal: Repair() touches the guarded pages an iovec names so the same replacement
// happens, and the call can be made again.
//
// After the cut nothing the agent writes reaches the client's file and what it reads is zeros:
// the owner of the range asks cut_short() and fails the transfers that used it. A fault outside
// every guarded range goes to the handler installed before the first guard (by default the
// process dies, as it would without the guard).
//
// Threading: Guard() and the destructor from any thread; cut_short() and Repair() from any thread;
// the handler runs on the faulting thread. A range must not be unguarded while an access to it is
// under way (the engine lets a region go only after its transfers' completions).
// Ownership: RAII; the destructor ends the guard. It never maps or unmaps the range itself except
// to replace it after a fault.
#ifndef BRAID_DATAPLANE_COMMON_FAULT_GUARD_H_
#define BRAID_DATAPLANE_COMMON_FAULT_GUARD_H_

#include <sys/uio.h>

#include <cstddef>
#include <memory>

#include "dataplane/common/result.h"

namespace braid::common {

class FaultGuard {
 public:
  // The most ranges guarded at once in one process.
  static constexpr size_t kMaxGuards = 65536;  // a mapping each: vm.max_map_count's order

  // Guards [addr, addr + length): `addr` is the start of a MAP_SHARED mapping of that length.
  // kNoResource when kMaxGuards ranges are guarded already.
  static Result<std::unique_ptr<FaultGuard>> Guard(void* addr, size_t length);
  ~FaultGuard();
  FaultGuard(const FaultGuard&) = delete;
  FaultGuard& operator=(const FaultGuard&) = delete;

  // True once a fault inside the range has replaced it (its file was cut short under it).
  bool cut_short() const;

  // After a kernel copy over `iov` failed with EFAULT: touches the guarded pages it names, so a
  // range whose file was cut short is replaced, and says whether any range it touches is cut
  // short (then the copy can be made again). False: the fault is not a guarded range's.
  static bool Repair(const iovec* iov, size_t count);

  explicit FaultGuard(size_t slot) : slot_(slot) {}

 private:
  size_t slot_;
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_FAULT_GUARD_H_
