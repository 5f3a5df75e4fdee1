// Dead QPs come back: recovery of a dead data QP: both sides reset the QP pair (BeginReset,
// ResetQp) and reconnect it with each other's new entry (ReconnectQp); the QP is Healthy again,
// carries data, and its receive pool works (DQPLB and SPRAY messages arrive intact after it).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/testutil/small_vqp_config.h"
#include "tests/testutil/vqp_testbed.h"

namespace braid::vqp {
namespace {

using testing::VqpTestbed;

class QpRecoveryTest : public ::testing::TestWithParam<Scheme> {
 protected:
  static constexpr size_t kBytes = 4 << 20;
  QpRecoveryTest() : tb_(2, testing::SmallVqpConfig(GetParam(), 4), kBytes) {
    uint8_t* a = tb_.data(0);
    for (size_t i = 0; i < kBytes; ++i) a[i] = static_cast<uint8_t>(i * 31 + (i >> 9));
  }

  // `count` write-with-imm messages of `len` bytes from A, each with a receive at B; all must
  // succeed at both ends with their immediates, and the bytes arrive.
  void MoveMessages(int count, uint64_t len, uint64_t first_id) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(tb_.b().vqp->PostRecv({first_id + i, 0, 0, 0}).ok());
    }
    std::memset(tb_.data(1), 0, kBytes);
    for (int i = 0; i < count; ++i) {
      const uint64_t off = static_cast<uint64_t>(i) * len;
      ASSERT_TRUE(tb_.a()
                      .vqp
                      ->PostSend(tb_.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, off, len, off, first_id + i,
                                        htonl(0x700 + i)))
                      .ok());
    }
    auto sent = tb_.Poll(0, static_cast<size_t>(count));
    ASSERT_EQ(sent.size(), static_cast<size_t>(count));
    for (const auto& wc : sent)
      EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
    auto got = tb_.Poll(1, static_cast<size_t>(count));
    ASSERT_EQ(got.size(), static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      EXPECT_EQ(got[static_cast<size_t>(i)].status, IBV_WC_SUCCESS);
      EXPECT_EQ(got[static_cast<size_t>(i)].imm_data, htonl(0x700 + i));
      EXPECT_EQ(got[static_cast<size_t>(i)].byte_len, len);
    }
    EXPECT_EQ(std::memcmp(tb_.data(0), tb_.data(1), static_cast<size_t>(count) * len), 0);
  }

  // Breaks physical QP `index` under load (it dies at A, its work fails over, every message still
  // arrives), then recovers it on both sides; it is Healthy again.
  // A SEND of 4 KiB from A into a receive at B (the message QP's traffic); returns A's status.
  ibv_wc_status Send(uint64_t id) {
    EXPECT_TRUE(tb_.b().vqp->PostRecv({id, tb_.b().addr(1 << 20), 4096, tb_.b().local_keys}).ok());
    EXPECT_TRUE(tb_.a().vqp->PostSend(tb_.Wr(0, IBV_WR_SEND, 0, 4096, 0, id)).ok());
    auto wc = tb_.Poll(0, 1);
    return wc.size() == 1 ? wc[0].status : IBV_WC_GENERAL_ERR;
  }

  void BreakAndRecover(int index) {
    VirtualQp& va = *tb_.a().vqp;
    VirtualQp& vb = *tb_.b().vqp;
    const bool message_qp = index == va.num_physical_qps() - 1;
    ASSERT_TRUE(tb_.fabric().BreakQp(va.physical_qp(index)).ok());
    if (message_qp) {
      EXPECT_EQ(Send(900), IBV_WC_RETRY_EXC_ERR);  // SENDs are never replayed
    } else {
      MoveMessages(16, 64 * 1024, 200);
    }
    ASSERT_EQ(va.health(index), QpHealth::kDead);
    EXPECT_EQ(va.death(index), IBV_WC_RETRY_EXC_ERR);
    EXPECT_EQ(vb.health(index), QpHealth::kHealthy) << "the responder saw nothing";
    ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(index)).ok());
    EXPECT_EQ(va.ResetQp(index, 77).status().code(), common::StatusCode::kFailedPrecondition);
    Recover(index);
    EXPECT_EQ(va.health(index), QpHealth::kHealthy);
    EXPECT_EQ(vb.health(index), QpHealth::kHealthy);
  }

  // Both sides reset physical QP `index` and reconnect it with each other's new entry; returns
  // once both probes came back (or after a bounded number of rounds).
  void Recover(int index) {
    VirtualQp& va = *tb_.a().vqp;
    VirtualQp& vb = *tb_.b().vqp;
    ASSERT_TRUE(va.BeginReset(index).ok());
    ASSERT_TRUE(vb.BeginReset(index).ok());
    EXPECT_EQ(vb.health(index), QpHealth::kDead);  // no new work while it resets
    for (int i = 0; i < 1000 && !(va.ResetReady(index) && vb.ResetReady(index)); ++i) {
      tb_.PollBoth(10, &during_reset_a_, &during_reset_b_);
    }
    ASSERT_TRUE(va.ResetReady(index) && vb.ResetReady(index));
    auto ca = va.ResetQp(index, 0x123456);
    auto cb = vb.ResetQp(index, 0xABCDEF);
    ASSERT_TRUE(ca.ok() && cb.ok()) << ca.status().ToString() << cb.status().ToString();
    EXPECT_EQ(ca->qp_num, va.physical_qp(index).qp_num());
    EXPECT_EQ(ca->psn, 0x123456u);
    ASSERT_TRUE(va.ReconnectQp(index, *cb).ok());
    ASSERT_TRUE(vb.ReconnectQp(index, *ca).ok());
    // Each side's probe must come back before the QP takes work.
    EXPECT_EQ(va.health(index), QpHealth::kDraining);
    for (int i = 0; i < 1000 && !(ProbeDone(va, index) && ProbeDone(vb, index)); ++i) {
      tb_.PollBoth(10, &during_reset_a_, &during_reset_b_);
    }
  }
  static bool ProbeDone(const VirtualQp& v, int index) {
    return v.health(index) != QpHealth::kDraining || v.outstanding(index) == 0;
  }

  VqpTestbed tb_;
  std::vector<VirtualWc> during_reset_a_, during_reset_b_;  // completions while resetting
};

