#include "dataplane/engine/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

namespace braid::engine {

common::Result<std::unique_ptr<ShmRegion>> ShmRegion::Create(const std::string& dir,
                                                             const std::string& name,
                                                             uint64_t length, int uid) {
  if (length == 0) return common::Status::InvalidArgument("region length is 0");
  std::string path = dir + "/" + name;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return common::Status::FromErrno(errno, "create " + path);
  if (ftruncate(fd, static_cast<off_t>(length)) != 0 ||
      (uid >= 0 && fchown(fd, static_cast<uid_t>(uid), static_cast<gid_t>(-1)) != 0)) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return common::Status::FromErrno(err, "size or hand over " + path);
  }
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (addr == MAP_FAILED) {
    unlink(path.c_str());
    return common::Status::FromErrno(err, "map " + path);
  }
  return std::make_unique<ShmRegion>(std::move(path), addr, length);
}

ShmRegion::~ShmRegion() {
  munmap(addr_, length_);
  unlink(path_.c_str());
}

}  // namespace braid::engine
