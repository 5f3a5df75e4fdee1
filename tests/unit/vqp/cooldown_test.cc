// Cooldown: the QPs of a link that stops completing anything with work outstanding (a flapping
// link), or a QP that keeps dying, are taken out of scheduling, probed once their cooldown has
// passed and re-admitted when the probe answers; the last healthy data QP is never taken out.
// Four data QPs over two NICs: QPs 1 and 3 on soft1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tests/testutil/small_vqp_config.h"
#include "tests/testutil/vqp_testbed.h"

namespace braid::vqp {
namespace {

uint64_t g_now = 1;
uint64_t Now() { return g_now; }
constexpr uint64_t kMs = 1000000;
constexpr size_t kBytes = 4 << 20;

class CooldownTest : public ::testing::Test {
 protected:
  CooldownTest() : tb_(2, Config(), kBytes) {
    g_now = 1;
    std::memset(tb_.data(0), 7, kBytes);
  }
  static VirtualQpConfig Config() {
    VirtualQpConfig c = testing::SmallVqpConfig(Scheme::kSpray, 4);
    c.clock_ns = &Now;
    return c;
  }
  // `count` 16 KiB writes from A (ids from `first`); returns once all were posted.
  void Post(int count, uint64_t first) {
    for (int i = 0; i < count; ++i) {
      const uint64_t off = (first + static_cast<uint64_t>(i)) % 256 * 16384;
      ASSERT_TRUE(
          tb_.a().vqp->PostSend(tb_.Wr(0, IBV_WR_RDMA_WRITE, off, 16384, off, first + i)).ok());
    }
  }
  // Every write posted since the last call (`count` of them) completes successfully.
  void Expect(int count) {
    auto wcs = tb_.Poll(0, static_cast<size_t>(count) - backlog_.size());
    wcs.insert(wcs.begin(), backlog_.begin(), backlog_.end());
    backlog_.clear();
    ASSERT_EQ(wcs.size(), static_cast<size_t>(count));
    for (const auto& wc : wcs) EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
  }
  void Rounds(int n) {
    std::vector<VirtualWc> x, y;
    tb_.PollBoth(n, &x, &y);
    for (auto& wc : x) backlog_.push_back(wc);
  }

  testing::VqpTestbed tb_;
  std::vector<VirtualWc> backlog_;
};

TEST_F(CooldownTest, AStalledLinksQpsTakeNoNewWorkAndAreReadmittedAfterTheirProbe) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  ASSERT_TRUE(tb_.fabric().HoldNic("soft1", true).ok());
  Post(16, 0);
  Rounds(20);
  const uint32_t stuck = va.outstanding(1);
  ASSERT_GT(stuck, 0u) << "QP 1 took no work before its path stalled";
  g_now += 50 * kMs;
  va.CheckStalls(g_now);
  EXPECT_EQ(va.health(1), QpHealth::kHealthy) << "50 ms is not a stall";
  g_now += 60 * kMs;
  va.CheckStalls(g_now);
  ASSERT_EQ(va.health(1), QpHealth::kCooling);
  EXPECT_EQ(va.health(3), QpHealth::kCooling);
  EXPECT_EQ(va.health(0), QpHealth::kHealthy);
  EXPECT_NE(va.cooling_cause(1).find("stalled"), std::string::npos) << va.cooling_cause(1);
  // New work goes elsewhere while it cools.
  Post(32, 100);
  Rounds(50);
  EXPECT_EQ(va.outstanding(1), stuck);
  // The path comes back: its old work completes; after the cooldown a probe re-admits it.
  ASSERT_TRUE(tb_.fabric().HoldNic("soft1", false).ok());
  Expect(48);
  EXPECT_EQ(va.health(1), QpHealth::kCooling) << "re-admitted before its cooldown passed";
  g_now += 100 * kMs;
  va.CheckStalls(g_now);
  EXPECT_TRUE(va.probing(1));
  Rounds(20);
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
  const uint64_t before = va.traffic(1).write_bytes;
  Post(32, 200);
  Expect(32);
  EXPECT_GT(va.traffic(1).write_bytes, before);
}

TEST_F(CooldownTest, TheLastHealthyQpIsNeverCooled) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  ASSERT_TRUE(tb_.fabric().HoldNic("soft0", true).ok());
  ASSERT_TRUE(tb_.fabric().HoldNic("soft1", true).ok());
  Post(32, 0);
  Rounds(20);
  g_now += 200 * kMs;
  va.CheckStalls(g_now);
  int cooling = 0;
  for (int i = 0; i < 4; ++i) cooling += va.health(i) == QpHealth::kCooling;
  EXPECT_EQ(cooling, 3);
  EXPECT_EQ(va.healthy_data_qps(), 1);
  ASSERT_TRUE(tb_.fabric().HoldNic("soft0", false).ok());
  ASSERT_TRUE(tb_.fabric().HoldNic("soft1", false).ok());
  Expect(32);
}

