#include "dataplane/engine/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

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

common::Result<std::unique_ptr<ShmRegion>> ShmRegion::MapClientFd(int fd, uint64_t offset,
                                                                  uint64_t length) {
  if (length == 0) return common::Status::InvalidArgument("region length is 0");
  const long page = sysconf(_SC_PAGESIZE);
  if (offset % static_cast<uint64_t>(page) != 0) {
    return common::Status::InvalidArgument("file offset " + std::to_string(offset) +
                                           " is not a multiple of the page size (" +
                                           std::to_string(page) + ")");
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) return common::Status::FromErrno(errno, "fstat the client's file");
  if (!S_ISREG(st.st_mode)) {
    return common::Status::InvalidArgument(
        "the descriptor is not a regular file: pass a memfd (memfd_create)");
  }
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return common::Status::FailedPrecondition(
        "the file is not sealed against shrinking, so it could be cut short under the agent's "
        "mapping: use a memfd and seal it with F_SEAL_SHRINK (fcntl F_ADD_SEALS) before "
        "registering it");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (offset > size || length > size - offset) {
    return common::Status::OutOfRange("range [" + std::to_string(offset) + ", +" +
                                      std::to_string(length) + ") is past the end of the file (" +
                                      std::to_string(size) + " bytes)");
  }
  void* addr =
      mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) return common::Status::FromErrno(errno, "map the client's file");
  return std::make_unique<ShmRegion>("", addr, length);
}

ShmRegion::~ShmRegion() {
  munmap(addr_, length_);
  if (!path_.empty()) unlink(path_.c_str());
}

}  // namespace braid::engine
