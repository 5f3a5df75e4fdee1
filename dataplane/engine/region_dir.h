// RegionDir: the agent's claim on its region directory, and the names of its region files.
//
// Region files are named braid-<agent id>-<pid>-r<region id>. Opening the directory takes an
// exclusive lock on braid-<agent id>.lock there (flock, released by the kernel when the process
// dies, however it dies). Whoever holds it is the only live agent of that id on the directory, so
// every region file of that id left by another process (an agent killed with -9) is stale and is
// removed. When another live process holds the lock, nothing is removed.
//
// The directory's memory is committed as regions are made in it: a region file is sparse, and on
// tmpfs its pages are taken when first written, by a client through its mapping or by the agent
// placing a peer's data. Registered past the file system's size, the first writer to find it full
// gets SIGBUS: one caller's large regions would crash another caller's process, or cut its region
// short under the agent. So a region that would take the regions made here past the file
// system's size is refused (CheckRoom), and one deregistered gives its bytes back.
// Ownership: RAII; the destructor removes the lock file and releases the lock.
// Threading: Open and the destructor from any one thread; CheckRoom and committed() from one (the
// engine's); NameFor is const.
#ifndef BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
#define BRAID_DATAPLANE_ENGINE_REGION_DIR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/common/result.h"

namespace braid::engine {

class RegionDir {
 public:
  static common::Result<std::unique_ptr<RegionDir>> Open(const std::string& dir,
                                                         const std::string& agent_id);
  RegionDir(std::string dir, std::string prefix, std::string lock_path, int lock_fd);
  ~RegionDir();
  RegionDir(const RegionDir&) = delete;
  RegionDir& operator=(const RegionDir&) = delete;

  const std::string& path() const { return dir_; }
  // The file name (in path()) of this process's region `region_id`.
  std::string NameFor(uint64_t region_id) const;
  // Stale region files removed at Open (none when another live agent of this id holds the lock).
  uint32_t stale_files_removed() const { return stale_removed_; }
  bool locked() const { return lock_fd_ >= 0; }

  // Whether `length` more bytes of region files fit in the file system's size with those already
  // committed (kNoResource, with both figures and what to do, when they do not). The caller then
  // counts them in committed() while the file exists.
  common::Status CheckRoom(uint64_t length) const;
  uint64_t* committed() { return &committed_; }

 private:
  std::string dir_;
  std::string prefix_;  // braid-<agent id>-
  std::string lock_path_;
  int lock_fd_;
  uint32_t stale_removed_ = 0;
  uint64_t committed_ = 0;  // bytes of this process's region files
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_REGION_DIR_H_
