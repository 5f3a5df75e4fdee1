// The region directory's other kind of memory, hugetlbfs. It states no size (the huge page pool
// bounds it), so a region is not refused for want of room it cannot see (every region was:
// "has 0 of its 0 bytes free"); creating it is what finds the pool short. And a region whose length
// is not a whole number of huge pages gives its huge pages back when it goes, made by the agent or
// a client's file mapped where it lies. munmap refuses less than whole huge pages, and the mapping
// kept its pages (and the file's) until the agent exited: three 5 MB copies through two agents on
// hugetlbfs held 6 of 64 huge pages for good.
// The test mounts its own hugetlbfs and adds huge pages to the pool for its run (as root, as CI
// runs), then puts both back.
#include "dataplane/engine/shm_region.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "dataplane/engine/region_dir.h"

namespace braid::engine {
namespace {

// A field of /proc/meminfo ("HugePages_Free", "Hugepagesize" in kB), or 0.
uint64_t MemInfo(const std::string& field) {
  std::ifstream f("/proc/meminfo");
  std::string name;
  uint64_t value = 0;
  while (f >> name >> value) {
    if (name == field + ":") return value;
    f.ignore(64, '\n');
  }
  return 0;
}

class HugePagesTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kPages = 8;

  void SetUp() override {
    ASSERT_EQ(getuid(), 0u) << "this test mounts a hugetlbfs: it runs as root";
    std::ifstream("/proc/sys/vm/nr_hugepages") >> pool_;
    std::ofstream("/proc/sys/vm/nr_hugepages") << pool_ + kPages;
    char dir[] = "/dev/shm/braid-huge-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    ASSERT_EQ(mount("none", dir_.c_str(), "hugetlbfs", 0, nullptr), 0) << std::strerror(errno);
    mounted_ = true;
    page_ = MemInfo("Hugepagesize") * 1024;
    ASSERT_GT(page_, 0u);
    ASSERT_GE(MemInfo("HugePages_Free"), kPages) << "the kernel gave the pool no pages";
  }
  void TearDown() override {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);  // at once even if something still maps it
    if (!dir_.empty()) rmdir(dir_.c_str());
    std::ofstream("/proc/sys/vm/nr_hugepages") << pool_;
  }

  uint64_t pool_ = 0;
  uint64_t page_ = 0;
  std::string dir_;
  bool mounted_ = false;
};

TEST_F(HugePagesTest, ARegionOnHugetlbfsGivesItsHugePagesBackWhenItGoes) {
  const uint64_t before = MemInfo("HugePages_Free");
  const uint64_t length = page_ + page_ / 2 + 12345;  // two huge pages, the second in part
  auto dir = RegionDir::Open(dir_, "huge-test");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  {
    auto room = (*dir)->Take(length);  // not refused for want of a size hugetlbfs does not state
    EXPECT_TRUE(room.ok()) << room.status().ToString();
  }
  auto too_many = ShmRegion::Create(dir_, "braid-test-r0", (before + 1) * page_);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), common::StatusCode::kNoResource)
      << too_many.status().ToString();
  {
    auto made = ShmRegion::Create(dir_, "braid-test-r1", length);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    std::memset((*made)->addr(), 0x5a, length);
    EXPECT_EQ(MemInfo("HugePages_Free"), before - 2);
  }
  EXPECT_EQ(MemInfo("HugePages_Free"), before) << "the agent's region kept its huge pages";
  // A client's file, registered from an offset inside its first huge page.
  const std::string path = dir_ + "/client";
  const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(2 * page_)), 0);
  {
    auto mapped = ShmRegion::MapClientFd(fd, 4096, page_);
    ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
    std::memset((*mapped)->addr(), 0xa5, page_);
  }
  close(fd);
  unlink(path.c_str());
  EXPECT_EQ(MemInfo("HugePages_Free"), before) << "the client's file kept its huge pages";
  dir->reset();  // its lock file goes before the file system is unmounted
}

}  // namespace
}  // namespace braid::engine
