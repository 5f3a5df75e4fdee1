#include "dataplane/engine/memory_room.h"

#include <optional>
#include <string>

namespace braid::engine {

MemoryRoom::Figures MemoryRoom::Read() const {
  const std::optional<MemoryCgroup::Limit> limit = cgroup_.Tightest();
  if (!limit) return {};
  return {.limit = limit->limit, .room = limit->room() > reserve_ ? limit->room() - reserve_ : 0};
}

common::Result<ByteClaim> MemoryRoom::Take(uint64_t bytes, std::string_view what) {
  Figures now;
  return claims_.Take(
      bytes,
      [&]() -> common::Result<std::optional<uint64_t>> {
        now = Read();
        return now.limit > 0 ? std::optional<uint64_t>(now.room) : std::nullopt;
      },
      [&](uint64_t room, uint64_t held) -> common::Status {
        const std::string pending =
            held > 0 ? " (" + std::to_string(held) + " of them held for what is being made)" : "";
        return common::Status::NoResource(
            "the agent's memory limit of " + std::to_string(now.limit) +
            " bytes (its cgroup, which the pages of its shared memory count against) leaves " +
            std::to_string(room) + " bytes past the " + std::to_string(reserve_) +
            " it keeps for itself (memory_reserve)" + pending + ": " + std::string(what) +
            " does not fit; deregister regions or close sessions no longer used, ask for less, or "
            "raise the agent's memory limit (the chart's resources.limits.memory)");
      });
}

}  // namespace braid::engine
