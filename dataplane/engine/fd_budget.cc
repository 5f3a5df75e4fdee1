#include "dataplane/engine/fd_budget.h"

#include <dirent.h>
#include <sys/resource.h>

#include <cerrno>

#include "dataplane/common/proc_status.h"

namespace braid::engine {

using common::Result;
using common::Status;

FdBudget::Limits FdBudget::Current() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return {};
  return {static_cast<uint64_t>(r.rlim_cur), static_cast<uint64_t>(r.rlim_max)};
}

Result<std::pair<FdBudget::Limits, FdBudget::Limits>> FdBudget::RaiseSoftLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return Status::FromErrno(errno, "getrlimit(NOFILE)");
  const Limits before{static_cast<uint64_t>(r.rlim_cur), static_cast<uint64_t>(r.rlim_max)};
  if (r.rlim_cur != r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) return Status::FromErrno(errno, "setrlimit(NOFILE)");
  }
  return std::make_pair(before, Current());
}

Result<uint64_t> FdBudget::CountOpen() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return Status::FromErrno(errno, "opendir(/proc/self/fd)");
  uint64_t n = 0;
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n - 1;  // the directory's own descriptor
}

uint64_t FdBudget::TableSize() { return common::ProcStatusField("FDSize").value_or(UINT64_MAX); }

Status FdBudget::CheckRoom() const {
  const Limits limits = Current();
  if (limits.soft >= reserve_ + kMinUsable) return Status::Ok();
  return Status::InvalidArgument(
      "fd_reserve " + std::to_string(reserve_) + " leaves " +
      std::to_string(limits.soft > reserve_ ? limits.soft - reserve_ : 0) +
      " of the agent's file-descriptor limit of " + std::to_string(limits.soft) +
      " for VQPs, regions and sessions; at least " + std::to_string(kMinUsable) +
      " are needed: lower fd_reserve or raise the limit (hard limit " +
      std::to_string(limits.hard) + "; LimitNOFILE, ulimit -n)");
}

Status FdBudget::Admit(uint64_t needed, uint64_t promised, const std::string& what) const {
  if (needed == 0) return Status::Ok();
  const Limits limits = Current();
  const uint64_t usable = limits.soft > reserve_ ? limits.soft - reserve_ : 0;
  // Counting costs a /proc walk over every descriptor; far from the limit the size of the
  // process's descriptor table (which bounds the count) already answers.
  if (const uint64_t bound = TableSize(); bound < usable && promised + needed <= usable - bound) {
    return Status::Ok();
  }
  BRAID_ASSIGN_OR_RETURN(const uint64_t open, CountOpen());
  if (open + promised + needed <= usable) return Status::Ok();
  return Status::NoResource(
      "the agent has " + std::to_string(open) + " file descriptors open (and " +
      std::to_string(promised) + " promised to VQPs not yet connected) of its limit of " +
      std::to_string(limits.soft) + ", keeping " + std::to_string(reserve_) +
      " for the control plane; " + what + " needs " + std::to_string(needed) +
      ": destroy VQPs no longer used, or raise the agent's limit (hard limit " +
      std::to_string(limits.hard) + "; LimitNOFILE, ulimit -n)");
}

}  // namespace braid::engine
