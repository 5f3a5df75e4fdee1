// Over TCP, a deep queue is slow, not lossy: an ACK timeout while the connection keeps moving the
// QP's bytes must not spend retries (found by the agent's 256 MiB test under ASan, where QPs died
// with RETRY_EXC_ERR behind their own queued data and retransmissions made the queue longer).
// A silent connection still ends in RETRY_EXC_ERR (netns_two_nic_link_fault, conformance).
// Likewise a poller that slept past the timeout while the ACK was waiting in its socket: the soft
// NIC runs only when its poller does, so it reads what arrived before judging a timeout (found
// when the two-NIC test lost a QP in CI on a loaded machine).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
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

// The peer stops answering (its QP's frames held) while our socket has room to spare: each retry's
// retransmission is taken at once, which is no sign the peer is alive. So every timeout spends a
// retry and the QP ends after (retries + 1) timeouts, not two timeouts per retry (found when a
// link taken down in netns_two_nic_link_fault ended its QP after 134 ms of a 67 ms budget).
TEST(TcpSlowQueue, RetransmissionsTakenByASocketWithRoomStillSpendTheirRetries) {
  TcpFabric fabric{TcpFabricOptions{.port = testing::TestPort(3)}};
  testing::SoftPair p(&fabric, 4096);
  testing::RcOptions rc;
  rc.timeout = 13;  // 33.6 ms
  rc.retry_cnt = 7;
  const common::Status opened = p.Open(rc);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  const double timeout_ms = 4.096e-3 * (1 << 13);
  auto write = [&](uint64_t id) {
    return testing::PostRdma(*p.q0, IBV_WR_RDMA_WRITE, reinterpret_cast<uint64_t>(p.buf0.data()),
                             4096, p.mr0->lkey(), reinterpret_cast<uint64_t>(p.buf1.data()),
                             p.mr1->rkey(), id)
        .ok();
  };
  // Polls both sides until the requester has a completion (at most 5 s).
  auto await_one = [&](ibv_wc* got) {
    std::vector<ibv_wc> wcs(16);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < end) {
      auto n = p.cq0->Poll(std::span<ibv_wc>(got, 1));
      if (!n.ok() || *n == 1) return n.ok();
      (void)p.cq1->Poll(wcs);
    }
    return false;
  };
  ibv_wc wc{};
  ASSERT_TRUE(write(1) && await_one(&wc));  // the connection is up and the pair attached
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
  ASSERT_TRUE(fabric.HoldQp(*p.q1, true).ok());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(write(2) && await_one(&wc));
  const double timeouts =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      timeout_ms;
  EXPECT_EQ(wc.status, IBV_WC_RETRY_EXC_ERR) << ibv_wc_status_str(wc.status);
  // 8 timeouts expected (the first try and 7 retries); with every retransmission counted as the
  // peer's progress, each retry bought one more.
  EXPECT_GE(timeouts, 7.5);
  EXPECT_LT(timeouts, 12.0) << "retries were not spent: the retransmissions counted as the "
                               "peer's progress";
}

