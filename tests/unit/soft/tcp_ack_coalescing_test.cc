// The ACK of a request that completed a receive waits for the answer posted to it (one sendmsg for
// both) for at most the ACK delay: it leaves with the first frame its connection sends, at the
// first pass after the delay, or when a poller arms a CQ to sleep. All must hold: the ping-pong's
// ACKs travel with the pongs, also when the answer comes passes later (as an agent's client
// answers, a turn of the engine after the notification) or on another QP of the connection, and
// an unanswered message is still acknowledged (its sender completes, well before any timeout).
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
  explicit TcpAckCoalescingTest(uint32_t ack_delay_ns = TcpFabricOptions{}.ack_delay_ns)
      : fabric_(TcpFabricOptions{.port = testing::TestPort(6), .ack_delay_ns = ack_delay_ns}) {}
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
  bool WaitFor(int side, ibv_wc_opcode opcode, int count, int polls = 1000000) {
    auto& seen = seen_[static_cast<size_t>(side)];
    ibv_wc wc[4];
    for (int i = 0; i < polls && seen[opcode] < count; ++i) {
      auto n = cqs_[static_cast<size_t>(side)]->Poll(wc);
      if (!n.ok()) return false;
      for (int k = 0; k < *n; ++k) {
        EXPECT_EQ(wc[k].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc[k].status);
        ++seen[wc[k].opcode];
      }
    }
    return seen[opcode] >= count;
  }
  // WaitFor, in milliseconds; -1 if it did not happen. Well under the ACK timeout (67 ms) means the
  // ACK came by itself, not answering a retransmission.
  double MsUntil(int side, ibv_wc_opcode opcode, int count) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!WaitFor(side, opcode, count)) return -1;
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }

  // 200 WRITE_WITH_IMM round trips: most ACKs leave with a pong.
  void PingPong() {
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
  // B never answers; A polls, and the ACK comes anyway, well before a retransmission.
  void Unanswered() {
    PostRecv(1, 1);
    Ping(0, 7);
    ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, 1));
    EXPECT_EQ(fabric_.stats().acks_deferred, 1u);
    const double ms = MsUntil(0, IBV_WC_RDMA_WRITE, 1);
    EXPECT_GE(ms, 0);
    EXPECT_LT(ms, 30.0) << "the ACK waited for a retransmission";
  }

  // One WRITE and its completion: the connection is up and the QP attached at both ends.
  void WarmUp() {
    PostWrites(1, 1000);
    ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 1));
  }
  // Posts `count` zero-length WRITEs on A's QP, ids from `first_id`.
  void PostWrites(int count, uint64_t first_id) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(testing::PostRdma(*qps_[0], IBV_WR_RDMA_WRITE, 0, 0, 0, 0, 0, first_id + i).ok());
    }
  }

  std::map<int, int> seen_[2];
  TcpFabric fabric_;
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<std::unique_ptr<verbs::Qp>> qps_;
};

TEST_F(TcpAckCoalescingTest, PingPongAcksTravelWithThePongs) { PingPong(); }

TEST_F(TcpAckCoalescingTest, AnUnansweredMessageIsStillAcknowledgedAtTheNextPass) { Unanswered(); }

// braidd's delay: an ACK waits up to kSteadyPollerAckDelayNs for the answer.
class TcpSteadyPollerAckTest : public TcpAckCoalescingTest {
 protected:
  TcpSteadyPollerAckTest() : TcpAckCoalescingTest(kSteadyPollerAckDelayNs) {}
};

TEST_F(TcpSteadyPollerAckTest, PingPongAcksTravelWithThePongs) { PingPong(); }

TEST_F(TcpSteadyPollerAckTest, AnUnansweredMessageIsStillAcknowledgedAfterTheDelay) {
  Unanswered();
}

// Doorbell batching: WRs posted between BeginPostBatch() and EndPostBatch() wait and leave
// together at its end (one sendmsg for all), and each still completes. The engine brackets each
// turn of its loop so, and a session's batch of 4 KiB writes went from one sendmsg per fragment
// to one per connection.
TEST_F(TcpAckCoalescingTest, WritesPostedInABatchLeaveTogetherAtItsEnd) {
  constexpr int kWrites = 16;
  WarmUp();
  devices_[0]->BeginPostBatch();
  const uint64_t joined = fabric_.stats().frames_joined;
  PostWrites(kWrites, 0);
  EXPECT_EQ(fabric_.stats().frames_joined, joined) << "a batch's writes left before its end";
  devices_[0]->EndPostBatch();
  EXPECT_EQ(fabric_.stats().frames_joined - joined, uint64_t{kWrites - 1})
      << "the batch's " << kWrites << " writes should have left in one sendmsg";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 1 + kWrites));
}

