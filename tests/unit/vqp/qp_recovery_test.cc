// Rule 5, recovery of a dead data QP: both sides reset the QP pair (BeginReset, ResetQp) and
// reconnect it with each other's new entry (ReconnectQp); the QP is Healthy again, carries data,
// and its receive pool works (DQPLB and SPRAY messages arrive intact after it).
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
  QpRecoveryTest()
      : a_(kBytes), b_(kBytes),
        tb_(2, testing::SmallVqpConfig(GetParam(), 4), a_.data(), b_.data(), kBytes) {
    for (size_t i = 0; i < kBytes; ++i) a_[i] = static_cast<uint8_t>(i * 31 + (i >> 9));
  }

  // `count` write-with-imm messages of `len` bytes from A, each with a receive at B; all must
  // succeed at both ends with their immediates, and the bytes arrive.
  void MoveMessages(int count, uint64_t len, uint64_t first_id) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(tb_.b().vqp->PostRecv({first_id + i, 0, 0, 0}).ok());
    }
    std::memset(b_.data(), 0, kBytes);
    for (int i = 0; i < count; ++i) {
      const uint64_t off = static_cast<uint64_t>(i) * len;
      ASSERT_TRUE(tb_.a().vqp->PostSend(tb_.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, off, len, off,
                                                first_id + i, htonl(0x700 + i)))
                      .ok());
    }
    auto sent = tb_.Poll(0, static_cast<size_t>(count));
    ASSERT_EQ(sent.size(), static_cast<size_t>(count));
    for (const auto& wc : sent) EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
    auto got = tb_.Poll(1, static_cast<size_t>(count));
    ASSERT_EQ(got.size(), static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      EXPECT_EQ(got[static_cast<size_t>(i)].status, IBV_WC_SUCCESS);
      EXPECT_EQ(got[static_cast<size_t>(i)].imm_data, htonl(0x700 + i));
      EXPECT_EQ(got[static_cast<size_t>(i)].byte_len, len);
    }
    EXPECT_EQ(std::memcmp(a_.data(), b_.data(), static_cast<size_t>(count) * len), 0);
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
      EXPECT_EQ(Send(900), IBV_WC_RETRY_EXC_ERR);  // SENDs are never replayed (rule 12)
    } else {
      MoveMessages(16, 64 * 1024, 200);
    }
    ASSERT_EQ(va.health(index), QpHealth::kDead);
    EXPECT_EQ(va.death(index), IBV_WC_RETRY_EXC_ERR);
    EXPECT_EQ(vb.health(index), QpHealth::kHealthy) << "the responder saw nothing";
    ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(index)).ok());

    EXPECT_EQ(va.ResetQp(index, 77).status().code(), common::StatusCode::kFailedPrecondition);
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
    for (int i = 0; i < 1000 && !(va.health(index) == QpHealth::kHealthy &&
                                  vb.health(index) == QpHealth::kHealthy); ++i) {
      std::vector<VirtualWc> ignore_a, ignore_b;
      tb_.PollBoth(10, &ignore_a, &ignore_b);
    }
    EXPECT_EQ(va.health(index), QpHealth::kHealthy);
    EXPECT_EQ(vb.health(index), QpHealth::kHealthy);
  }

  std::vector<uint8_t> a_, b_;
  VqpTestbed tb_;
  std::vector<VirtualWc> during_reset_a_, during_reset_b_;  // completions while resetting
};


TEST_P(QpRecoveryTest, Rule5_DeadDataQpIsResetReconnectedAndCarriesDataAgain) {
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

TEST_P(QpRecoveryTest, Rule5_DeadMessageQpIsRecoveredToo) {
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
  std::memset(b_.data() + (1 << 20), 0, 4096);
  EXPECT_EQ(Send(901), IBV_WC_SUCCESS);
  auto got = tb_.Poll(1, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(got[0].byte_len, 4096u);
  EXPECT_EQ(std::memcmp(a_.data(), b_.data() + (1 << 20), 4096), 0);
  MoveMessages(32, 64 * 1024, 3000);
  EXPECT_EQ(va.health(va.num_physical_qps() - 1), QpHealth::kHealthy);
}

INSTANTIATE_TEST_SUITE_P(Schemes, QpRecoveryTest, ::testing::Values(Scheme::kSpray, Scheme::kDqplb),
                         [](const auto& info) {
                           return std::string(info.param == Scheme::kSpray ? "Spray" : "Dqplb");
                         });

}  // namespace
}  // namespace braid::vqp