// Repeated strikes double the cooldown: a QP that stalls again right after re-admission sits out
// twice as long.
TEST_F(CooldownTest, EachStrikeDoublesTheCooldown) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  for (int strike = 1; strike <= 3; ++strike) {
    ASSERT_TRUE(tb_.fabric().HoldNic("soft0", true).ok());
    Post(16, 1000u * strike);
    Rounds(20);
    ASSERT_GT(va.outstanding(2), 0u);
    g_now += 200 * kMs;  // past the stall limit
    va.CheckStalls(g_now);
    ASSERT_EQ(va.health(2), QpHealth::kCooling) << "strike " << strike;
    const uint64_t cooldown = 100 * kMs << (strike - 1);
    EXPECT_NE(va.cooling_cause(2).find(std::to_string(cooldown / kMs) + " ms"), std::string::npos)
        << va.cooling_cause(2);
    ASSERT_TRUE(tb_.fabric().HoldNic("soft0", false).ok());
    Expect(16);
    g_now += cooldown - kMs;
    va.CheckStalls(g_now);
    EXPECT_FALSE(va.probing(2)) << "probed before its cooldown of " << cooldown / kMs << " ms";
    g_now += 2 * kMs;
    va.CheckStalls(g_now);
    Rounds(20);
    ASSERT_EQ(va.health(2), QpHealth::kHealthy);
  }
}

// A QP that keeps dying (a second death before the first strike was forgiven) is recovered but
// sits out the rest of its cooldown before it takes work again; after one death it does not.
TEST_F(CooldownTest, AQpThatKeepsDyingSitsOutItsCooldownAfterRecovery) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  for (int death = 1; death <= 2; ++death) {
    ASSERT_TRUE(tb_.fabric().BreakQp(va.physical_qp(1)).ok());
    Post(16, 1000u * static_cast<uint64_t>(death));
    Expect(16);  // its work failed over
    ASSERT_EQ(va.health(1), QpHealth::kDead) << "death " << death;
    ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(1)).ok());
    const common::Status recovered = tb_.RecoverQp(1);
    ASSERT_TRUE(recovered.ok()) << recovered.ToString();
    if (death == 1) {
      EXPECT_EQ(va.health(1), QpHealth::kHealthy) << "one death is no pattern";
    }
    g_now += kMs;
  }
  ASSERT_EQ(va.health(1), QpHealth::kCooling) << "re-admitted at once after its second death";
  Post(16, 3000);
  Expect(16);
  EXPECT_EQ(va.outstanding(1), 0u);
  const uint64_t before = va.traffic(1).write_bytes;
  Post(16, 4000);
  Expect(16);
  EXPECT_EQ(va.traffic(1).write_bytes, before) << "took work while cooling";
  g_now += 200 * kMs;  // the second strike's cooldown
  va.CheckStalls(g_now);
  EXPECT_TRUE(va.probing(1));
  Rounds(20);
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
}

}  // namespace
}  // namespace braid::vqp
