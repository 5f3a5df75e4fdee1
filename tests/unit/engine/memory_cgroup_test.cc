// The agent's memory limit, as its cgroup states it, and the room it leaves for the shared memory
// the agent makes (MemoryRoom). A region file's pages on tmpfs are charged to the agent's memory
// cgroup; past its limit the kernel OOM-killed the agent (under a 256 MiB limit, during a
// client's third 64 MiB region, and every VQP and region on the agent went with it). The cgroup
// files here are fakes in a temporary directory laid out as the kernel lays them out, v1 and v2.
#include "dataplane/engine/memory_cgroup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "dataplane/engine/memory_room.h"

namespace braid::engine {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class MemoryCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        std::filesystem::temp_directory_path() / ("braid-cgroup-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& path, const std::string& text) {
    std::filesystem::create_directories((root_ / path).parent_path());
    std::ofstream(root_ / path) << text;
  }
  // A v1 memory cgroup `dir` (under root/memory) with its limit, usage and inactive file cache.
  void V1(const std::string& dir, const std::string& limit, uint64_t usage, uint64_t inactive) {
    Write("memory" + dir + "/memory.limit_in_bytes", limit + "\n");
    Write("memory" + dir + "/memory.usage_in_bytes", std::to_string(usage) + "\n");
    Write("memory" + dir + "/memory.stat",
          "cache 5\ninactive_file 1\ntotal_inactive_file " + std::to_string(inactive) + "\n");
  }
  void V2(const std::string& dir, const std::string& max, uint64_t current, uint64_t inactive) {
    Write("cgroup.controllers", "cpu memory\n");
    Write(dir.substr(1) + "/memory.max", max + "\n");
    Write(dir.substr(1) + "/memory.current", std::to_string(current) + "\n");
    Write(dir.substr(1) + "/memory.stat",
          "anon 7\nactive_file 3\ninactive_file " + std::to_string(inactive) + "\n");
  }
  // The cgroup of a process whose /proc/<pid>/cgroup reads `proc_cgroup`.
  MemoryCgroup Of(const std::string& proc_cgroup) {
    const std::string name = "proc-cgroup-" + std::to_string(++processes_);
    Write(name, proc_cgroup);
    return MemoryCgroup((root_ / name).string(), root_.string());
  }
  static bool IsV2(const MemoryCgroup& cg) {
    bool v2 = false;
    return !cg.Levels(&v2).empty() && v2;
  }

  std::filesystem::path root_;
  int processes_ = 0;
};

TEST_F(MemoryCgroupTest, AV1LimitIsReadWithInactiveFileCacheNotCountedAsUsed) {
  V1("", "9223372036854771712", 900 * kMiB, 0);  // the hierarchy's root: no limit
  V1("/kubepods/pod1", std::to_string(512 * kMiB), 300 * kMiB, 100 * kMiB);
  const MemoryCgroup cg =
      Of("12:pids:/kubepods/pod1\n4:memory:/kubepods/pod1\n0::/kubepods/pod1\n");
  bool v2 = true;
  EXPECT_EQ(cg.Levels(&v2).size(), 3u);  // pod1, kubepods, the root
  EXPECT_FALSE(v2);
  const auto limit = cg.Tightest();
  ASSERT_TRUE(limit.has_value());
  EXPECT_EQ(limit->limit, 512 * kMiB);
  EXPECT_EQ(limit->used, 200 * kMiB);
  EXPECT_EQ(limit->room(), 312 * kMiB);
  EXPECT_EQ(limit->dir, (root_ / "memory/kubepods/pod1").string());
}

TEST_F(MemoryCgroupTest, AParentsTighterLimitIsTheOneThatCounts) {
  V2("/", "max", 4000 * kMiB, 0);
  V2("/pod", std::to_string(1024 * kMiB), 900 * kMiB, 0);        // 124 MiB of room
  V2("/pod/agent", std::to_string(2048 * kMiB), 500 * kMiB, 0);  // its own: 1548 MiB
  const MemoryCgroup cg = Of("0::/pod/agent\n");
  ASSERT_TRUE(IsV2(cg));
  const auto limit = cg.Tightest();
  ASSERT_TRUE(limit.has_value());
  EXPECT_EQ(limit->limit, 1024 * kMiB);
  EXPECT_EQ(limit->room(), 124 * kMiB);
  EXPECT_EQ(limit->dir, (root_ / "pod").string());
}

