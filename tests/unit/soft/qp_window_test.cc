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

// Two soft NICs on the in-memory link with a 2 MiB window, one QP pair from NIC 0 to NIC 1.
class QpWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tb_.status().ok());
    auto p = tb_.Connect(0, 1);
    ASSERT_TRUE(p.ok());
    p_ = std::move(*p);
  }

  // A WRITE (or READ) between NIC 0's buffer at `local` and NIC 1's at `remote`.
  void Post(ibv_wr_opcode op, size_t local, size_t remote, uint32_t bytes, uint64_t id) {
    ASSERT_TRUE(testing::PostRdma(*p_.a, op, tb_.nic(0).addr(local), bytes, tb_.nic(0).mr->lkey(),
                                  tb_.nic(1).addr(remote), tb_.nic(1).mr->rkey(), id)
                    .ok());
  }
  void Hold(bool hold) { ASSERT_TRUE(tb_.fabric().HoldQp(*p_.a, hold).ok()); }
  size_t PacketsOnPath() {
    for (int i = 0; i < 10; ++i) tb_.fabric().Progress();
    return tb_.fabric().PacketsOnPath(*p_.a);
  }
  // Polls NIC 0 for `n` send completions and expects wr_ids first_id.. in order, all successful.
  void ExpectInOrderSuccess(uint64_t first_id, size_t n) {
    std::vector<ibv_wc> got;
    ibv_wc wc[16];
    for (int round = 0; round < 200000 && got.size() < n; ++round) {
      auto polled = tb_.nic(0).cq->Poll(wc);
      if (!polled.ok()) break;
      got.insert(got.end(), wc, wc + *polled);
    }
    ASSERT_EQ(got.size(), n);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(got[i].status, IBV_WC_SUCCESS) << i;
      EXPECT_EQ(got[i].wr_id, first_id + i);
    }
  }
  bool Same(size_t local, size_t remote, size_t bytes) {
    return std::memcmp(tb_.nic(0).data() + local, tb_.nic(1).data() + remote, bytes) == 0;
  }

  SimTestbed tb_{2, 16 * kMiB, {.qp_window_bytes = 2 * kMiB}};
  testing::SimQpPair p_;
};

TEST_F(QpWindowTest, RequestsBeyondTheWindowWaitInTheSendQueue) {
  Fill(tb_.nic(0), 0, 8 * kMiB, 5);
  Hold(true);  // nothing is acknowledged while held
  for (uint64_t i = 0; i < 8; ++i) Post(IBV_WR_RDMA_WRITE, i * kMiB, i * kMiB, kMiB, i);
  EXPECT_EQ(PacketsOnPath(), 2u) << "two 1 MiB WRITEs fill a 2 MiB window";

  Hold(false);
  ExpectInOrderSuccess(0, 8);  // the window opened with every ACK
  EXPECT_TRUE(Same(0, 0, 8 * kMiB));
}

TEST_F(QpWindowTest, ARequestLargerThanTheWindowStillGoesOutAlone) {
  Fill(tb_.nic(0), 0, 5 * kMiB, 6);
  Hold(true);
  Post(IBV_WR_RDMA_WRITE, 0, 0, 4 * kMiB, 0);
  Post(IBV_WR_RDMA_WRITE, 4 * kMiB, 4 * kMiB, kMiB, 1);
  EXPECT_EQ(PacketsOnPath(), 1u);

  Hold(false);
  ExpectInOrderSuccess(0, 2);
  EXPECT_TRUE(Same(0, 0, 5 * kMiB));
}

// Go-back-N rewinds the window's count: after a loss, WRITEs and READs inside and beyond the
// window all complete, in order, with the right bytes.
TEST_F(QpWindowTest, LossUnderTheWindowIsRecovered) {
  Fill(tb_.nic(0), 0, 4 * kMiB, 7);         // WRITE sources at NIC 0
  Fill(tb_.nic(1), 8 * kMiB, 4 * kMiB, 8);  // READ sources at NIC 1
  ASSERT_TRUE(tb_.fabric().DropNext(*p_.a, 1).ok());
  for (uint64_t i = 0; i < 4; ++i) {
    Post(IBV_WR_RDMA_WRITE, i * kMiB, i * kMiB, kMiB, 2 * i);
    Post(IBV_WR_RDMA_READ, (8 + i) * kMiB, (8 + i) * kMiB, kMiB, 2 * i + 1);
  }
  ExpectInOrderSuccess(0, 8);
  EXPECT_TRUE(Same(0, 0, 4 * kMiB));
  EXPECT_TRUE(Same(8 * kMiB, 8 * kMiB, 4 * kMiB));

  ASSERT_TRUE(tb_.fabric().DropNext(*p_.a, 3).ok());  // and again, once the queue is short
  for (uint64_t i = 0; i < 3; ++i) Post(IBV_WR_RDMA_WRITE, i * kMiB, (4 + i) * kMiB, kMiB, 8 + i);
  ExpectInOrderSuccess(8, 3);
  EXPECT_TRUE(Same(0, 4 * kMiB, 3 * kMiB));
}

}  // namespace
}  // namespace braid::soft
