#include "dataplane/engine/memory_cgroup.h"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace braid::engine {

namespace {

// A v1 limit this large is no limit (the kernel's "unlimited" is just under 2^63).
constexpr uint64_t kNoLimitV1 = uint64_t{1} << 62;

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<uint64_t> ParseBytes(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;  // also "max"
  return v;
}

// The value of `key` in a memory.stat file ("<key> <bytes>" lines); nullopt when absent.
std::optional<uint64_t> StatValue(const std::string& stat, std::string_view key) {
  std::istringstream lines(stat);
  std::string name;
  uint64_t value = 0;
  while (lines >> name >> value) {
    if (name == key) return value;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> MemoryCgroup::Levels(bool* v2) const {
  std::vector<std::string> out;
  *v2 = false;
  const std::optional<std::string> text = ReadFile(proc_cgroup_);
  if (!text) return out;
  // "<id>:<controllers>:<path>" lines: v1's memory hierarchy names "memory" among its
  // controllers; v2's line is "0::<path>". A host with both (hybrid) has memory in v1.
  std::string base, path;
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string where = line.substr(b + 1);
    std::istringstream names(controllers);
    bool memory = false;
    for (std::string name; std::getline(names, name, ',');) memory = memory || name == "memory";
    if (memory) {
      base = root_ + "/memory";
      path = where;
      *v2 = false;
      break;
    }
    if (controllers.empty() && std::filesystem::exists(root_ + "/cgroup.controllers")) {
      base = root_;
      path = where;
      *v2 = true;
    }
  }
  if (base.empty()) return out;
  while (!path.empty() && path.back() == '/') path.pop_back();  // "/": the root itself
  std::error_code ec;
  std::string dir = std::filesystem::path(base + path).lexically_normal().string();
  if (dir.rfind(base, 0) != 0 || !std::filesystem::is_directory(dir, ec)) {
    dir = base;  // not under it, or not visible here: the container's own cgroup is the root
  }
  for (;;) {  // the cgroup, then each parent up to the root
    out.push_back(dir);
    if (dir.size() <= base.size()) break;
    dir = std::filesystem::path(dir).parent_path().string();
  }
  return out;
}

std::optional<MemoryCgroup::Limit> MemoryCgroup::Read(const std::string& dir, bool v2) {
  const std::optional<std::string> limit_text =
      ReadFile(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
  const std::optional<std::string> usage_text =
      ReadFile(dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes"));
  if (!limit_text || !usage_text) return std::nullopt;
  const std::optional<uint64_t> limit = ParseBytes(*limit_text);
  const std::optional<uint64_t> usage = ParseBytes(*usage_text);
  if (!limit || !usage || (!v2 && *limit >= kNoLimitV1)) return std::nullopt;
  uint64_t inactive = 0;
  if (const std::optional<std::string> stat = ReadFile(dir + "/memory.stat")) {
    const std::optional<uint64_t> v =
        v2 ? StatValue(*stat, "inactive_file") : StatValue(*stat, "total_inactive_file");
    inactive = v.value_or(StatValue(*stat, "inactive_file").value_or(0));
  }
  const uint64_t used = *usage > inactive ? *usage - inactive : 0;
  return Limit{.limit = *limit, .used = used < *limit ? used : *limit, .dir = dir};
}

std::optional<MemoryCgroup::Limit> MemoryCgroup::Tightest() const {
  std::optional<Limit> out;
  bool v2 = false;
  for (const std::string& dir : Levels(&v2)) {
    std::optional<Limit> l = Read(dir, v2);
    if (l && (!out || l->room() < out->room())) out = std::move(l);
  }
  return out;
}

}  // namespace braid::engine
