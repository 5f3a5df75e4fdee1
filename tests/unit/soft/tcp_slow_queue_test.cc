// Over TCP, a deep queue is slow, not lossy: an ACK timeout while the connection keeps moving the
// QP's bytes must not spend retries (found by the agent's 256 MiB test under ASan, where QPs died
// with RETRY_EXC_ERR behind their own queued data and retransmissions made the queue longer).
// A silent connection still ends in RETRY_EXC_ERR (netns_two_nic_link_fault, conformance).
#include <gtest/gtest.h>

#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

TEST(TcpSlowQueue, AckTimeoutBehindQueuedDataSpendsNoRetries) {
  TcpFabric fabric{TcpFabricOptions{.port = testing::TestPort(3)}};
  SoftProvider provider{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric}};
  auto d0 = std::move(provider.OpenDevice("soft0")).value();
  auto d1 = std::move(provider.OpenDevice("soft1")).value();
  auto pd0 = std::move(d0->AllocPd()).value();
  auto pd1 = std::move(d1->AllocPd()).value();
  auto cq0 = std::move(d0->CreateCq(64)).value();
  auto cq1 = std::move(d1->CreateCq(64)).value();
  constexpr uint32_t kLen = 32 << 20;
  constexpr int kWrites = 4;
  std::vector<uint8_t> src(size_t{kLen} * kWrites), dst(src.size(), 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7 + i / 4099);
  auto mr0 = std::move(pd0->RegisterMemory(src.data(), src.size(), 0xF)).value();
  auto mr1 = std::move(pd1->RegisterMemory(dst.data(), dst.size(), 0xF)).value();
  auto q0 = std::move(pd0->CreateQp({cq0.get(), cq0.get(), {}, false})).value();
  auto q1 = std::move(pd1->CreateQp({cq1.get(), cq1.get(), {}, false})).value();
  // timeout code 7: 0.52 ms, three retries: 2.1 ms in all. A 32 MiB frame takes longer than that
  // to reach the peer and be acknowledged (~5 ms at 6 GB/s), so the timer expires while the
  // connection is busy moving it.
  testing::RcOptions rc;
  rc.timeout = 7;
  rc.retry_cnt = 3;
  ASSERT_TRUE(testing::ConnectRc(*q0, d0->info(), *q1, d1->info(), rc).ok());
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(testing::PostRdma(*q0, IBV_WR_RDMA_WRITE,
                                  reinterpret_cast<uint64_t>(src.data()) + uint64_t{kLen} * i,
                                  kLen, mr0->lkey(),
                                  reinterpret_cast<uint64_t>(dst.data()) + uint64_t{kLen} * i,
                                  mr1->rkey(), i)
                    .ok());
  }
  int done = 0;
  std::vector<ibv_wc> wcs(16);
  for (int round = 0; round < 2000000 && done < kWrites; ++round) {
    auto n = cq0->Poll(wcs);
    ASSERT_TRUE(n.ok());
    for (int i = 0; i < *n; ++i) {
      EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wcs[i].status);
      EXPECT_EQ(wcs[i].wr_id, static_cast<uint64_t>(done));
      ++done;
    }
    (void)cq1->Poll(wcs);  // the responder's side of the same fabric
  }
  ASSERT_EQ(done, kWrites);
  EXPECT_EQ(src, dst);
}

}  // namespace
}  // namespace braid::soft
