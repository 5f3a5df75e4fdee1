// MemoryCgroup: the memory limit the kernel holds this process to (its memory cgroup, v2 or v1),
// and how much of it is used now.
//
// Why the agent asks: the pages of a region file on tmpfs are charged to the memory cgroup of
// whoever takes them, the agent (ShmRegion::Create takes them at registration). At its cgroup's
// limit the kernel does not refuse the page: it OOM-kills the largest process in the cgroup, the
// agent, with every VQP and region of every client. So regions and session segments are admitted
// only while they fit under the limit (MemoryRoom), and that takes knowing it.
//
// Every level from the process's cgroup up to the hierarchy's root may set a limit (a pod's
// cgroup limits its containers'); the tightest one, the one with the least room left, is the one
// that kills. Used bytes are the kernel's usage less inactive file cache (which it reclaims
// before it kills: the working set, as kubelet counts it). A container whose own cgroup is
// mounted as the hierarchy's root (no cgroup namespace) is found by falling back to that root.
// The process's cgroup is looked up on each call: a process moved to another cgroup after it
// started is held to that one's limit.
// Threading: any thread; Tightest reads the files each call.
#ifndef BRAID_DATAPLANE_ENGINE_MEMORY_CGROUP_H_
#define BRAID_DATAPLANE_ENGINE_MEMORY_CGROUP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace braid::engine {

class MemoryCgroup {
 public:
  // The memory cgroup of the process whose cgroup file is `proc_cgroup`, under the cgroup file
  // systems mounted at `root` (v1: its "memory" hierarchy at `root`/memory; v2 at `root`).
  explicit MemoryCgroup(std::string proc_cgroup = "/proc/self/cgroup",
                        std::string root = "/sys/fs/cgroup")
      : proc_cgroup_(std::move(proc_cgroup)), root_(std::move(root)) {}

  struct Limit {
    uint64_t limit = 0;  // bytes
    uint64_t used = 0;   // bytes, the working set (at most `limit`)
    std::string dir;     // the cgroup directory that sets it
    uint64_t room() const { return limit - used; }
  };
  // The limit with the least room left now, among the cgroup's levels; empty when none sets one
  // (or no memory controller is found).
  std::optional<Limit> Tightest() const;

  // The cgroup's directory, then its parents up to the hierarchy's root (empty: no memory
  // controller found); `v2` says which hierarchy.
  std::vector<std::string> Levels(bool* v2) const;

 private:
  static std::optional<Limit> Read(const std::string& dir, bool v2);

  std::string proc_cgroup_;
  std::string root_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_MEMORY_CGROUP_H_
