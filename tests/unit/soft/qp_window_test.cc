// The link's window (Channel::window_bytes): a QP keeps at most that many request bytes transmitted
// and unacknowledged; the rest wait in its send queue and go out as ACKs make room. Checked on the
// in-memory link, which takes the window as an option (the TCP link's default is 2 MiB).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "dataplane/soft/sim_fabric.h"
#include "tests/testutil/sim_testbed.h"

namespace braid::soft {
namespace {

using testing::SimNic;
using testing::SimTestbed;

constexpr uint32_t kMiB = 1 << 20;

void Fill(SimNic& nic, size_t offset, size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t i = 0; i < bytes; ++i) nic.data()[offset + i] = static_cast<uint8_t>(rng());
}

void Post(testing::SimQpPair& p, SimNic& local, SimNic& remote, ibv_wr_opcode op, size_t local_off,
          size_t remote_off, uint32_t bytes, uint64_t id) {
  ASSERT_TRUE(testing::PostRdma(*p.a, op, local.addr(local_off), bytes, local.mr->lkey(),
                                remote.addr(remote_off), remote.mr->rkey(), id)
                  .ok());
}

// Polls NIC `nic` until `n` completions have arrived; returns them in order.
std::vector<ibv_wc> Completions(SimTestbed& tb, int nic, size_t n) {
  std::vector<ibv_wc> out;
  ibv_wc wc[16];
  for (int round = 0; round < 200000 && out.size() < n; ++round) {
    auto got = tb.nic(nic).cq->Poll(wc);
    if (!got.ok()) break;
    out.insert(out.end(), wc, wc + *got);
  }
  return out;
}

void ExpectInOrderSuccess(const std::vector<ibv_wc>& wcs, size_t n) {
  ASSERT_EQ(wcs.size(), n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << i;
    EXPECT_EQ(wcs[i].wr_id, i);
  }
}

TEST(QpWindowTest, RequestsBeyondTheWindowWaitInTheSendQueue) {
  SimTestbed tb(2, 16 * kMiB, {.qp_window_bytes = 2 * kMiB});
  ASSERT_TRUE(tb.status().ok());
  auto p = tb.Connect(0, 1);
  ASSERT_TRUE(p.ok());
  Fill(tb.nic(0), 0, 8 * kMiB, 5);
  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, true).ok());  // nothing is acknowledged while held
  for (uint64_t i = 0; i < 8; ++i) {
    Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_WRITE, i * kMiB, i * kMiB, kMiB, i);
  }
  for (int i = 0; i < 10; ++i) tb.fabric().Progress();
  EXPECT_EQ(tb.fabric().PacketsOnPath(*p->a), 2u) << "two 1 MiB WRITEs fill a 2 MiB window";

  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, false).ok());
  ExpectInOrderSuccess(Completions(tb, 0, 8), 8);  // the window opened with every ACK
  EXPECT_EQ(std::memcmp(tb.nic(0).data(), tb.nic(1).data(), 8 * kMiB), 0);
}

TEST(QpWindowTest, ARequestLargerThanTheWindowStillGoesOutAlone) {
  SimTestbed tb(2, 8 * kMiB, {.qp_window_bytes = 2 * kMiB});
  ASSERT_TRUE(tb.status().ok());
  auto p = tb.Connect(0, 1);
  ASSERT_TRUE(p.ok());
  Fill(tb.nic(0), 0, 5 * kMiB, 6);
  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, true).ok());
  Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_WRITE, 0, 0, 4 * kMiB, 0);
  Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_WRITE, 4 * kMiB, 4 * kMiB, kMiB, 1);
  for (int i = 0; i < 10; ++i) tb.fabric().Progress();
  EXPECT_EQ(tb.fabric().PacketsOnPath(*p->a), 1u);

  ASSERT_TRUE(tb.fabric().HoldQp(*p->a, false).ok());
  ExpectInOrderSuccess(Completions(tb, 0, 2), 2);
  EXPECT_EQ(std::memcmp(tb.nic(0).data(), tb.nic(1).data(), 5 * kMiB), 0);
}

// Go-back-N rewinds the window's count: after a loss, WRITEs and READs inside and beyond the
// window all complete, in order, with the right bytes.
TEST(QpWindowTest, LossUnderTheWindowIsRecovered) {
  SimTestbed tb(2, 16 * kMiB, {.qp_window_bytes = 2 * kMiB});
  ASSERT_TRUE(tb.status().ok());
  auto p = tb.Connect(0, 1);
  ASSERT_TRUE(p.ok());
  Fill(tb.nic(0), 0, 4 * kMiB, 7);         // WRITE sources at NIC 0
  Fill(tb.nic(1), 8 * kMiB, 4 * kMiB, 8);  // READ sources at NIC 1
  ASSERT_TRUE(tb.fabric().DropNext(*p->a, 1).ok());
  for (uint64_t i = 0; i < 4; ++i) {
    Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_WRITE, i * kMiB, i * kMiB, kMiB, 2 * i);
    Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_READ, (8 + i) * kMiB, (8 + i) * kMiB, kMiB,
         2 * i + 1);
  }
  ExpectInOrderSuccess(Completions(tb, 0, 8), 8);
  EXPECT_EQ(std::memcmp(tb.nic(0).data(), tb.nic(1).data(), 4 * kMiB), 0);
  EXPECT_EQ(std::memcmp(tb.nic(0).data() + 8 * kMiB, tb.nic(1).data() + 8 * kMiB, 4 * kMiB), 0);
  ASSERT_TRUE(tb.fabric().DropNext(*p->a, 3).ok());  // and again, once the queue is short
  for (uint64_t i = 0; i < 3; ++i) {
    Post(*p, tb.nic(0), tb.nic(1), IBV_WR_RDMA_WRITE, i * kMiB, (4 + i) * kMiB, kMiB, 8 + i);
  }
  const auto more = Completions(tb, 0, 3);
  ASSERT_EQ(more.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(more[i].status, IBV_WC_SUCCESS);
    EXPECT_EQ(more[i].wr_id, 8 + i);
  }
  EXPECT_EQ(std::memcmp(tb.nic(0).data(), tb.nic(1).data() + 4 * kMiB, 3 * kMiB), 0);
}

}  // namespace
}  // namespace braid::soft
