#include "dataplane/engine/region_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "dataplane/common/memory_file.h"
#include "dataplane/common/quote.h"

namespace braid::engine {

namespace {

// "<digits>-r<digits>": the rest of a region file's name after braid-<agent id>-.
bool IsPidAndRegion(const std::string& rest, std::string* pid) {
  const size_t dash = rest.find("-r");
  if (dash == 0 || dash == std::string::npos || dash + 2 == rest.size()) return false;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (i == dash || i == dash + 1) continue;
    if (!std::isdigit(static_cast<unsigned char>(rest[i]))) return false;
  }
  *pid = rest.substr(0, dash);
  return true;
}

}  // namespace

common::Result<std::unique_ptr<RegionDir>> RegionDir::Open(const std::string& dir,
                                                           const std::string& agent_id) {
  struct stat st {};
  const bool exists = stat(dir.c_str(), &st) == 0;
  if (!exists && errno == ENOENT) {
    return common::Status::NotFound("region_dir " + common::Quote(dir) +
                                    " does not exist: create it (a directory on a tmpfs, such as "
                                    "/dev/shm/braid, that the agent's clients can reach) or give "
                                    "another");
  }
  if (exists && !S_ISDIR(st.st_mode)) {
    return common::Status::InvalidArgument("region_dir " + common::Quote(dir) +
                                           " is not a directory: give the directory region files "
                                           "are made in");
  }
  // Region files hold what clients and peers send: on a disk's file system their pages would be
  // written back to it (slowly, and left on it after the file is gone).
  struct statfs fs {};
  if (exists && statfs(dir.c_str(), &fs) == 0 && !common::InMemoryFileSystem(fs)) {
    char type[32];
    std::snprintf(type, sizeof(type), "0x%llx", static_cast<unsigned long long>(fs.f_type));
    return common::Status::InvalidArgument(
        "region_dir " + common::Quote(dir) + " is not in memory (its file system, type " + type +
        ", is not tmpfs, hugetlbfs or ramfs): region files there would be written back to disk, "
        "with what clients send; give a directory on a tmpfs, such as /dev/shm/braid");
  }
  const std::string prefix = "braid-" + agent_id + "-";
  const std::string lock_path = dir + "/braid-" + agent_id + ".lock";
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return common::Status::FromErrno(errno, "open " + lock_path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    fd = -1;  // another live agent of this id uses the directory: leave its files alone
  }
  // hugetlbfs pages are not charged to the memory cgroup (the hugetlb controller counts them).
  const bool charged = exists && fs.f_type != HUGETLBFS_MAGIC;
  auto out = std::make_unique<RegionDir>(dir, prefix, lock_path, fd, charged);
  if (fd < 0) return out;
  const std::string self = std::to_string(getpid());
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::string pid;
    if (name.rfind(prefix, 0) != 0 || !IsPidAndRegion(name.substr(prefix.size()), &pid)) continue;
    if (pid == self) continue;
    std::error_code rm;
    if (std::filesystem::remove(it->path(), rm)) ++out->stale_removed_;
  }
  return out;
}

RegionDir::RegionDir(std::string dir, std::string prefix, std::string lock_path, int lock_fd,
                     bool charged_to_memory)
    : dir_(std::move(dir)),
      prefix_(std::move(prefix)),
      lock_path_(std::move(lock_path)),
      lock_fd_(lock_fd),
      charged_to_memory_(charged_to_memory) {}

RegionDir::~RegionDir() {
  if (lock_fd_ < 0) return;
  unlink(lock_path_.c_str());
  close(lock_fd_);
}

common::Result<RegionDir::Room> RegionDir::Space() const {
  struct statfs fs {};
  if (statfs(dir_.c_str(), &fs) != 0) {
    if (errno == ENOENT) {
      return common::Status::NotFound(
          "region directory " + dir_ +
          " no longer exists (removed while the agent runs): new regions cannot be made until it "
          "is created again (regions registered before keep working); restart the agent to "
          "take the directory's lock again");
    }
    return common::Status::FromErrno(errno, "statfs " + dir_);
  }
  const auto block = static_cast<uint64_t>(fs.f_bsize);
  return Room{.size = static_cast<uint64_t>(fs.f_blocks) * block,
              .free = static_cast<uint64_t>(fs.f_bavail) * block};
}

common::Result<ByteClaim> RegionDir::Take(uint64_t length) {
  uint64_t size = 0;
  return claims_.Take(
      length,
      [&]() -> common::Result<std::optional<uint64_t>> {
        BRAID_ASSIGN_OR_RETURN(const Room room, Space());
        size = room.size;  // 0: none stated, and creation decides (hugetlbfs's pool)
        return room.size > 0 ? std::optional<uint64_t>(room.free) : std::nullopt;
      },
      [&](uint64_t free, uint64_t held) -> common::Status {
        const std::string pending =
            held > 0 ? " (" + std::to_string(held) + " of them held for regions being made)" : "";
        return common::Status::NoResource(
            "region directory " + dir_ + " has " + std::to_string(free) + " of its " +
            std::to_string(size) + " bytes free" + pending + ": a region of " +
            std::to_string(length) +
            " does not fit; deregister regions, remove other files from it, register a smaller "
            "region, or give the agent a larger region_dir");
      });
}

std::string RegionDir::NameFor(uint64_t region_id) const {
  return prefix_ + std::to_string(getpid()) + "-r" + std::to_string(region_id);
}

}  // namespace braid::engine
