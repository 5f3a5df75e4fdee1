// ProcStatusField: one field of a process's /proc/<pid>/status ("FDSize", "CapEff", "VmRSS"), as
// the number it holds. Any thread; reads the file each call.
#ifndef BRAID_DATAPLANE_COMMON_PROC_STATUS_H_
#define BRAID_DATAPLANE_COMMON_PROC_STATUS_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

namespace braid::common {

// The number after "<field>:" in `path` (a status file: /proc/self/status by default), read in
// `base` (16 for the capability sets); nullopt when the file or the field is missing.
inline std::optional<uint64_t> ProcStatusField(const char* field, int base = 10,
                                               const std::string& path = "/proc/self/status") {
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return std::nullopt;
  const size_t n = std::strlen(field);
  char line[256];
  std::optional<uint64_t> out;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      out = std::strtoull(line + n + 1, nullptr, base);
      break;
    }
  }
  std::fclose(f);
  return out;
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_PROC_STATUS_H_
