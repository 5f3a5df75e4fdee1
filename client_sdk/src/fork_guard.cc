#include "braid/fork_guard.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

namespace braid::client {

namespace {

// How many fork()s lie between the first process of this line and this one.
std::atomic<uint64_t> g_generation{0};
// The generation that opened an AgentClient first (kNone: none has yet).
constexpr uint64_t kNone = UINT64_MAX;
std::atomic<uint64_t> g_grpc_generation{kNone};
std::atomic<pid_t> g_grpc_pid{0};

void CountFork() { g_generation.fetch_add(1, std::memory_order_relaxed); }

uint64_t Generation() {
  static std::once_flag registered;
  std::call_once(registered, [] { pthread_atfork(nullptr, nullptr, CountFork); });
  return g_generation.load(std::memory_order_relaxed);
}

constexpr std::string_view kFix =
    ": gRPC connections and the SDK's threads do not survive fork(). Open agents in a child only "
    "when its parent had none open, or start the child with exec (Python multiprocessing: the "
    "\"spawn\" or \"forkserver\" start method)";

}  // namespace

ForkGuard::ForkGuard() : generation_(Generation()), pid_(getpid()) {}

bool ForkGuard::Inherited() const {
  return g_generation.load(std::memory_order_relaxed) != generation_;
}

common::Status ForkGuard::Refusal(std::string_view what) const {
  return common::Status::FailedPrecondition(
      std::string(what) + " belongs to process " + std::to_string(pid_) + ", and process " +
      std::to_string(getpid()) + " was forked from it" + std::string(kFix));
}

common::Status ForkGuard::CheckOpen(std::string_view target) {
  const uint64_t now = Generation();
  uint64_t first = kNone;
  if (g_grpc_generation.compare_exchange_strong(first, now, std::memory_order_relaxed)) {
    g_grpc_pid.store(getpid(), std::memory_order_relaxed);
    return common::Status::Ok();
  }
  if (first == now) return common::Status::Ok();
  return common::Status::FailedPrecondition(
      "cannot open an agent connection to " + std::string(target.substr(0, 100)) + " in process " +
      std::to_string(getpid()) + ": it was made by fork() from process " +
      std::to_string(g_grpc_pid.load(std::memory_order_relaxed)) +
      " after that one had opened agent connections" + std::string(kFix));
}

}  // namespace braid::client
