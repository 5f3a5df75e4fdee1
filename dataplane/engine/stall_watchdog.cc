#include "dataplane/engine/stall_watchdog.h"

namespace braid::engine {

bool StallWatchdog::Check() {
  const uint64_t now = Engine::NowNs();
  const uint64_t beat = engine_.heartbeat_ns();
  const bool stalled = now > beat && now - beat > threshold_ns_;
  if (stalled && !stalled_.load(std::memory_order_relaxed)) {
    stalls_.fetch_add(1, std::memory_order_relaxed);
  }
  stalled_.store(stalled, std::memory_order_relaxed);
  return stalled;
}

}  // namespace braid::engine
