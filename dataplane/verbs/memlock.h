// Memlock: how much memory this process may pin, as the kernel counts it for ibv_reg_mr.
//
// Registering memory with an HCA pins its pages, and the kernel counts every registration's pages
// (again for each protection domain a buffer is registered in) against the soft RLIMIT_MEMLOCK,
// unless the process has CAP_IPC_LOCK. Past the limit ibv_reg_mr fails with ENOMEM, which says
// nothing of the limit; distributions and container runtimes default it to 64 KiB or 8 MiB, so a
// real agent without the capability can register next to nothing. The agent raises the soft limit
// to the hard one at start, logs both, and says which limit stopped a registration.
// Threading: any thread; the functions read the process's limits and capabilities each call.
#ifndef BRAID_DATAPLANE_VERBS_MEMLOCK_H_
#define BRAID_DATAPLANE_VERBS_MEMLOCK_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "dataplane/common/result.h"
#include "dataplane/common/status.h"

namespace braid::verbs {

inline constexpr uint64_t kUnlimitedMemlock = UINT64_MAX;

struct MemlockLimit {
  uint64_t soft = kUnlimitedMemlock;  // bytes
  uint64_t hard = kUnlimitedMemlock;
  bool ipc_lock = false;  // CAP_IPC_LOCK in the effective set: no limit applies
  // Whether pinning is bounded: the soft limit, unless the capability lifts it.
  bool bounded() const { return !ipc_lock && soft != kUnlimitedMemlock; }
};

// The limits and the capability now.
MemlockLimit ReadMemlock();
// Raises the soft limit to the hard one (no-op when equal). Returns the limit before.
common::Result<MemlockLimit> RaiseMemlockSoftLimit();
// "unlimited" or the byte count.
std::string MemlockBytes(uint64_t bytes);
// The status for ibv_reg_mr of `length` bytes failing with `err`: when the locked-memory limit
// explains it (ENOMEM with a bounded limit), kNoResource naming the limit and how to raise it;
// otherwise the errno as it is.
common::Status RegistrationFailure(int err, size_t length);

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_MEMLOCK_H_
