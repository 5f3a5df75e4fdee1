// ProcessStats: this process as Prometheus' standard process_* series describe it (the names
// every client library's process collector uses, so dashboards and alerts written for any server
// read braidd too): CPU seconds, resident and virtual memory, start time, threads, open
// descriptors and the limit on them.
// Threading: Read() from any thread; it reads /proc each call (a scrape's cost, not the data
// plane's).
#ifndef BRAID_SERVER_PROCESS_STATS_H_
#define BRAID_SERVER_PROCESS_STATS_H_

#include <cstdint>

namespace braid::server {

struct ProcessStats {
  double cpu_seconds = 0;  // user and system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  double start_time_seconds = 0;  // since the Unix epoch (0: unknown)
  uint64_t threads = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;  // the soft limit (RLIMIT_NOFILE), the one that refuses

  // What /proc and getrusage say now; a figure that cannot be read stays 0.
  static ProcessStats Read();
};

}  // namespace braid::server

#endif  // BRAID_SERVER_PROCESS_STATS_H_
