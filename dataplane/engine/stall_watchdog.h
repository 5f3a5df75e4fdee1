// StallWatchdog: notices when the engine's loop stops turning.
//
// A thread of its own reads the engine's heartbeat every `period_ms`; when it is older than
// `threshold_ms` the engine is stalled: stalled() turns true and one stall is counted per episode.
// The server turns that into NOT_SERVING and braid_engine_loop_stalls_total.
// Threading: stalled() and stalls() from any thread. The engine must outlive the watchdog.
#ifndef BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_
#define BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "dataplane/engine/engine.h"

namespace braid::engine {

class StallWatchdog {
 public:
  StallWatchdog(const Engine& engine, uint32_t threshold_ms, uint32_t period_ms = 100);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  bool stalled() const { return stalled_.load(std::memory_order_relaxed); }
  uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }

 private:
  void Run();

  const Engine& engine_;
  const uint64_t threshold_ns_;
  const uint32_t period_ms_;
  std::atomic<bool> stalled_{false};
  std::atomic<uint64_t> stalls_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_
