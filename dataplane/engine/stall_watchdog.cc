#include "dataplane/engine/stall_watchdog.h"

#include <pthread.h>

#include <chrono>

namespace braid::engine {

StallWatchdog::StallWatchdog(const Engine& engine, uint32_t threshold_ms, uint32_t period_ms)
    : engine_(engine),
      threshold_ns_(uint64_t{threshold_ms} * 1000000),
      period_ms_(period_ms),
      thread_([this] {
        pthread_setname_np(pthread_self(), "braid-watchdog");
        Run();
      }) {}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StallWatchdog::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(period_ms_), [this] { return stop_; })) {
    const uint64_t now = Engine::NowNs();
    const uint64_t beat = engine_.heartbeat_ns();
    const bool stalled = now > beat && now - beat > threshold_ns_;
    if (stalled && !stalled_.load(std::memory_order_relaxed)) {
      stalls_.fetch_add(1, std::memory_order_relaxed);
    }
    stalled_.store(stalled, std::memory_order_relaxed);
  }
}

}  // namespace braid::engine