TEST_F(MemoryCgroupTest, NoLimitAnywhereIsNone) {
  V2("/", "max", 100 * kMiB, 0);
  V2("/a", "max", 10 * kMiB, 0);
  EXPECT_FALSE(Of("0::/a\n").Tightest().has_value());
  bool v2 = false;
  EXPECT_TRUE(Of("").Levels(&v2).empty());  // no memory controller named at all
  EXPECT_FALSE(Of("").Tightest().has_value());
}

TEST_F(MemoryCgroupTest, AProcessMovedToAnotherCgroupIsHeldToItsLimit) {
  V2("/", "max", 100 * kMiB, 0);
  V2("/before", "max", 10 * kMiB, 0);
  V2("/after", std::to_string(64 * kMiB), 10 * kMiB, 0);
  const std::string file = (root_ / "moving").string();
  std::ofstream(file) << "0::/before\n";
  const MemoryCgroup cg(file, root_.string());
  EXPECT_FALSE(cg.Tightest().has_value());
  std::ofstream(file) << "0::/after\n";
  const auto limit = cg.Tightest();
  ASSERT_TRUE(limit.has_value());
  EXPECT_EQ(limit->limit, 64 * kMiB);
}

TEST_F(MemoryCgroupTest, AContainersOwnCgroupMountedAsTheRootIsFound) {
  // Without a cgroup namespace the container's file names the host's path, which is not visible
  // here: its own cgroup is what is mounted at the root.
  V1("", std::to_string(256 * kMiB), 100 * kMiB, 0);
  const auto limit = Of("7:memory:/docker/0123abcd\n").Tightest();
  ASSERT_TRUE(limit.has_value());
  EXPECT_EQ(limit->limit, 256 * kMiB);
  EXPECT_EQ(limit->dir, (root_ / "memory").string());
}

TEST_F(MemoryCgroupTest, MemoryPastTheLimitLessTheReserveIsRefusedAndClaimsCount) {
  constexpr uint64_t kReserve = 256 * kMiB;
  V2("/agent", std::to_string(kReserve + 300 * kMiB), 200 * kMiB, 0);
  MemoryRoom room(kReserve, Of("0::/agent\n"));
  EXPECT_EQ(room.Read().limit, kReserve + 300 * kMiB);
  EXPECT_EQ(room.Read().room, 100 * kMiB);

  auto too_big = room.Take(101 * kMiB, "a region of 101 MiB");
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), common::StatusCode::kNoResource);
  EXPECT_NE(too_big.status().message().find("memory limit"), std::string::npos);
  EXPECT_NE(too_big.status().message().find("a region of 101 MiB does not fit"), std::string::npos)
      << too_big.status().ToString();

  auto first = room.Take(60 * kMiB, "the first");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // A second made at the same time must not take the same room.
  auto second = room.Take(60 * kMiB, "the second");
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("held for what is being made"), std::string::npos)
      << second.status().ToString();
  first->Release();  // made: the cgroup's usage counts it now (here: it did not grow)
  EXPECT_TRUE(room.Take(60 * kMiB, "the third").ok());

  MemoryRoom unlimited(kReserve, Of("0::/\n"));  // the root: "max"
  EXPECT_EQ(unlimited.Read().limit, 0u);
  EXPECT_TRUE(unlimited.Take(uint64_t{1} << 50, "a petabyte").ok());

  MemoryRoom smaller(32 * kMiB, Of("0::/agent\n"));  // memory_reserve set lower: more room
  EXPECT_EQ(smaller.Read().room, 100 * kMiB + kReserve - 32 * kMiB);
}

}  // namespace
}  // namespace braid::engine
