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

  std::vector<uint8_t> a_, b_;
  VqpTestbed tb_;
};

TEST_P(QpRecoveryTest, Rule5_DeadQpIsResetReconnectedAndCarriesDataAgain) {
  ASSERT_TRUE(tb_.status().ok()) << tb_.status().ToString();
  VirtualQp& va = *tb_.a().vqp;
  VirtualQp& vb = *tb_.b().vqp;
  MoveMessages(8, 64 * 1024, 100);

  // QP 1's link breaks: it dies at A, its work fails over, every message still arrives.
  ASSERT_TRUE(tb_.fabric().BreakQp(va.physical_qp(1)).ok());
  MoveMessages(16, 64 * 1024, 200);
  ASSERT_EQ(va.health(1), QpHealth::kDead);
  EXPECT_EQ(va.death(1), IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(vb.health(1), QpHealth::kHealthy) << "the responder saw nothing";
  ASSERT_TRUE(tb_.fabric().RepairQp(va.physical_qp(1)).ok());

  // Out of order steps are refused.
  EXPECT_EQ(va.ResetQp(1, 77).status().code(), common::StatusCode::kFailedPrecondition);
  EXPECT_EQ(va.BeginReset(va.num_physical_qps() - 1).code(), common::StatusCode::kNotSupported);

  // Recovery: both sides reset, exchange entries, reconnect.
  ASSERT_TRUE(va.BeginReset(1).ok());
  ASSERT_TRUE(vb.BeginReset(1).ok());
  EXPECT_EQ(vb.health(1), QpHealth::kDead);  // no new work while it resets
  for (int i = 0; i < 1000 && !(va.ResetReady(1) && vb.ResetReady(1)); ++i) {
    std::vector<VirtualWc> ignore_a, ignore_b;
    tb_.PollBoth(10, &ignore_a, &ignore_b);
    EXPECT_TRUE(ignore_a.empty() && ignore_b.empty());
  }
  ASSERT_TRUE(va.ResetReady(1) && vb.ResetReady(1));
  auto ca = va.ResetQp(1, 0x123456);
  auto cb = vb.ResetQp(1, 0xABCDEF);
  ASSERT_TRUE(ca.ok() && cb.ok()) << ca.status().ToString() << cb.status().ToString();
  EXPECT_EQ(ca->qp_num, va.physical_qp(1).qp_num());
  EXPECT_EQ(ca->psn, 0x123456u);
  ASSERT_TRUE(va.ReconnectQp(1, *cb).ok());
  ASSERT_TRUE(vb.ReconnectQp(1, *ca).ok());
  // Each side's probe must come back before the QP takes work.
  EXPECT_EQ(va.health(1), QpHealth::kDraining);
  for (int i = 0; i < 1000 && !(va.health(1) == QpHealth::kHealthy &&
                                vb.health(1) == QpHealth::kHealthy); ++i) {
    std::vector<VirtualWc> ignore_a, ignore_b;
    tb_.PollBoth(10, &ignore_a, &ignore_b);
  }
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
  EXPECT_EQ(vb.health(1), QpHealth::kHealthy);
  EXPECT_EQ(va.healthy_data_qps(), 4);

  // Back in service: messages arrive intact and QP 1 carries its share.
  const uint64_t before = va.traffic(1).write_bytes;
  MoveMessages(32, 64 * 1024, 300);
  EXPECT_GT(va.traffic(1).write_bytes, before);
  EXPECT_EQ(va.health(1), QpHealth::kHealthy);
}

INSTANTIATE_TEST_SUITE_P(Schemes, QpRecoveryTest, ::testing::Values(Scheme::kSpray, Scheme::kDqplb),
                         [](const auto& info) {
                           return std::string(info.param == Scheme::kSpray ? "Spray" : "Dqplb");
                         });

}  // namespace
}  // namespace braid::vqp
