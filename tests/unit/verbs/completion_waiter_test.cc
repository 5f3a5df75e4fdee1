// CompletionWaiter over soft NICs on the TCP link: a sleeping poller is woken by the progress fd
// when its work completes (not by its sleep running out), and an idle one gives its core back.
#include "dataplane/verbs/completion_waiter.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::verbs {
namespace {

class CompletionWaiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    d0_ = std::move(provider_.OpenDevice("soft0")).value();
    d1_ = std::move(provider_.OpenDevice("soft1")).value();
    pd0_ = std::move(d0_->AllocPd()).value();
    pd1_ = std::move(d1_->AllocPd()).value();
    cq0_ = std::move(d0_->CreateCq(64)).value();
    cq1_ = std::move(d1_->CreateCq(64)).value();
    for (size_t i = 0; i < src_.size(); ++i) src_[i] = static_cast<uint8_t>(i * 13 + i / 251);
    mr0_ = std::move(pd0_->RegisterMemory(src_.data(), src_.size(), 0xF)).value();
    mr1_ = std::move(pd1_->RegisterMemory(dst_.data(), dst_.size(), 0xF)).value();
    q0_ = std::move(pd0_->CreateQp({cq0_.get(), cq0_.get(), {}, false})).value();
    q1_ = std::move(pd1_->CreateQp({cq1_.get(), cq1_.get(), {}, false})).value();
    ASSERT_TRUE(testing::ConnectRc(*q0_, d0_->info(), *q1_, d1_->info()).ok());
  }

  static constexpr uint32_t kChunk = 64 << 10;
  static constexpr int kWrites = 16;
  soft::TcpFabric fabric_{soft::TcpFabricOptions{.port = testing::TestPort(7)}};
  soft::SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::unique_ptr<Device> d0_, d1_;
  std::unique_ptr<ProtectionDomain> pd0_, pd1_;
  std::unique_ptr<Cq> cq0_, cq1_;
  std::vector<uint8_t> src_ = std::vector<uint8_t>(size_t{kChunk} * kWrites);
  std::vector<uint8_t> dst_ = std::vector<uint8_t>(size_t{kChunk} * kWrites, 0);
  std::unique_ptr<MemoryRegion> mr0_, mr1_;
  std::unique_ptr<Qp> q0_, q1_;
};

TEST_F(CompletionWaiterTest, ASleepingPollerIsWokenByItsWorkNotByItsTimeout) {
  // No spin at all, and sleeps far longer than the whole transfer takes: every completion must
  // come through a wakeup on the CQ or the device's progress fd.
  auto waiter = CompletionWaiter::Create(*cq0_, *d0_, {.spin_ns = 0, .max_sleep_ms = 10'000});
  ASSERT_TRUE(waiter.ok()) << waiter.status().ToString();
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(testing::PostRdma(*q0_, IBV_WR_RDMA_WRITE,
                                  reinterpret_cast<uint64_t>(src_.data()) + uint64_t{kChunk} * i,
                                  kChunk, mr0_->lkey(),
                                  reinterpret_cast<uint64_t>(dst_.data()) + uint64_t{kChunk} * i,
                                  mr1_->rkey(), static_cast<uint64_t>(i))
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
  EXPECT_EQ(src_, dst_);
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
  auto waiter = CompletionWaiter::Create(*cq0_, *d0_, {.spin_ns = 100'000, .max_sleep_ms = 5});
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
