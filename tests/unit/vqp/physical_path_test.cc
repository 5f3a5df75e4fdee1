// What a VQP does to its physical QPs and CQs, counted over the null provider: how often it polls,
// what it posts and re-posts, which fences it adds, and what it refuses before posting anything.
#include <gtest/gtest.h>

#include <vector>

#include "tests/testutil/null_vqp_bed.h"
#include "tests/testutil/small_vqp_config.h"

namespace braid::vqp {
namespace {

using testing::NullVqpBed;

VirtualQpConfig Config(Scheme scheme, uint32_t qps) {
  return testing::SmallVqpConfig(scheme, qps, true);
}

// Failover stops at the retry budget: a fragment whose every re-post also dies is re-posted
// `retry_budget` times, then its WR fails with the real error; the QPs left alive never see it.
TEST(PhysicalPathTest, AFragmentIsRepostedAtMostItsRetryBudgetThenItsWrFails) {
  VirtualQpConfig c = Config(Scheme::kSpray, 4);
  c.retry_budget = 1;
  NullVqpBed nb(1, c);
  ASSERT_TRUE(nb.status().ok());
  uint64_t sends0 = 0;
  for (int i = 0; i < 4; ++i) {
    nb.qp(i).FailNextSends(1, IBV_WC_RETRY_EXC_ERR);
    sends0 += nb.qp(i).sends();
  }
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 100)).ok());  // one fragment
  VirtualWc out[4];
  int got = 0;
  for (int r = 0; r < 100 && got == 0; ++r) {
    auto n = nb.cq().Poll(out);
    ASSERT_TRUE(n.ok());
    got = *n;
  }
  ASSERT_EQ(got, 1);
  EXPECT_EQ(out[0].wr_id, 1u);
  EXPECT_EQ(out[0].status, IBV_WC_RETRY_EXC_ERR);
  uint64_t sends = 0;
  int dead = 0;
  for (int i = 0; i < 4; ++i) {
    sends += nb.qp(i).sends();
    dead += nb.vqp().health(i) == QpHealth::kDead;
  }
  EXPECT_EQ(sends - sends0, 2u) << "the first post and one re-post";
  EXPECT_EQ(dead, 2) << "only the QPs that carried it died";
  EXPECT_EQ(nb.vqp().counters().failovers, 1u);
}

// A receive the physical QP refuses (the provider's own failure, past every check of the virtual
// layer) is returned to the caller with the provider's message, and nothing is counted.
TEST(PhysicalPathTest, AReceiveThePhysicalQpRefusesIsReturnedToTheCaller) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 1));
  ASSERT_TRUE(nb.status().ok());
  const uint32_t before = nb.vqp().pending_recvs();
  nb.qp(0).FailNextPostRecv(common::Status::DeviceError("injected receive failure"));
  const common::Status s = nb.vqp().PostRecv({.wr_id = 7});
  EXPECT_EQ(s.code(), common::StatusCode::kDeviceError) << s.ToString();
  EXPECT_NE(s.message().find("injected receive failure"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(nb.vqp().pending_recvs(), before) << "a refused receive was counted";
  EXPECT_TRUE(nb.vqp().PostRecv({.wr_id = 8}).ok());
  EXPECT_EQ(nb.vqp().pending_recvs(), before + 1);
}

// Poll returns at most the span's size and polls each physical CQ at most once per call.
TEST(PhysicalPathTest, PollIsBoundedBySpan) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  for (uint64_t i = 0; i < 50; ++i) ASSERT_TRUE(nb.vqp().PostSend(nb.Write(i, 100)).ok());
  VirtualWc out[3];
  size_t total = 0;
  uint64_t expect = 0;
  for (int r = 0; r < 100 && total < 50; ++r) {
    auto n = nb.cq().Poll(out);
    ASSERT_TRUE(n.ok());
    ASSERT_LE(*n, 3);
    for (int k = 0; k < *n; ++k) EXPECT_EQ(out[k].wr_id, expect++);
    total += static_cast<size_t>(*n);
  }
  EXPECT_EQ(total, 50u);
}

