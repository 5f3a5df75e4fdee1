#include "dataplane/verbs/memlock.h"

#include <sys/resource.h>

#include <cerrno>

#include "dataplane/common/proc_status.h"
#include "dataplane/common/result.h"

namespace braid::verbs {

namespace {

constexpr int kCapIpcLock = 14;  // linux/capability.h

uint64_t Bytes(rlim_t v) { return v == RLIM_INFINITY ? kUnlimitedMemlock : uint64_t{v}; }

// CAP_IPC_LOCK in the effective set.
bool HasIpcLock() { return (common::ProcStatusField("CapEff", 16).value_or(0) >> kCapIpcLock) & 1; }

}  // namespace

MemlockLimit ReadMemlock() {
  MemlockLimit out;
  rlimit r{};
  if (getrlimit(RLIMIT_MEMLOCK, &r) == 0) {
    out.soft = Bytes(r.rlim_cur);
    out.hard = Bytes(r.rlim_max);
  }
  out.ipc_lock = HasIpcLock();
  return out;
}

common::Result<MemlockLimit> RaiseMemlockSoftLimit() {
  const MemlockLimit before = ReadMemlock();
  rlimit r{};
  if (getrlimit(RLIMIT_MEMLOCK, &r) != 0) {
    return common::Status::FromErrno(errno, "getrlimit(MEMLOCK)");
  }
  if (r.rlim_cur != r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_MEMLOCK, &r) != 0) {
      return common::Status::FromErrno(errno, "setrlimit(MEMLOCK)");
    }
  }
  return before;
}

std::string MemlockBytes(uint64_t bytes) {
  return bytes == kUnlimitedMemlock ? "unlimited" : std::to_string(bytes);
}

common::Status RegistrationFailure(int err, size_t length) {
  const MemlockLimit limit = ReadMemlock();
  if (err != ENOMEM || !limit.bounded()) {
    return common::Status::FromErrno(err, "ibv_reg_mr of " + std::to_string(length) + " bytes");
  }
  return common::Status::NoResource(
      "ibv_reg_mr of " + std::to_string(length) + " bytes: the agent may pin at most " +
      MemlockBytes(limit.soft) + " bytes of memory (RLIMIT_MEMLOCK, its hard limit " +
      MemlockBytes(limit.hard) +
      ") and lacks CAP_IPC_LOCK, and every registration's pages count against it, once per device: "
      "raise the limit (LimitMEMLOCK=infinity in a systemd unit, ulimit -l, the container "
      "runtime's memlock ulimit) or grant the agent CAP_IPC_LOCK (the chart does)");
}

}  // namespace braid::verbs