TEST_P(QpRecoveryTest, ADeadDataQpIsResetReconnectedAndCarriesDataAgain) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  MoveMessages(8, 64 * 1024, 100);
  EXPECT_EQ(va.BeginReset(va.num_physical_qps()).code(), common::StatusCode::kOutOfRange);
  BreakAndRecover(1);
  EXPECT_TRUE(during_reset_a_.empty() && during_reset_b_.empty());  // user work was not touched
  EXPECT_EQ(va.healthy_data_qps(), 4);
  const uint64_t before = va.traffic(1).write_bytes;
  MoveMessages(32, 64 * 1024, 3000);
  EXPECT_GT(va.traffic(1).write_bytes, before);
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
}

TEST_P(QpRecoveryTest, ADeadMessageQpIsRecoveredToo) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  MoveMessages(8, 64 * 1024, 100);
  BreakAndRecover(va.num_physical_qps() - 1);
  // B's receive posted for the lost SEND came back flushed with the reset.
  const auto& flushed = during_reset_b_;
  ASSERT_EQ(flushed.size(), 1u);
  EXPECT_EQ(flushed[0].wr_id, 900u);
  EXPECT_NE(flushed[0].status, IBV_WC_SUCCESS);
  // SENDs work again, and data messages too.
  std::memset(tb_.data(1) + (1 << 20), 0, 4096);
  EXPECT_EQ(Send(901), IBV_WC_SUCCESS);
  auto got = tb_.Poll(1, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(got[0].byte_len, 4096u);
  EXPECT_EQ(std::memcmp(tb_.data(0), tb_.data(1) + (1 << 20), 4096), 0);
  MoveMessages(32, 64 * 1024, 3000);
  EXPECT_EQ(va.health(va.num_physical_qps() - 1), QpHealth::kHealthy);
}