// With more completions waiting than one physical poll takes, a Poll with room for all of them
// still polls each physical CQ once: one batch per device, not a drain.
TEST(PhysicalPathTest, PollTakesOneBatchPerPhysicalCqEvenWithRoomForMore) {
  VirtualQpConfig c = Config(Scheme::kSpray, 4);
  c.qp_capacity = 128;
  c.max_virtual_wrs = 256;
  NullVqpBed nb(2, c);
  ASSERT_TRUE(nb.status().ok());
  for (uint64_t i = 0; i < 200; ++i) ASSERT_TRUE(nb.vqp().PostSend(nb.Write(i, 100)).ok());
  ASSERT_GT(nb.physical_cq(0).size(), size_t{VirtualCq::kPollBatch});
  ASSERT_GT(nb.physical_cq(1).size(), size_t{VirtualCq::kPollBatch});
  const uint64_t polls0 = nb.physical_cq(0).polls(), polls1 = nb.physical_cq(1).polls();
  std::vector<VirtualWc> out(256);
  auto n = nb.cq().Poll(out);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(nb.physical_cq(0).polls() - polls0, 1u);
  EXPECT_EQ(nb.physical_cq(1).polls() - polls1, 1u);
  EXPECT_LE(*n, 2 * VirtualCq::kPollBatch);
  EXPECT_GT(*n, 0);
  size_t total = static_cast<size_t>(*n);
  for (int r = 0; r < 100 && total < 200; ++r) {
    auto more = nb.cq().Poll(out);
    ASSERT_TRUE(more.ok());
    total += static_cast<size_t>(*more);
  }
  EXPECT_EQ(total, 200u) << "every virtual WR completes once, over several polls";
}

// A SPRAY notify is preceded by one fence READ on each device other than the notify's that
// carried the message's data, and by none when the data stayed on the notify's device.
TEST(PhysicalPathTest, ASprayNotifyIsFencedOncePerOtherDeviceThatCarriedData) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  auto reads = [&] {
    uint64_t n = 0;
    for (int i = 0; i < 5; ++i) n += nb.qp(i).reads();
    return n;
  };
  auto complete = [&](uint64_t wr_id) {
    VirtualWc out[4];
    for (int r = 0; r < 100; ++r) {
      auto n = nb.cq().Poll(out);
      if (!n.ok()) return false;
      for (int k = 0; k < *n; ++k) {
        if (out[k].wr_id == wr_id) return out[k].status == IBV_WC_SUCCESS;
      }
    }
    return false;
  };
  // Posts a signalled WRITE_WITH_IMM of 16 fragments and waits for it; the fence READs it took.
  auto fences_of = [&](uint64_t wr_id) -> int64_t {
    const uint64_t before = reads();
    VirtualSendWr wr =
        nb.Write(wr_id, 16 * Config(Scheme::kSpray, 4).fragment_size, IBV_WR_RDMA_WRITE_WITH_IMM);
    wr.send_flags = IBV_SEND_SIGNALED;
    if (!nb.vqp().PostSend(wr).ok() || !complete(wr_id)) return -1;
    return static_cast<int64_t>(reads() - before);
  };
  // Spread over all four QPs, so both devices.
  EXPECT_EQ(fences_of(1), 1) << "one fence READ, on the device the notify did not use";
  // With device 1 drained, the data stays on device 0, the notify's: no fence.
  ASSERT_TRUE(nb.vqp().DrainDevice(1).ok());
  EXPECT_EQ(fences_of(2), 0) << "a fence for data that stayed on the notify's device";
}

// The remote half: a remote key entry without a key for one of the peer's devices is an error at
// post time naming that device, and nothing is posted.
TEST(PhysicalPathTest, AMissingRemoteDeviceKeyIsAnErrorAtPostTime) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  const uint32_t partial[] = {0x66, 0};
  auto h = nb.vqp().AddRemoteKeys(partial);
  ASSERT_TRUE(h.ok());
  uint64_t sends0 = 0;
  for (int i = 0; i < 3; ++i) sends0 += nb.qp(i).sends();
  VirtualSendWr wr = nb.Write(1, 4 << 20);  // fragments on both devices
  wr.remote_keys = *h;
  const common::Status s = nb.vqp().PostSend(wr);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("null1"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(nb.vqp().pending_sends(), 0u);
  uint64_t sends = 0;
  for (int i = 0; i < 3; ++i) sends += nb.qp(i).sends();
  EXPECT_EQ(sends, sends0) << "a fragment went out with a missing key";
  const uint32_t wrong_count[] = {1, 2, 3};
  EXPECT_FALSE(nb.vqp().AddRemoteKeys(wrong_count).ok());
}

}  // namespace
}  // namespace braid::vqp
