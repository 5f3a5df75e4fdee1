// The region directory's room: a region file holds its bytes while it is made, so two made at once
// cannot share the last of the space; and a directory removed under the running agent is named as
// the reason new regions cannot be made (it said "statfs <dir>: No such file or directory").
#include "dataplane/engine/region_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace braid::engine {
namespace {

class RegionDirTest : public ::testing::Test {
 protected:
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  const std::string dir_ = "/dev/shm/braid-region-dir-test-" + std::to_string(getpid());
};

TEST_F(RegionDirTest, RegionFilesMadeAtOnceCannotShareTheLastSpaceOfTheirDirectory) {
  auto rd = RegionDir::Open(dir_, "rd");
  ASSERT_TRUE(rd.ok()) << rd.status().ToString();
  EXPECT_TRUE((*rd)->charged_to_memory());  // tmpfs
  auto space = (*rd)->Space();
  ASSERT_TRUE(space.ok());
  const uint64_t half = space->free / 2 + 4096;
  auto first = (*rd)->Take(half);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = (*rd)->Take(half);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), common::StatusCode::kNoResource);
  EXPECT_NE(second.status().message().find("held for regions being made"), std::string::npos)
      << second.status().ToString();
  first->Release();
  EXPECT_TRUE((*rd)->Take(half).ok());
}

TEST_F(RegionDirTest, ADirectoryRemovedUnderTheAgentIsNamedAsTheReason) {
  auto rd = RegionDir::Open(dir_, "rd");
  ASSERT_TRUE(rd.ok()) << rd.status().ToString();
  std::filesystem::remove_all(dir_);
  auto taken = (*rd)->Take(4096);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), common::StatusCode::kNotFound);
  EXPECT_NE(taken.status().message().find("no longer exists"), std::string::npos)
      << taken.status().ToString();
  std::filesystem::create_directories(dir_);
  EXPECT_TRUE((*rd)->Take(4096).ok());
}

}  // namespace
}  // namespace braid::engine
