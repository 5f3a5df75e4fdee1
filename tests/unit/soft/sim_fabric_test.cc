#include "dataplane/soft/sim_fabric.h"

#include <gtest/gtest.h>

#include "dataplane/soft/packet.h"
#include "tests/testutil/sim_testbed.h"

namespace braid::soft {
namespace {

using testing::SimQpPair;
using testing::SimTestbed;

TEST(PsnTest, TwentyFourBitRing) {
  EXPECT_EQ(PsnNext(0xFFFFFF), 0u);
  EXPECT_EQ(PsnDiff(0, 0xFFFFFF), 1);
  EXPECT_EQ(PsnDiff(0xFFFFFF, 0), -1);
  EXPECT_EQ(PsnDiff(5, 5), 0);
  EXPECT_EQ(PsnDiff(0x7FFFFF, 0), 0x7FFFFF);
}

void PostWriteImm(verbs::Qp& qp, testing::SimNic& src, testing::SimNic& dst, uint64_t id) {
  ASSERT_TRUE(testing::PostRdma(qp, IBV_WR_RDMA_WRITE_WITH_IMM, src.addr(0), 8, src.mr->lkey(),
                                dst.addr(64), dst.mr->rkey(), id, static_cast<uint32_t>(id))
                  .ok());
}

void PostRecvs(verbs::Qp& qp, int n) {
  for (int i = 0; i < n; ++i) {
    ibv_recv_wr wr{};
    wr.wr_id = static_cast<uint64_t>(i);
    ibv_recv_wr* bad = nullptr;
    ASSERT_TRUE(qp.PostRecv(&wr, &bad).ok());
  }
}

// The order in which NIC 1 sees receive completions of two QPs from NICs 0 and 2.
std::vector<uint32_t> ArrivalOrder(uint64_t seed) {
  SimTestbed tb(3, 4096, {.seed = seed});
  EXPECT_TRUE(tb.status().ok());
  auto p = tb.Connect(0, 1);
  auto q = tb.Connect(2, 1);
  std::vector<uint32_t> order;
  for (int i = 0; i < 20; ++i) {
    PostRecvs(*p->b, 1);
    PostRecvs(*q->b, 1);
    PostWriteImm(*p->a, tb.nic(0), tb.nic(1), 1000 + i);
    PostWriteImm(*q->a, tb.nic(2), tb.nic(1), 2000 + i);
  }
  ibv_wc wc[8];
  for (int round = 0; round < 10000 && order.size() < 40; ++round) {
    auto n = tb.nic(1).cq->Poll(wc);
    for (int k = 0; k < *n; ++k) order.push_back(wc[k].imm_data);
  }
  p->a.reset(), p->b.reset(), q->a.reset(), q->b.reset();
  return order;
}

TEST(SimFabricTest, SameSeedSameInterleavingOtherSeedOther) {
  const auto a = ArrivalOrder(7);
  const auto b = ArrivalOrder(7);
  const auto c = ArrivalOrder(8);
  ASSERT_EQ(a.size(), 40u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c) << "a different seed interleaves the QPs differently";
  // Within one QP order always holds.
  std::vector<uint32_t> from_p;
  for (uint32_t imm : a) {
    if (imm < 2000) from_p.push_back(imm);
  }
  for (size_t i = 0; i < from_p.size(); ++i) EXPECT_EQ(from_p[i], 1000 + i);
}

TEST(SimFabricTest, PerNicDelayReordersAcrossNics) {
  SimTestbed tb(3, 4096, {.seed = 1, .reorder = false});
  ASSERT_TRUE(tb.status().ok());
  auto slow = tb.Connect(0, 1);
  auto fast = tb.Connect(2, 1);
  ASSERT_TRUE(tb.fabric().SetNicDelay("soft0", 50'000).ok());
  PostRecvs(*slow->b, 1);
  PostRecvs(*fast->b, 1);
  PostWriteImm(*slow->a, tb.nic(0), tb.nic(1), 1);  // sent first
  PostWriteImm(*fast->a, tb.nic(2), tb.nic(1), 2);
  std::vector<uint32_t> order;
  ibv_wc wc[4];
  for (int round = 0; round < 1000 && order.size() < 2; ++round) {
    auto n = tb.nic(1).cq->Poll(wc);
    for (int k = 0; k < *n; ++k) order.push_back(wc[k].imm_data);
  }
  EXPECT_EQ(order, (std::vector<uint32_t>{2, 1}));
  EXPECT_GE(tb.fabric().NowNs(), 50'000u);
}

TEST(SimFabricTest, HeldPathStopsTimeSoNothingTimesOut) {
  SimTestbed tb(2, 4096);
  auto p = tb.Connect(0, 1, {}, {.timeout = 1, .retry_cnt = 0});
  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, true).ok());
  PostWriteImm(*p->a, tb.nic(0), tb.nic(1), 1);
  PostRecvs(*p->b, 1);
  const uint64_t t0 = tb.fabric().NowNs();
  for (int i = 0; i < 1000; ++i) tb.fabric().Progress();
  EXPECT_EQ(tb.fabric().NowNs(), t0);
  EXPECT_EQ(tb.fabric().in_flight(), 1u);
  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, false).ok());
  EXPECT_TRUE(tb.fabric().RunUntilIdle());
  ibv_wc wc[4];
  auto n = tb.nic(0).cq->Poll(wc);
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
}

TEST(SimFabricTest, NicDownFailsOnlyThatNicsQps) {
  SimTestbed tb(4, 4096);
  auto down = tb.Connect(0, 1, {}, {.timeout = 8, .retry_cnt = 2});
  auto up = tb.Connect(2, 3, {}, {.timeout = 8, .retry_cnt = 2});
  ASSERT_TRUE(tb.fabric().SetNicUp("soft1", false).ok());
  PostWriteImm(*down->a, tb.nic(0), tb.nic(1), 1);
  PostRecvs(*up->b, 1);
  PostWriteImm(*up->a, tb.nic(2), tb.nic(3), 2);
  tb.fabric().RunUntilIdle();
  ibv_wc wc[4];
  auto n = tb.nic(0).cq->Poll(wc);
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(down->a->state(), verbs::QpState::kError);
  n = tb.nic(2).cq->Poll(wc);
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(up->a->state(), verbs::QpState::kRts);
  EXPECT_GT(tb.fabric().dropped(), 0u);
  // Back up: a fresh QP pair on that NIC works again.
  ASSERT_TRUE(tb.fabric().SetNicUp("soft1", true).ok());
  auto again = tb.Connect(0, 1);
  PostRecvs(*again->b, 1);
  PostWriteImm(*again->a, tb.nic(0), tb.nic(1), 3);
  tb.fabric().RunUntilIdle();
  n = tb.nic(0).cq->Poll(wc);
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
}

TEST(SimFabricTest, ControlsNameUnknownQpsAndNicsClearly) {
  SimTestbed tb(2, 4096);
  auto qp = tb.nic(0).pd->CreateQp({tb.nic(0).cq.get(), tb.nic(0).cq.get(), {}, false});
  ASSERT_TRUE(qp.ok());
  EXPECT_EQ(tb.fabric().BreakQp(**qp).code(), common::StatusCode::kNotFound) << "not connected";
  EXPECT_EQ(tb.fabric().SetNicUp("soft9", false).code(), common::StatusCode::kNotFound);
}

TEST(SoftQpTest, StateMachineRejectsSkippedTransitions) {
  SimTestbed tb(2, 4096);
  auto qp = tb.nic(0).pd->CreateQp({tb.nic(0).cq.get(), tb.nic(0).cq.get(), {}, false});
  ASSERT_TRUE(qp.ok());
  verbs::Qp& q = **qp;
  EXPECT_EQ(q.state(), verbs::QpState::kReset);
  EXPECT_FALSE(q.ToRts({}).ok());
  verbs::QpRtrParams rtr;
  rtr.remote = {tb.nic(1).device->info().gid, 0, 0x100, 0};
  EXPECT_FALSE(q.ToRtr(rtr).ok()) << "RTR needs INIT";
  ASSERT_TRUE(q.ToInit({}).ok());
  verbs::QpRtrParams no_gid;
  EXPECT_FALSE(q.ToRtr(no_gid).ok()) << "remote GID required";
  ASSERT_TRUE(q.ToRtr(rtr).ok());
  EXPECT_FALSE(q.ToRts({.retry_cnt = 9}).ok());
  ASSERT_TRUE(q.ToRts({}).ok());
  EXPECT_EQ(q.state(), verbs::QpState::kRts);
  ASSERT_TRUE(q.ToError().ok());
  EXPECT_EQ(q.state(), verbs::QpState::kError);
  ASSERT_TRUE(q.ToReset().ok());
  EXPECT_EQ(q.state(), verbs::QpState::kReset);
  ASSERT_TRUE(q.ToInit({}).ok()) << "a reset QP can be connected again";
}

TEST(SoftQpTest, QpNumbersRepeatAcrossDevices) {
  SimTestbed tb(2, 4096);
  auto a = tb.nic(0).pd->CreateQp({tb.nic(0).cq.get(), tb.nic(0).cq.get(), {}, false});
  auto b = tb.nic(1).pd->CreateQp({tb.nic(1).cq.get(), tb.nic(1).cq.get(), {}, false});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->qp_num(), (*b)->qp_num()) << "upper layers must key QPs by (device, qpn)";
}

}  // namespace
}  // namespace braid::soft