// Outside a batch, a request posted while earlier ones of its QP are unacknowledged waits for the
// end of the next pass (its poller comes back for their ACKs) and leaves with the others posted
// meanwhile; the first post after an idle moment leaves at once. One sendmsg per post was what
// bounded the initiator at 4 KiB (braid_tcp_bench --rma-compare, 16 in flight: 0.15 Mops/s, 0.6
// with the posts joined).
TEST_F(TcpAckCoalescingTest, RequestsPostedBehindOutstandingOnesLeaveTogetherAtTheNextPass) {
  constexpr int kWrites = 16;
  WarmUp();
  const TcpFabricStats& s = fabric_.stats();
  const uint64_t joined = s.frames_joined, held = s.requests_held;
  PostWrites(kWrites, 0);
  EXPECT_EQ(s.requests_held - held, uint64_t{kWrites - 1}) << "only the first should leave at once";
  EXPECT_EQ(s.frames_joined, joined);
  ibv_wc wc[1];
  ASSERT_TRUE(cqs_[0]->Poll(wc).ok());  // one pass (nothing can have completed yet)
  EXPECT_GE(s.frames_joined - joined, uint64_t{kWrites - 2})
      << "the " << kWrites - 1 << " held writes should have left in one sendmsg";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 1 + kWrites));
}

// A poller that goes to sleep runs no more passes: arming its CQ sends the requests held.
TEST_F(TcpAckCoalescingTest, RequestsHeldBehindOthersLeaveWhenThePollerArmsToSleep) {
  WarmUp();
  const TcpFabricStats& s = fabric_.stats();
  const uint64_t joined = s.frames_joined, held = s.requests_held;
  PostWrites(3, 0);
  ASSERT_EQ(s.requests_held - held, 2u);
  ASSERT_TRUE(cqs_[0]->RequestNotify().ok());
  EXPECT_EQ(s.frames_joined - joined, 1u) << "arming did not send the two held writes";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RDMA_WRITE, 4));
}

// An ACK delay (4.3 s) far beyond the test's length: only a frame to ride with, or a poller arming
// its CQ, lets a held ACK go.
class TcpLongAckHoldTest : public TcpAckCoalescingTest {
 protected:
  TcpLongAckHoldTest() : TcpAckCoalescingTest(UINT32_MAX) {}
};

// An agent's client answers a notification a turn of the engine later: passes run between the
// receive and the answer, and the ACK must still be there to ride with it (it used to leave at the
// next pass, one sendmsg of its own on the critical path of every round trip).
TEST_F(TcpLongAckHoldTest, AnAckWaitsAcrossPassesForTheAnswer) {
  PostRecv(1, 1);
  Ping(0, 7);
  ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, 1));
  // Passes on both ends (the fabric is shared), no answer yet: the ping stays unacknowledged.
  EXPECT_FALSE(WaitFor(0, IBV_WC_RDMA_WRITE, 1, 2000)) << "the ACK left without an answer";
  const uint64_t joined = fabric_.stats().frames_joined;
  PostRecv(0, 1);
  Ping(1, 8);  // the answer: the ACK goes with it
  const double ms = MsUntil(0, IBV_WC_RDMA_WRITE, 1);
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 30.0) << "the ACK did not go with the answer: a retransmission fetched it";
  ASSERT_TRUE(WaitFor(0, IBV_WC_RECV_RDMA_WITH_IMM, 1));
  EXPECT_EQ(fabric_.stats().frames_joined, joined + 1) << "the ACK and the answer: one sendmsg";
}

// A poller that goes to sleep runs no more passes: arming its CQ sends what it holds.
TEST_F(TcpLongAckHoldTest, AHeldAckLeavesWhenItsPollerArmsToSleep) {
  PostRecv(1, 1);
  Ping(0, 7);
  ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, 1));
  EXPECT_FALSE(WaitFor(0, IBV_WC_RDMA_WRITE, 1, 2000));
  ASSERT_TRUE(cqs_[1]->RequestNotify().ok());
  const double ms = MsUntil(0, IBV_WC_RDMA_WRITE, 1);
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 30.0) << "arming did not release the held ACK: a retransmission fetched it";
}

// A multi-QP VQP answers on whichever QP it picks next: an ACK held on one QP rides with a frame of
// another QP sharing its connection.
TEST_F(TcpLongAckHoldTest, AHeldAckRidesWithAnotherQpsFrameOnItsConnection) {
  std::vector<std::unique_ptr<verbs::Qp>> more;
  for (size_t side = 0; side < 2; ++side) {
    more.push_back(
        std::move(pds_[side]->CreateQp({cqs_[side].get(), cqs_[side].get(), {}, false})).value());
  }
  ASSERT_TRUE(
      testing::ConnectRc(*more[0], devices_[0]->info(), *more[1], devices_[1]->info(), {}).ok());
  PostRecv(1, 1);
  Ping(0, 7);
  ASSERT_TRUE(WaitFor(1, IBV_WC_RECV_RDMA_WITH_IMM, 1));
  EXPECT_FALSE(WaitFor(0, IBV_WC_RDMA_WRITE, 1, 2000));
  ASSERT_TRUE(testing::PostRdma(*more[1], IBV_WR_RDMA_WRITE, 0, 0, 0, 0, 0, 9).ok());
  const double ms = MsUntil(0, IBV_WC_RDMA_WRITE, 1);
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 30.0) << "the held ACK did not ride with the write: a retransmission fetched it";
  EXPECT_TRUE(WaitFor(1, IBV_WC_RDMA_WRITE, 1));
}

}  // namespace
}  // namespace braid::soft
