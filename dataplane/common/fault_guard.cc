#include "dataplane/common/fault_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <string>

namespace braid::common {
namespace {

// One guarded range. A slot is free while `begin` is 0; it is published by storing `begin` last
// (release) and read by the handler with an acquire load of `begin` first.
struct GuardSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<size_t> length{0};
  std::atomic<bool> cut{false};
};

std::array<GuardSlot, FaultGuard::kMaxGuards> slots;
std::atomic<size_t> slots_used{0};  // high-water mark: slots past it were never used
std::mutex claim_mutex;             // Guard and ~FaultGuard only; never taken by the handler
struct sigaction previous_action {};

// Replaces the guarded range holding `addr` with anonymous pages. False: no range holds it.
bool ReplaceRangeHolding(uintptr_t addr) {
  const size_t used = slots_used.load(std::memory_order_acquire);
  for (size_t i = 0; i < used; ++i) {
    GuardSlot& s = slots[i];
    const uintptr_t begin = s.begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr - begin >= s.length.load(std::memory_order_relaxed)) {
      continue;
    }
    // Idempotent: two threads faulting at once both map zero pages over the same range.
    void* fresh = mmap(reinterpret_cast<void*>(begin), s.length.load(std::memory_order_relaxed),
                       PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (fresh == MAP_FAILED) return false;
    s.cut.store(true, std::memory_order_release);
    return true;
  }
  return false;
}

void OnBusError(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const bool ours = ReplaceRangeHolding(reinterpret_cast<uintptr_t>(info->si_addr));
  errno = saved_errno;
  if (ours) return;  // the access is made again, now on the replacement pages
  if ((previous_action.sa_flags & SA_SIGINFO) != 0 && previous_action.sa_sigaction != nullptr) {
    previous_action.sa_sigaction(sig, info, context);
  } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
    previous_action.sa_handler(sig);
  } else {
    // Not a guarded range: the default action, as if no guard were installed (the access faults
    // again on return).
    signal(SIGBUS, SIG_DFL);
  }
}

Status InstallHandler() {
  struct sigaction action {};
  action.sa_sigaction = OnBusError;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGBUS, &action, &previous_action) != 0) {
    return Status::FromErrno(errno, "install the SIGBUS handler that guards mapped files");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<FaultGuard>> FaultGuard::Guard(void* addr, size_t length) {
  if (addr == nullptr || length == 0) return Status::InvalidArgument("nothing to guard");
  std::lock_guard<std::mutex> lock(claim_mutex);
  static const Status installed = InstallHandler();
  if (!installed.ok()) return installed;
  const size_t used = slots_used.load(std::memory_order_relaxed);
  size_t free_slot = used;
  for (size_t i = 0; i < used; ++i) {
    if (slots[i].begin.load(std::memory_order_relaxed) == 0) {
      free_slot = i;
      break;
    }
  }
  if (free_slot == kMaxGuards) {
    return Status::NoResource("this agent guards " + std::to_string(kMaxGuards) +
                              " mapped files already: release some regions first");
  }
  GuardSlot& s = slots[free_slot];
  s.length.store(length, std::memory_order_relaxed);
  s.cut.store(false, std::memory_order_relaxed);
  s.begin.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_release);
  if (free_slot == used) slots_used.store(used + 1, std::memory_order_release);
  return std::make_unique<FaultGuard>(free_slot);
}

FaultGuard::~FaultGuard() {
  std::lock_guard<std::mutex> lock(claim_mutex);
  slots[slot_].begin.store(0, std::memory_order_release);
}

bool FaultGuard::cut_short() const { return slots[slot_].cut.load(std::memory_order_acquire); }

bool FaultGuard::Repair(const iovec* iov, size_t count) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  bool cut = false;
  const size_t used = slots_used.load(std::memory_order_acquire);
  for (size_t v = 0; v < count; ++v) {
    const auto from = reinterpret_cast<uintptr_t>(iov[v].iov_base);
    const uintptr_t to = from + iov[v].iov_len;
    for (size_t i = 0; i < used; ++i) {
      GuardSlot& s = slots[i];
      const uintptr_t begin = s.begin.load(std::memory_order_acquire);
      const uintptr_t end = begin + s.length.load(std::memory_order_relaxed);
      if (begin == 0 || to <= begin || from >= end) continue;
      // Reading one byte of each page faults on the first page past the file's new end, and the
      // handler replaces the whole range.
      for (uintptr_t p = std::max(from, begin) & ~(page - 1);
           p < std::min(to, end) && !s.cut.load(std::memory_order_acquire); p += page) {
        (void)*reinterpret_cast<volatile const uint8_t*>(std::max(p, begin));
      }
      cut = cut || s.cut.load(std::memory_order_acquire);
    }
  }
  return cut;
}

}  // namespace braid::common