TEST(TcpSlowQueue, AnAckThatArrivedWhileThePollerSleptCountsBeforeTheTimeout) {
  // Two hosts, each its own fabric (both on one port, at their own addresses); the responder's
  // runs on a thread of its own, as on another machine.
  const uint16_t port = testing::TestPort(4);
  TcpFabric fabric_a{TcpFabricOptions{.port = port}};
  TcpFabric fabric_b{TcpFabricOptions{.port = port}};
  SoftProvider host_a({{{"a", "127.0.0.1"}}, &fabric_a});
  SoftProvider host_b({{{"b", "127.0.0.2"}}, &fabric_b});
  constexpr uint32_t kLen = 4096;
  std::vector<uint8_t> buf_a(kLen, 7), buf_b(kLen, 0);
  auto da = host_a.OpenDevice("a");
  auto db = host_b.OpenDevice("b");
  ASSERT_TRUE(da.ok() && db.ok());
  auto pa = (*da)->AllocPd();
  auto pb = (*db)->AllocPd();
  auto ca = (*da)->CreateCq(16);
  auto cb = (*db)->CreateCq(16);
  ASSERT_TRUE(pa.ok() && pb.ok() && ca.ok() && cb.ok());
  auto ma = (*pa)->RegisterMemory(buf_a.data(), kLen, 0xF);
  auto mb = (*pb)->RegisterMemory(buf_b.data(), kLen, 0xF);
  auto qa = (*pa)->CreateQp({ca->get(), ca->get(), {}, false});
  auto qb = (*pb)->CreateQp({cb->get(), cb->get(), {}, false});
  // A pair with the default timeout makes the hosts' TCP connection: the pair under test must not
  // spend its short timeout on connecting (under TSan on a slow day that took longer than it).
  auto wa = (*pa)->CreateQp({ca->get(), ca->get(), {}, false});
  auto wb = (*pb)->CreateQp({cb->get(), cb->get(), {}, false});
  ASSERT_TRUE(ma.ok() && mb.ok() && qa.ok() && qb.ok() && wa.ok() && wb.ok());
  const common::Status warm = testing::ConnectRc(**wa, (*da)->info(), **wb, (*db)->info());
  ASSERT_TRUE(warm.ok()) << warm.ToString();
  // timeout code 13: 33.6 ms, and no retry: the first timeout that counts ends the QP. The first
  // WRITE joins the pair to the connection within it; under ASan with busy neighbours a 4.2 ms
  // timeout was sometimes shorter than that join (the first WRITE ended in RETRY_EXC_ERR).
  testing::RcOptions rc;
  rc.timeout = 13;
  rc.retry_cnt = 0;
  const common::Status connected = testing::ConnectRc(**qa, (*da)->info(), **qb, (*db)->info(), rc);
  ASSERT_TRUE(connected.ok()) << connected.ToString();

  std::atomic<bool> stop{false};
  std::thread responder([&] {
    std::vector<ibv_wc> wcs(16);
    while (!stop.load(std::memory_order_relaxed)) (void)(*cb)->Poll(wcs);
  });
  // Polls the requester's CQ until one completion (at most ~10 s of rounds).
  auto await_one = [&](ibv_wc* got) {
    for (int round = 0; round < 20000000; ++round) {
      auto n = (*ca)->Poll(std::span<ibv_wc>(got, 1));
      if (!n.ok() || *n == 1) return n.ok();
    }
    return false;
  };
  auto post = [&](verbs::Qp& qp, uint64_t id) {
    return testing::PostRdma(qp, IBV_WR_RDMA_WRITE, reinterpret_cast<uint64_t>(buf_a.data()), kLen,
                             (*ma)->lkey(), reinterpret_cast<uint64_t>(buf_b.data()), (*mb)->rkey(),
                             id)
        .ok();
  };
  // The warm-up WRITE makes the connection, the first joins the pair under test to it; the second
  // leaves at once (a post outside a progress pass sends), and the poller sleeps through five
  // timeouts while the other host answers.
  ibv_wc warmed{}, first{}, second{};
  const bool got_warm = post(**wa, 9) && await_one(&warmed) && warmed.status == IBV_WC_SUCCESS;
  const bool posted_first = got_warm && post(**qa, 1);
  const bool got_first = posted_first && await_one(&first);
  const bool posted_second = got_first && post(**qa, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(170));
  const bool got_second = posted_second && await_one(&second);
  stop = true;
  responder.join();
  ASSERT_TRUE(got_warm) << ibv_wc_status_str(warmed.status);
  ASSERT_TRUE(got_first);
  EXPECT_EQ(first.status, IBV_WC_SUCCESS) << ibv_wc_status_str(first.status);
  ASSERT_TRUE(got_second);
  EXPECT_EQ(second.wr_id, 2u);
  EXPECT_EQ(second.status, IBV_WC_SUCCESS) << ibv_wc_status_str(second.status);
  EXPECT_EQ(buf_a, buf_b);
}

}  // namespace
}  // namespace braid::soft
