// Rule 15 on unequal links: the scheduler weighs each QP's outstanding bytes by its measured drain
// rate, so a slow link gets less work and a virtual WR does not wait on its slowest fragment
// (issue 9's shaped-links gap: byte balancing held 1,1,1,0.25 links to ~half of their sum).
#include "dataplane/vqp/drain_rate.h"

#include <gtest/gtest.h>

#include <cstring>

#include "tests/testutil/vqp_testbed.h"

namespace braid::vqp {
namespace {

TEST(DrainRateTest, LearnsOnlyFromBusyTime) {
  DrainRate r;
  EXPECT_EQ(r.ns_per_byte(), 0);
  r.OnBusy(1'000'000);
  r.OnComplete(1'500'000, 512 * 1024);  // not a full sample yet
  EXPECT_EQ(r.ns_per_byte(), 0);
  r.OnComplete(2'000'000, 512 * 1024);  // 1 MiB in 1 ms
  EXPECT_NEAR(r.ns_per_byte(), 1e6 / (1 << 20), 1e-9);
  // Idle for a second: that time is not the link's.
  r.OnBusy(1'002'000'000);
  r.OnComplete(1'002'500'000, 1 << 20);  // 1 MiB in 0.5 ms: halfway towards it (weight 1/4)
  const double fast = 0.5e6 / (1 << 20), slow = 1e6 / (1 << 20);
  EXPECT_NEAR(r.ns_per_byte(), slow + (fast - slow) / 4, 1e-9);
  // A long-busy QP that completes little still gives a sample after kSampleNs.
  r.OnComplete(1'002'500'000 + DrainRate::kSampleNs, 4096);
  EXPECT_GT(r.ns_per_byte(), slow);
  r.Reset();
  EXPECT_EQ(r.ns_per_byte(), 0);
}

uint64_t g_fake_now = 0;
uint64_t FakeClock() { return g_fake_now; }

// Two data QPs, one per NIC; host A's second NIC (soft1) only moves packets one round in `slow_every`.
// Keeps 4 virtual 1 MiB writes in flight for `rounds` and returns the bytes each QP carried.
struct Split {
  uint64_t qp0 = 0, qp1 = 0, completed = 0;
};
Split RunUnequal(int slow_every, int rounds) {
  constexpr size_t kBytes = 8 << 20;
  std::vector<uint8_t> a(kBytes), b(kBytes, 0);
  for (size_t i = 0; i < kBytes; ++i) a[i] = static_cast<uint8_t>(i * 7 + 1);
  VirtualQpConfig c;
  c.num_qps = 2;
  c.fragment_size = 64 * 1024;
  c.qp_capacity = 64;
  c.max_virtual_wrs = 16;
  c.clock_ns = FakeClock;
  g_fake_now = 1;
  testing::VqpTestbed tb(2, c, a.data(), b.data(), kBytes, {.seed = 9});
  EXPECT_TRUE(tb.status().ok()) << tb.status().ToString();
  Split s;
  uint64_t posted = 0;
  std::vector<VirtualWc> wa, wb;
  for (int round = 0; round < rounds; ++round) {
    while (posted < s.completed + 4) {
      const uint64_t off = (posted % 8) << 20;
      EXPECT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, off, 1 << 20, off, posted)).ok());
      ++posted;
    }
    g_fake_now += 10'000;
    EXPECT_TRUE(tb.fabric().HoldNic("soft1", round % slow_every != 0).ok());
    wa.clear();
    tb.PollBoth(1, &wa, &wb);
    for (const VirtualWc& wc : wa) {
      EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
      ++s.completed;
    }
  }
  EXPECT_TRUE(tb.fabric().HoldNic("soft1", false).ok());
  while (s.completed < posted) {
    const auto rest = tb.Poll(0, posted - s.completed);
    if (rest.empty()) break;
    s.completed += rest.size();
  }
  EXPECT_EQ(s.completed, posted);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), kBytes), 0);
  s.qp0 = tb.a().vqp->traffic(0).write_bytes;
  s.qp1 = tb.a().vqp->traffic(1).write_bytes;
  return s;
}

TEST(DrainRateTest, Rule15_SlowLinkGetsLessWork) {
  const Split s = RunUnequal(8, 3000);
  std::printf("QP1's NIC moving one round in eight: %lu virtual WRs; QP0 %.1f MiB, QP1 %.1f MiB\n",
              static_cast<unsigned long>(s.completed), s.qp0 / 1048576.0, s.qp1 / 1048576.0);
  // Byte balancing gave each QP half of every WR, so the fast one waited on the slow one.
  EXPECT_GT(s.qp0, 3 * s.qp1);
  EXPECT_GT(s.qp1, 0u);
}

}  // namespace
}  // namespace braid::vqp
