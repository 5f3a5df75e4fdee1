#include "dataplane/engine/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "dataplane/common/memory_file.h"

namespace braid::engine {

common::Result<std::unique_ptr<ShmRegion>> ShmRegion::Create(const std::string& dir,
                                                             const std::string& name,
                                                             uint64_t length, int uid) {
  if (length == 0) return common::Status::InvalidArgument("region length is 0");
  std::string path = dir + "/" + name;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return common::Status::FromErrno(errno, "create " + path);
  // Its pages are taken now, not when first written: a full file system refuses the region here,
  // instead of raising SIGBUS in whoever first writes a page that cannot be had (a client through
  // its mapping, the agent placing a peer's data). The agent's memory limit does not refuse: the
  // kernel kills at it, so RegionDir::Take admits only what fits under it.
  if (const int err = posix_fallocate(fd, 0, static_cast<off_t>(length)); err != 0) {
    close(fd);
    unlink(path.c_str());
    if (err == ENOSPC || err == ENOMEM) {
      return common::Status::NoResource(
          "region directory " + dir + " has no room for a region of " + std::to_string(length) +
          " bytes (" + std::strerror(err) +
          "): deregister regions, remove other files from it, register a smaller region, or give "
          "the agent a larger region_dir (or memory limit)");
    }
    return common::Status::FromErrno(err, "take the pages of " + path);
  }
  if (uid >= 0 && fchown(fd, static_cast<uid_t>(uid), static_cast<gid_t>(-1)) != 0) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return common::Status::FromErrno(err, "hand over " + path);
  }
  struct statfs fs {};
  void* addr = fstatfs(fd, &fs) != 0
                   ? MAP_FAILED
                   : mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (addr == MAP_FAILED) {
    unlink(path.c_str());
    return common::Status::FromErrno(err, "map " + path);
  }
  return Guarded(std::move(path), addr, 0, length, static_cast<uint64_t>(fs.f_bsize));
}

common::Result<std::unique_ptr<ShmRegion>> ShmRegion::MapClientFd(int fd, uint64_t offset,
                                                                  uint64_t length) {
  if (length == 0) return common::Status::InvalidArgument("region length is 0");
  struct stat st {};
  if (fstat(fd, &st) != 0) return common::Status::FromErrno(errno, "fstat the client's file");
  if (!S_ISREG(st.st_mode)) {
    return common::Status::InvalidArgument(
        "the descriptor is not a regular file: pass a memfd (memfd_create) or a file in /dev/shm");
  }
  struct statfs fs {};
  if (fstatfs(fd, &fs) != 0) return common::Status::FromErrno(errno, "fstatfs the client's file");
  if (!common::InMemoryFileSystem(fs)) {
    return common::Status::InvalidArgument(
        "the file is not in shared memory, so the agent cannot register it where it lies: pass a "
        "memfd (memfd_create) or a file in /dev/shm or on hugetlbfs");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (offset > size || length > size - offset) {
    return common::Status::OutOfRange("range [" + std::to_string(offset) + ", +" +
                                      std::to_string(length) + ") is past the end of the file (" +
                                      std::to_string(size) + " bytes)");
  }
  // The mapping starts at the page holding `offset` (a huge page on hugetlbfs: f_bsize).
  const uint64_t lead = offset % static_cast<uint64_t>(fs.f_bsize);
  void* map = mmap(nullptr, lead + length, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   static_cast<off_t>(offset - lead));
  if (map == MAP_FAILED) return common::Status::FromErrno(errno, "map the client's file");
  return Guarded("", map, lead, length, static_cast<uint64_t>(fs.f_bsize));
}

common::Result<std::unique_ptr<ShmRegion>> ShmRegion::Guarded(std::string path, void* map,
                                                              uint64_t lead, uint64_t length,
                                                              uint64_t page) {
  const uint64_t mapped = common::WholePages(lead + length, page);
  // Whoever may write the file (the client of an agent's region file too) could cut it short.
  auto guard = common::FaultGuard::Guard(map, lead + length);
  if (!guard.ok()) {
    munmap(map, mapped);
    if (!path.empty()) unlink(path.c_str());
    return guard.status();
  }
  return std::make_unique<ShmRegion>(std::move(path), static_cast<uint8_t*>(map) + lead, length,
                                     std::move(guard).value(), lead, mapped);
}

ShmRegion::~ShmRegion() {
  guard_.reset();  // before the range is unmapped: another mapping may take its place
  munmap(static_cast<uint8_t*>(addr_) - lead_, mapped_);
  if (!path_.empty()) unlink(path_.c_str());
}

}  // namespace braid::engine
