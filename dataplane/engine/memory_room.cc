#include "dataplane/engine/memory_room.h"

#include <optional>
#include <string>

namespace braid::engine {

MemoryRoom::Figures MemoryRoom::Read() const {
  const std::optional<MemoryCgroup::Limit> limit = cgroup_.Tightest();
  if (!limit) return {};
  return {.limit = limit->limit, .room = limit->room() > kHeadroom ? limit->room() - kHeadroom : 0};
}

common::Result<ByteClaim> MemoryRoom::Take(uint64_t bytes, std::string_view what) {
  std::lock_guard<std::mutex> lock(take_mu_);
  const Figures now = Read();
  const uint64_t held = held_.load(std::memory_order_relaxed);
  if (now.limit > 0 && (now.room < held || now.room - held < bytes)) {
    const std::string pending =
        held > 0 ? " (" + std::to_string(held) + " of them held for what is being made)" : "";
    return common::Status::NoResource(
        "the agent's memory limit of " + std::to_string(now.limit) +
        " bytes (its cgroup, which the pages of its shared memory count against) leaves " +
        std::to_string(now.room) + " bytes past the " + std::to_string(kHeadroom) +
        " it keeps for itself" + pending + ": " + std::string(what) +
        " does not fit; deregister regions or close sessions no longer used, ask for less, or "
        "raise the agent's memory limit (the chart's resources.limits.memory)");
  }
  return ByteClaim(&held_, bytes);
}

}  // namespace braid::engine
