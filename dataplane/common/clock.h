// MonotonicNs: CLOCK_MONOTONIC in nanoseconds, the one clock of the data plane (deadlines,
// heartbeats, drain rates). Any thread; a vDSO call, no allocation, no lock.
#ifndef BRAID_DATAPLANE_COMMON_CLOCK_H_
#define BRAID_DATAPLANE_COMMON_CLOCK_H_

#include <time.h>

#include <cstdint>

namespace braid::common {

inline uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_CLOCK_H_
