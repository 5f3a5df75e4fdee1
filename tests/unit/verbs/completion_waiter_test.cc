// CompletionWaiter over soft NICs on the TCP link: a sleeping poller is woken by the progress fd
// when its work completes (not by its sleep running out), and an idle one gives its core back.
#include "dataplane/verbs/completion_waiter.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <vector>

#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/soft_pair.h"
#include "tests/testutil/test_port.h"

namespace braid::verbs {
namespace {

class CompletionWaiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const common::Status s = p_.Open();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  static constexpr uint32_t kChunk = 64 << 10;
  static constexpr int kWrites = 16;
  soft::TcpFabric fabric_{soft::TcpFabricOptions{.port = testing::TestPort(7)}};
  testing::SoftPair p_{&fabric_, size_t{kChunk} * kWrites};
};

TEST_F(CompletionWaiterTest, ASleepingPollerIsWokenByItsWorkNotByItsTimeout) {
  // No spin at all, and sleeps far longer than the whole transfer takes: every completion must
  // come through a wakeup on the CQ or the device's progress fd.
  auto waiter = CompletionWaiter::Create(*p_.cq0, *p_.d0, {.spin_ns = 0, .max_sleep_ms = 10'000});
  ASSERT_TRUE(waiter.ok()) << waiter.status().ToString();
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(testing::PostRdma(*p_.q0, IBV_WR_RDMA_WRITE,
                                  reinterpret_cast<uint64_t>(p_.buf0.data()) + uint64_t{kChunk} * i,
                                  kChunk, p_.mr0->lkey(),
                                  reinterpret_cast<uint64_t>(p_.buf1.data()) + uint64_t{kChunk} * i,
                                  p_.mr1->rkey(), static_cast<uint64_t>(i))
                    .ok());
  }
  std::vector<ibv_wc> wcs(8);
  int done = 0;
  for (int calls = 0; calls < 100000 && done < kWrites; ++calls) {
    auto n = (*waiter)->Poll(wcs);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    for (int i = 0; i < *n; ++i) {
      EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wcs[i].status);
      EXPECT_EQ(wcs[i].wr_id, static_cast<uint64_t>(done));
      ++done;
    }
  }
  ASSERT_EQ(done, kWrites);
  EXPECT_EQ(p_.buf0, p_.buf1);
  EXPECT_GT((*waiter)->sleeps(), 0u) << "with no spin, waiting is sleeping";
  EXPECT_EQ((*waiter)->woken(), (*waiter)->sleeps()) << "a sleep ran out: a wakeup was missed";
}

double ThreadCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

TEST_F(CompletionWaiterTest, AnIdlePollerGivesItsCoreBack) {
  auto waiter = CompletionWaiter::Create(*p_.cq0, *p_.d0, {.spin_ns = 100'000, .max_sleep_ms = 5});
  ASSERT_TRUE(waiter.ok());
  std::vector<ibv_wc> wcs(8);
  const double cpu0 = ThreadCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300)) {
    auto n = (*waiter)->Poll(wcs);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(*n, 0) << "nothing was posted";
  }
  const double cpu = ThreadCpuSeconds() - cpu0;
  EXPECT_GT((*waiter)->sleeps(), 10u);
  // A spinning poller would use the whole 0.3 s; this one spins 0.1 ms per 5 ms sleep.
  EXPECT_LT(cpu, 0.15) << "CPU seconds used in 0.3 s of idle polling";
}

}  // namespace
}  // namespace braid::verbs
