// Over TCP, a deep queue is slow, not lossy: an ACK timeout while the connection keeps moving the
// QP's bytes must not spend retries (found by the agent's 256 MiB test under ASan, where QPs died
// with RETRY_EXC_ERR behind their own queued data and retransmissions made the queue longer).
// A silent connection still ends in RETRY_EXC_ERR (netns_two_nic_link_fault, conformance).
#include <gtest/gtest.h>

#include <vector>

#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/soft_pair.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

TEST(TcpSlowQueue, AckTimeoutBehindQueuedDataSpendsNoRetries) {
  TcpFabric fabric{TcpFabricOptions{.port = testing::TestPort(3)}};
  constexpr uint32_t kLen = 32 << 20;
  constexpr int kWrites = 4;
  testing::SoftPair p(&fabric, size_t{kLen} * kWrites);
  // timeout code 7: 0.52 ms, three retries: 2.1 ms in all. A 32 MiB frame takes longer than that
  // to reach the peer and be acknowledged (~5 ms at 6 GB/s), so the timer expires while the
  // connection is busy moving it.
  testing::RcOptions rc;
  rc.timeout = 7;
  rc.retry_cnt = 3;
  const common::Status opened = p.Open(rc);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(testing::PostRdma(*p.q0, IBV_WR_RDMA_WRITE,
                                  reinterpret_cast<uint64_t>(p.buf0.data()) + uint64_t{kLen} * i,
                                  kLen, p.mr0->lkey(),
                                  reinterpret_cast<uint64_t>(p.buf1.data()) + uint64_t{kLen} * i,
                                  p.mr1->rkey(), i)
                    .ok());
  }
  int done = 0;
  std::vector<ibv_wc> wcs(16);
  for (int round = 0; round < 2000000 && done < kWrites; ++round) {
    auto n = p.cq0->Poll(wcs);
    ASSERT_TRUE(n.ok());
    for (int i = 0; i < *n; ++i) {
      EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wcs[i].status);
      EXPECT_EQ(wcs[i].wr_id, static_cast<uint64_t>(done));
      ++done;
    }
    (void)p.cq1->Poll(wcs);  // the responder's side of the same fabric
  }
  ASSERT_EQ(done, kWrites);
  EXPECT_EQ(p.buf0, p.buf1);
}

}  // namespace
}  // namespace braid::soft
