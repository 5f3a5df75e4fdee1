// Files in memory, as the agent and its clients map them: which file systems hold a file in
// memory, and how long a mapping of one is. Any thread.
#ifndef BRAID_DATAPLANE_COMMON_MEMORY_FILE_H_
#define BRAID_DATAPLANE_COMMON_MEMORY_FILE_H_

#include <linux/magic.h>
#include <sys/vfs.h>

#include <cstdint>

namespace braid::common {

// Whether a file on `fs` lives in memory (tmpfs, hugetlbfs, ramfs): a region there is memory, not
// pages written back to a disk.
inline bool InMemoryFileSystem(const struct statfs& fs) {
  return fs.f_type == TMPFS_MAGIC || fs.f_type == HUGETLBFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

// `bytes` rounded up to whole `page`s: the length munmap takes for a mapping of `bytes` of a file
// whose file system has `page`-byte pages (f_bsize; huge pages on hugetlbfs, where a shorter
// length is refused and the mapping kept).
inline uint64_t WholePages(uint64_t bytes, uint64_t page) {
  return (bytes + page - 1) / page * page;
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_MEMORY_FILE_H_
