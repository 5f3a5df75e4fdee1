// ShmRegion: a shared-memory file in the agent's region directory, mapped into the agent, or a
// client's own file (RegisterFd).
//
// The agent registers the mapping with its devices; a client on the same host maps the same file
// (MAP_SHARED) and reads or writes the bytes directly, so data never travels through gRPC.
// Every mapping is under a FaultGuard (the agent's own region file may be opened read-write by
// its client, a client's file in /dev/shm cannot be sealed): if someone cuts the file short, the
// agent's accesses land on zero pages instead of killing the agent, and cut_short() says so.
// Ownership: RAII; the destructor unmaps and unlinks the file (a client's mapping stays valid
// until it unmaps). Threading: a value; any thread.
#ifndef BRAID_DATAPLANE_ENGINE_SHM_REGION_H_
#define BRAID_DATAPLANE_ENGINE_SHM_REGION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/common/fault_guard.h"
#include "dataplane/common/result.h"

namespace braid::engine {

class ShmRegion {
 public:
  // Creates `dir`/`name` (it must not exist) of `length` bytes, zero-filled, mode 0600, owned
  // by `uid` (-1: the agent's user), so only that user (and root) can map it. Its pages are taken
  // at once (posix_fallocate: about 0.25 s per GiB on tmpfs), so a file system without room
  // refuses it here (kNoResource, saying so) rather than a first write raising SIGBUS later.
  static common::Result<std::unique_ptr<ShmRegion>> Create(const std::string& dir,
                                                           const std::string& name, uint64_t length,
                                                           int uid = -1);
  // Maps `length` bytes at `offset` of the client's file behind `fd` (the caller keeps `fd`), in
  // place: the client's own memory, no copy. The file must be shared memory: a memfd, or a file
  // on tmpfs (/dev/shm) or hugetlbfs.
  // The range must lie within the file; `offset` need not be page-aligned: the mapping starts at
  // the page holding it, and the region (what is registered, what peers reach) is only the range.
  // Nothing is unlinked at the end.
  static common::Result<std::unique_ptr<ShmRegion>> MapClientFd(int fd, uint64_t offset,
                                                                uint64_t length);
  // `lead`: bytes of the mapping before `addr` (the mapping starts on a page boundary); `mapped`:
  // the mapping's length in whole pages of its file system (huge pages on hugetlbfs).
  ShmRegion(std::string path, void* addr, uint64_t length,
            std::unique_ptr<common::FaultGuard> guard, uint64_t lead, uint64_t mapped)
      : path_(std::move(path)),
        addr_(addr),
        length_(length),
        lead_(lead),
        mapped_(mapped),
        guard_(std::move(guard)) {}
  ~ShmRegion();
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  const std::string& path() const { return path_; }  // "" for a client's file
  void* addr() const { return addr_; }
  uint64_t length() const { return length_; }
  // True once the client cut its file short under the mapping: the bytes are no longer its file's.
  bool cut_short() const { return guard_->cut_short(); }

 private:
  // Guards the mapping `map` (`lead` + `length` bytes of a file system whose pages are `page`
  // bytes) and makes the region; on failure unmaps it (and unlinks `path`, the agent's own file).
  static common::Result<std::unique_ptr<ShmRegion>> Guarded(std::string path, void* map,
                                                            uint64_t lead, uint64_t length,
                                                            uint64_t page);

  std::string path_;
  void* addr_;
  uint64_t length_;
  uint64_t lead_;
  uint64_t mapped_;
  std::unique_ptr<common::FaultGuard> guard_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_SHM_REGION_H_
