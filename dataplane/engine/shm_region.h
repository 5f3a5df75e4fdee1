// ShmRegion: a shared-memory file in the agent's region directory, mapped into the agent, or a
// client's own file (RegisterFd).
//
// The agent registers the mapping with its devices; a client on the same host maps the same file
// (MAP_SHARED) and reads or writes the bytes directly, so data never travels through gRPC.
// Ownership: RAII; the destructor unmaps and unlinks the file (a client's mapping stays valid
// until it unmaps). Threading: a value; any thread.
#ifndef BRAID_DATAPLANE_ENGINE_SHM_REGION_H_
#define BRAID_DATAPLANE_ENGINE_SHM_REGION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/common/result.h"

namespace braid::engine {

class ShmRegion {
 public:
  // Creates `dir`/`name` (it must not exist) of `length` bytes, zero-filled, mode 0600, owned
  // by `uid` (-1: the agent's user), so only that user (and root) can map it.
  static common::Result<std::unique_ptr<ShmRegion>> Create(const std::string& dir,
                                                           const std::string& name, uint64_t length,
                                                           int uid = -1);
  // Maps `length` bytes at `offset` of the client's file behind `fd` (the caller keeps `fd`), in
  // place: the client's own memory, no copy. The file must be a memfd sealed against shrinking
  // (F_SEAL_SHRINK): a file that could shrink under the mapping would fault the agent's accesses.
  // `offset` must be page-aligned and the range within the file. Nothing is unlinked at the end.
  static common::Result<std::unique_ptr<ShmRegion>> MapClientFd(int fd, uint64_t offset,
                                                                uint64_t length);
  ShmRegion(std::string path, void* addr, uint64_t length)
      : path_(std::move(path)), addr_(addr), length_(length) {}
  ~ShmRegion();
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  const std::string& path() const { return path_; }  // "" for a client's file
  void* addr() const { return addr_; }
  uint64_t length() const { return length_; }

 private:
  std::string path_;
  void* addr_;
  uint64_t length_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_SHM_REGION_H_
