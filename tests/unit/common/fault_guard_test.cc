#include "dataplane/common/fault_guard.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace braid::common {
namespace {

constexpr size_t kPages = 8;

// A file in shared memory whose owner can cut it short, mapped MAP_SHARED.
class ShrinkableFile {
 public:
  ShrinkableFile() : page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
    fd_ = memfd_create("fault-guard-test", MFD_CLOEXEC);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(bytes())) != 0) return;
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p != MAP_FAILED) data_ = static_cast<uint8_t*>(p);
  }
  ~ShrinkableFile() {
    if (data_ != nullptr) munmap(data_, bytes());
    if (fd_ >= 0) close(fd_);
  }
  size_t bytes() const { return kPages * page_; }
  uint8_t* data() const { return data_; }
  bool CutTo(size_t length) { return ftruncate(fd_, static_cast<off_t>(length)) == 0; }
  // The file's bytes as the file has them (not through the mapping).
  std::vector<uint8_t> FileBytes(size_t length) const {
    std::vector<uint8_t> out(length);
    EXPECT_EQ(pread(fd_, out.data(), length, 0), static_cast<ssize_t>(length));
    return out;
  }

 private:
  size_t page_;
  int fd_ = -1;
  uint8_t* data_ = nullptr;
};

TEST(FaultGuardTest, AnAccessPastTheEndOfAFileCutShortReadsZerosInsteadOfKillingTheProcess) {
  ShrinkableFile file;
  ASSERT_NE(file.data(), nullptr);
  std::memset(file.data(), 0xab, file.bytes());
  auto guard = FaultGuard::Guard(file.data(), file.bytes());
  ASSERT_TRUE(guard.ok()) << guard.status().ToString();
  EXPECT_FALSE((*guard)->cut_short());
  std::vector<uint8_t> copy(file.bytes());
  std::memcpy(copy.data(), file.data(), copy.size());
  EXPECT_EQ(copy[copy.size() - 1], 0xab);
  EXPECT_FALSE((*guard)->cut_short()) << "an intact file is not cut short";

  const size_t kept = file.bytes() / 2;
  ASSERT_TRUE(file.CutTo(kept));
  std::memcpy(copy.data(), file.data(), copy.size());  // faults past `kept`
  EXPECT_TRUE((*guard)->cut_short());
  EXPECT_EQ(copy[copy.size() - 1], 0) << "the replaced range reads as zeros";
  // What the process writes now lands on the replacement pages, not in the owner's file.
  std::memset(file.data(), 0x11, file.bytes());
  const std::vector<uint8_t> in_file = file.FileBytes(kept);
  EXPECT_EQ(in_file[0], 0xab);
  EXPECT_EQ(in_file[kept - 1], 0xab);
}

TEST(FaultGuardTest, RepairLetsAKernelCopyOutOfAFileCutShortBeMadeAgain) {
  ShrinkableFile file;
  ASSERT_NE(file.data(), nullptr);
  auto guard = FaultGuard::Guard(file.data(), file.bytes());
  ASSERT_TRUE(guard.ok()) << guard.status().ToString();
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_TRUE(file.CutTo(0));
  const iovec iov{file.data(), 4096};
  EXPECT_EQ(writev(p[1], &iov, 1), -1);
  EXPECT_EQ(errno, EFAULT) << "the kernel reports the copy's fault instead of a signal";
  EXPECT_TRUE(FaultGuard::Repair(&iov, 1));
  EXPECT_TRUE((*guard)->cut_short());
  EXPECT_EQ(writev(p[1], &iov, 1), 4096);
  // Memory no guard covers is not repaired: the caller's EFAULT stands.
  std::vector<uint8_t> heap(4096);
  const iovec unguarded{heap.data(), heap.size()};
  EXPECT_FALSE(FaultGuard::Repair(&unguarded, 1));
  close(p[0]);
  close(p[1]);
}

TEST(FaultGuardTest, AnEndedGuardNoLongerCoversItsRange) {
  ShrinkableFile file;
  ASSERT_NE(file.data(), nullptr);
  {
    auto guard = FaultGuard::Guard(file.data(), file.bytes());
    ASSERT_TRUE(guard.ok()) << guard.status().ToString();
  }
  ASSERT_TRUE(file.CutTo(0));
  const iovec iov{file.data(), 4096};
  EXPECT_FALSE(FaultGuard::Repair(&iov, 1));
  // A fault outside every guarded range is the process's end, as without a guard.
  EXPECT_DEATH((void)*reinterpret_cast<volatile uint8_t*>(file.data()), "");
}

}  // namespace
}  // namespace braid::common
