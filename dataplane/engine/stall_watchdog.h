// StallWatchdog: notices when the engine's loop stops turning.
//
// Check() reads the engine's heartbeat; when it is older than `threshold_ms` the engine is
// stalled: stalled() turns true and one stall is counted per episode. The server turns that into
// NOT_SERVING and braid_engine_loop_stalls_total. The watchdog has no thread: the agent's health
// loop calls Check() a few times per threshold (a thread of its own cost a wake-up each period,
// and on a large agent each wake-up is not free).
// Threading: Check() from one thread at a time; stalled() and stalls() from any thread. The engine
// must outlive the watchdog.
#ifndef BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_
#define BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_

#include <atomic>
#include <cstdint>

#include "dataplane/engine/engine.h"

namespace braid::engine {

class StallWatchdog {
 public:
  StallWatchdog(const Engine& engine, uint32_t threshold_ms)
      : engine_(engine), threshold_ns_(uint64_t{threshold_ms} * 1000000) {}
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // Compares the heartbeat with the clock; returns stalled().
  bool Check();
  bool stalled() const { return stalled_.load(std::memory_order_relaxed); }
  uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }

 private:
  const Engine& engine_;
  const uint64_t threshold_ns_;
  std::atomic<bool> stalled_{false};
  std::atomic<uint64_t> stalls_{0};
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_STALL_WATCHDOG_H_
