#include "server/process_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>

#include "dataplane/common/proc_status.h"
#include "dataplane/engine/fd_budget.h"

namespace braid::server {

namespace {

// The system's boot time (btime in /proc/stat), in seconds since the epoch; 0 when unknown.
uint64_t BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  uint64_t value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

// When this process started (field 22 of /proc/self/stat, in clock ticks after boot), in seconds
// since the epoch; 0 when unknown. The fields are counted after the command name's closing
// parenthesis: the name itself may hold spaces and parentheses.
double StartTime() {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  const long ticks = sysconf(_SC_CLK_TCK);
  const uint64_t boot = BootTime();
  if (close == std::string::npos || ticks <= 0 || boot == 0) return 0;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 22) return static_cast<double>(boot) + std::strtod(field.c_str(), nullptr) / ticks;
  }
  return 0;
}

}  // namespace

ProcessStats ProcessStats::Read() {
  ProcessStats s;
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    s.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                    static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  }
  s.resident_bytes = common::ProcStatusField("VmRSS").value_or(0) * 1024;
  s.virtual_bytes = common::ProcStatusField("VmSize").value_or(0) * 1024;
  s.threads = common::ProcStatusField("Threads").value_or(0);
  s.start_time_seconds = StartTime();
  if (auto open = engine::FdBudget::CountOpen(); open.ok()) s.open_fds = *open;
  s.max_fds = engine::FdBudget::Current().soft;
  return s;
}

}  // namespace braid::server
