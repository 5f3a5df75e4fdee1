// RegionDir: the agent's claim on its region directory, and the names of its region files.
//
// Region files are named braid-<agent id>-<pid>-r<region id>. Opening the directory takes an
// exclusive lock on braid-<agent id>.lock there (flock, released by the kernel when the process
// dies, however it dies). Whoever holds it is the only live agent of that id on the directory, so
// every region file of that id left by another process (an agent killed with -9) is stale and is
// removed. When another live process holds the lock, nothing is removed.
//
// A region file's pages are taken when it is made (ShmRegion::Create), so the file system itself
// counts every region, this agent's, another agent's and other processes' files alike: a region
// that does not fit is refused then, instead of SIGBUS in the first writer of a page that cannot
// be had (a sparse file let one caller's regions crash another caller's process). CheckRoom says
// so early, with the figures, for a region larger than the space free now.
//
// On tmpfs those pages are also charged to the agent's memory cgroup, and there the kernel does
// not refuse a page past the limit: it kills the agent (see MemoryCgroup). So a region is also
// admitted only while it fits under that limit, less kMemoryHeadroom the agent keeps for itself.
// A Claim (Take) holds the bytes of a region being made until its file is made, so two
// registrations made at once cannot both take the same room (the file system, or the memory limit,
// once). Ownership: RAII; the destructor removes the lock file and releases the lock. A Claim must
// not outlive its RegionDir. Threading: Open and the destructor from any one thread; the rest from
// any thread (Take takes a lock: one claim is checked against the others); a Claim may end on any
// thread.
#ifndef BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
#define BRAID_DATAPLANE_ENGINE_REGION_DIR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "dataplane/common/result.h"
#include "dataplane/engine/memory_cgroup.h"

namespace braid::engine {

class RegionDir {
 public:
  // What the agent keeps under its memory limit for its own work, not for region files.
  static constexpr uint64_t kMemoryHeadroom = 256ull << 20;

  // `memory`: the agent's memory cgroup (tests give another).
  static common::Result<std::unique_ptr<RegionDir>> Open(const std::string& dir,
                                                         const std::string& agent_id,
                                                         MemoryCgroup memory = MemoryCgroup());
  RegionDir(std::string dir, std::string prefix, std::string lock_path, int lock_fd,
            MemoryCgroup memory, bool charged_to_memory);
  ~RegionDir();
  RegionDir(const RegionDir&) = delete;
  RegionDir& operator=(const RegionDir&) = delete;

  const std::string& path() const { return dir_; }
  // The file name (in path()) of this process's region `region_id`.
  std::string NameFor(uint64_t region_id) const;
  // Stale region files removed at Open (none when another live agent of this id holds the lock).
  uint32_t stale_files_removed() const { return stale_removed_; }
  bool locked() const { return lock_fd_ >= 0; }

  // The room region files have now: the directory's file system's size and the bytes free in it
  // (statfs; a size of 0: the file system states none, as hugetlbfs without size=, bounded by
  // the huge page pool instead), and the agent's memory limit (0: none, or the file system's
  // pages are not charged to it, as hugetlbfs's are not) with the bytes new regions may still
  // take under it (less the headroom). Bytes claimed and not yet made are not counted here.
  struct Room {
    uint64_t size = 0;
    uint64_t free = 0;
    uint64_t memory_limit = 0;
    uint64_t memory_room = 0;
  };
  common::Result<Room> Space() const;

  // Bytes held for a region file being made; given back when it ends (once the file is made, or
  // its making failed: then the file system and the cgroup count what it took).
  class Claim {
   public:
    Claim() = default;
    Claim(Claim&& other) noexcept : claimed_(other.claimed_), bytes_(other.bytes_) {
      other.claimed_ = nullptr;
    }
    Claim& operator=(Claim&& other) noexcept;
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    ~Claim() { Release(); }
    void Release();

   private:
    friend class RegionDir;
    Claim(std::atomic<uint64_t>* claimed, uint64_t bytes) : claimed_(claimed), bytes_(bytes) {}
    std::atomic<uint64_t>* claimed_ = nullptr;
    uint64_t bytes_ = 0;
  };
  // Claims `length` bytes for a region file about to be made, if they fit now beside the bytes
  // claimed already: in the space free in the directory's file system, and under the agent's
  // memory limit less the headroom. Otherwise kNoResource, with the figures and what to do. Others
  // (other processes' files) may still take the space before the file is made: its creation is
  // what holds that line (and the only line where the file system states no size).
  common::Result<Claim> Take(uint64_t length);

 private:
  std::string dir_;
  std::string prefix_;  // braid-<agent id>-
  std::string lock_path_;
  int lock_fd_;
  uint32_t stale_removed_ = 0;
  MemoryCgroup memory_;
  bool charged_to_memory_;             // tmpfs or ramfs: its pages count against the cgroup
  std::mutex take_mu_;                 // one Take at a time: each sees the others' claims
  std::atomic<uint64_t> claimed_ = 0;  // bytes of region files being made
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
