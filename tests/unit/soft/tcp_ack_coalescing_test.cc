// Issue 5's latency: the ACK of a request that completed a receive waits within the progress pass
// and leaves with the answer the application posts next (one sendmsg for both), or at the next
// pass when no answer comes. Both must hold: the ping-pong's ACKs travel with the pongs, and an
// unanswered message is still acknowledged (its sender completes, well before any timeout).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

class TcpAckCoalescingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"soft0", "soft1"}) {
      devices_.push_back(std::move(provider_.OpenDevice(name)).value());
      pds_.push_back(std::move(devices_.back()->AllocPd()).value());
      cqs_.push_back(std::move(devices_.back()->CreateCq(256)).value());
      qps_.push_back(
          std::move(pds_.back()->CreateQp({cqs_.back().get(), cqs_.back().get(), {}, false}))
              .value());
    }
    testing::RcOptions rc;
    rc.timeout = 14;  // 67 ms: an ACK stuck until a retransmission would show in the time taken
    ASSERT_TRUE(
        testing::ConnectRc(*qps_[0], devices_[0]->info(), *qps_[1], devices_[1]->info(), rc).ok());
  }
  void PostRecv(int side, uint64_t id) {
    ibv_recv_wr wr{};
    wr.wr_id = id;
    ibv_recv_wr* bad = nullptr;
    ASSERT_TRUE(qps_[static_cast<size_t>(side)]->PostRecv(&wr, &bad).ok());
  }
  void Ping(int side, uint64_t id) {
    ASSERT_TRUE(testing::PostRdma(*qps_[static_cast<size_t>(side)], IBV_WR_RDMA_WRITE_WITH_IMM, 0,
                                  0, 0, 0, 0, id, 0x1234)
                    .ok());
  }
  // Polls `side` until it has seen `count` completions of `opcode` in all; every completion must
  // be a success.
  bool WaitFor(int side, ibv_wc_opcode opcode, int count) {
    auto& seen = seen_[static_cast<size_t>(side)];
    ibv_wc wc[4];
    for (int i = 0; i < 1000000 && seen[opcode] < count; ++i) {
      auto n = cqs_[static_cast<size_t>(side)]->Poll(wc);
      if (!n.ok()) return false;
      for (int k = 0; k < *n; ++k) {
        EXPECT_EQ(wc[k].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc[k].status);
        ++seen[wc[k].opcode];
      }
    }
    return seen[opcode] >= count;
  }

  std::map<int, int> seen_[2];
  TcpFabric fabric_{TcpFabricOptions{.port = testing::TestPort(6)}};
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<std::unique_ptr<verbs::Qp>> qps_;
};

TEST_F(TcpAckCoalescingTest, PingPongAcksTravelWithThePongs) {
  constexpr int kRounds = 200;
  for (int i = 0; i < kRounds; ++i) {
    PostRecv(0, i);
    PostRecv(1, i);
  }
  for (int i = 0; i < kRounds; ++i) {
    Ping(0, i);
    ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, i + 1)) << i;
    Ping(1, i);  // the pong: B's ACK of the ping goes with it
    ASSERT_TRUE(WaitFor(0, IBV_WC_RECV_RDMA_WITH_IMM, i + 1)) << i;
    ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, i + 1)) << i;  // the ping's completion (its ACK)
  }
  ASSERT_TRUE(WaitFor(1, IBV_WC_RDMA_WRITE, kRounds));  // the last pong's ACK: nothing follows
  const TcpFabricStats& s = fabric_.stats();
  std::printf("%d round trips: %lu ACKs deferred, %lu frames joined a sendmsg\n", kRounds,
              static_cast<unsigned long>(s.acks_deferred),
              static_cast<unsigned long>(s.frames_joined));
  EXPECT_GE(s.acks_deferred, static_cast<uint64_t>(kRounds));
  EXPECT_GE(s.frames_joined, static_cast<uint64_t>(kRounds));  // most ACKs left with a pong
}

TEST_F(TcpAckCoalescingTest, AnUnansweredMessageIsStillAcknowledgedAtTheNextPass) {
  PostRecv(1, 1);
  const auto t0 = std::chrono::steady_clock::now();
  Ping(0, 7);
  ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, 1));
  EXPECT_EQ(fabric_.stats().acks_deferred, 1u);
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 1));  // B never answers; A polls, the ACK comes anyway
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count();
  EXPECT_LT(ms, 30.0) << "the ACK waited for a retransmission";  // the timer is 67 ms
}

// Doorbell batching: WRs posted between BeginPostBatch() and EndPostBatch() wait and leave
// together at its end (one sendmsg for all), and each still completes; outside a batch each post
// is sent at once. The engine brackets each turn of its loop so, and a session's batch of 4 KiB
// writes went from one sendmsg per fragment to one per connection.
TEST_F(TcpAckCoalescingTest, WritesPostedInABatchLeaveTogetherAtItsEnd) {
  constexpr int kWrites = 16;
  auto post_writes = [&](uint64_t first_id) {
    for (int i = 0; i < kWrites; ++i) {
      ASSERT_TRUE(testing::PostRdma(*qps_[0], IBV_WR_RDMA_WRITE, 0, 0, 0, 0, 0, first_id + i).ok());
    }
  };
  const uint64_t joined0 = fabric_.stats().frames_joined;
  post_writes(0);
  EXPECT_EQ(fabric_.stats().frames_joined, joined0) << "unbatched posts should leave one by one";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, kWrites));

  devices_[0]->BeginPostBatch();
  const uint64_t joined1 = fabric_.stats().frames_joined;
  post_writes(kWrites);
  devices_[0]->EndPostBatch();
  EXPECT_EQ(fabric_.stats().frames_joined - joined1, uint64_t{kWrites - 1})
      << "the batch's " << kWrites << " writes should have left in one sendmsg";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 2 * kWrites));
}

}  // namespace
}  // namespace braid::soft
