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
// be had (a sparse file let one caller's regions crash another caller's process). Take says so
// early, with the figures, for a region larger than the space free now.
//
// Take holds the bytes of a region being made until its file is made, so two registrations made
// at once cannot both take the same space. On tmpfs and ramfs the pages are also charged to the
// agent's memory cgroup (charged_to_memory(): then MemoryRoom must admit them too).
// Ownership: RAII; the destructor removes the lock file and releases the lock. A claim must not
// outlive its RegionDir.
// Threading: Open and the destructor from any one thread; the rest from any thread (Take takes a
// lock, ClaimLedger: one claim is checked against the others); a claim may end on any thread.
#ifndef BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
#define BRAID_DATAPLANE_ENGINE_REGION_DIR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/common/result.h"
#include "dataplane/engine/claim_ledger.h"

namespace braid::engine {

class RegionDir {
 public:
  static common::Result<std::unique_ptr<RegionDir>> Open(const std::string& dir,
                                                         const std::string& agent_id);
  RegionDir(std::string dir, std::string prefix, std::string lock_path, int lock_fd,
            bool charged_to_memory);
  ~RegionDir();
  RegionDir(const RegionDir&) = delete;
  RegionDir& operator=(const RegionDir&) = delete;

  const std::string& path() const { return dir_; }
  // The file name (in path()) of this process's region `region_id`.
  std::string NameFor(uint64_t region_id) const;
  // Stale region files removed at Open (none when another live agent of this id holds the lock).
  uint32_t stale_files_removed() const { return stale_removed_; }
  bool locked() const { return lock_fd_ >= 0; }
  // Whether its files' pages are charged to the memory cgroup of who takes them (tmpfs, ramfs;
  // hugetlbfs's are counted by the hugetlb controller instead).
  bool charged_to_memory() const { return charged_to_memory_; }

  // The directory's file system: its size and the bytes free in it now (statfs). A size of 0: the
  // file system states none (hugetlbfs without size=, bounded by the huge page pool instead).
  // Bytes held by Take are not subtracted.
  struct Room {
    uint64_t size = 0;
    uint64_t free = 0;
  };
  common::Result<Room> Space() const;
  // Holds `length` bytes for a region file about to be made, if they fit now in the space free in
  // the directory's file system beside the bytes held already (kNoResource, with the figures and
  // what to do, when they do not). Others (other processes' files) may still take the space
  // before the file is made: its creation is what holds that line (and the only line where the
  // file system states no size).
  common::Result<ByteClaim> Take(uint64_t length);

 private:
  std::string dir_;
  std::string prefix_;  // braid-<agent id>-
  std::string lock_path_;
  int lock_fd_;
  uint32_t stale_removed_ = 0;
  bool charged_to_memory_;
  ClaimLedger claims_;  // bytes of region files being made
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