// Every data QP dies while write-with-imm messages are in flight (their notifies or tails, which
// the peer's stream waits for, cannot be sent). Each message fails at the sender; once the QPs are
// back, the peer gets one completion per failed message (the owed sequence numbers arrive as
// voids) and new messages flow with their notifications, in order.
TEST_P(QpRecoveryTest, AllDataQpsDeadWithMessagesInFlightTheStreamResumesAfterRecovery) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  MoveMessages(4, 64 * 1024, 100);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(tb_.b().vqp->PostRecv({500u + i, 0, 0, 0}).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(tb_.fabric().BreakQp(va.physical_qp(i)).ok());
  for (int i = 0; i < 8; ++i) {
    const uint64_t off = static_cast<uint64_t>(i) * 64 * 1024;
    ASSERT_TRUE(tb_.a()
                    .vqp
                    ->PostSend(tb_.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, off, 64 * 1024, off, 500u + i,
                                      htonl(0x500 + i)))
                    .ok());
  }
  auto failed = tb_.Poll(0, 8);
  ASSERT_EQ(failed.size(), 8u);
  for (const auto& wc : failed) EXPECT_NE(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(va.healthy_data_qps(), 0);
  during_reset_b_.clear();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(i)).ok());
    Recover(i);
    ASSERT_EQ(va.health(i), QpHealth::kHealthy) << "QP " << i;
  }
  // The receives posted for the failed messages complete, in order, none of them successfully
  // with data that never came.
  std::vector<VirtualWc> ends = during_reset_b_;
  for (const VirtualWc& wc : tb_.Poll(1, 8 - std::min<size_t>(ends.size(), 8))) ends.push_back(wc);
  ASSERT_EQ(ends.size(), 8u) << "the peer's stream is still waiting for the failed messages";
  for (size_t i = 0; i < ends.size(); ++i) {
    EXPECT_EQ(ends[i].wr_id, 500u + i);
    EXPECT_EQ(ends[i].status, IBV_WC_REM_ABORT_ERR) << ibv_wc_status_str(ends[i].status);
  }
  MoveMessages(64, 64 * 1024, 3000);
}

// One WRITE with a remote key the peer never issued fails alone: it is not replayed on other QPs
// (where it would fail again and kill them too); only the QP it hit dies, and every other
// operation, before and after, succeeds.
TEST_P(QpRecoveryTest, ABadKeyFailsOnlyItsOperationAndOnlyTheQpItHit) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  auto bad = va.AddRemoteKeys(std::vector<uint32_t>(2, 0x5EED1234u));
  ASSERT_TRUE(bad.ok());
  for (int i = 0; i < 24; ++i) {
    VirtualSendWr wr = tb_.Wr(0, IBV_WR_RDMA_WRITE, 0, 16 * 1024, 0, 700u + i);
    if (i == 12) wr.remote_keys = *bad;
    ASSERT_TRUE(va.PostSend(wr).ok());
  }
  auto wcs = tb_.Poll(0, 24);
  ASSERT_EQ(wcs.size(), 24u);
  for (size_t i = 0; i < wcs.size(); ++i) {
    EXPECT_EQ(wcs[i].wr_id, 700u + i);
    EXPECT_EQ(wcs[i].status, i == 12 ? IBV_WC_REM_ACCESS_ERR : IBV_WC_SUCCESS)
        << "op " << i << ": " << ibv_wc_status_str(wcs[i].status);
  }
  EXPECT_EQ(va.counters().qps_died, 1u);
  EXPECT_EQ(va.healthy_data_qps(), 3);
  MoveMessages(16, 64 * 1024, 3000);
}

// A QP that dies on a drained device and is recovered stays out of service until the operator
// re-admits the device.
TEST_P(QpRecoveryTest, AQpRecoveredOnADrainedDeviceStaysOutOfService) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  const int device = va.physical_device(1);
  ASSERT_TRUE(va.DrainDevice(device).ok());
  ASSERT_EQ(va.health(1), QpHealth::kDraining);
  ASSERT_TRUE(tb_.fabric().BreakQp(va.physical_qp(1)).ok());
  ASSERT_TRUE(va.BeginReset(1).ok());
  ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(1)).ok());
  Recover(1);
  EXPECT_EQ(va.health(1), QpHealth::kDraining) << "recovery undid the drain";
  const uint64_t before = va.traffic(1).write_bytes;
  MoveMessages(16, 64 * 1024, 3000);
  EXPECT_EQ(va.traffic(1).write_bytes, before);
  ASSERT_TRUE(va.UndrainDevice(device).ok());
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
}

INSTANTIATE_TEST_SUITE_P(Schemes, QpRecoveryTest, ::testing::Values(Scheme::kSpray, Scheme::kDqplb),
                         [](const auto& info) {
                           return std::string(info.param == Scheme::kSpray ? "Spray" : "Dqplb");
                         });

}  // namespace
}  // namespace braid::vqp
