// The agent's limits reach an SDK caller as kNoResource with the agent's reason, the same on a
// session's two paths: a region past max_regions_per_caller (a control call) and operations past
// max_transfers_per_caller (the data path). The gRPC path used to turn RESOURCE_EXHAUSTED into
// kInternal, so its caller could not tell back-pressure to wait out from a fault, while the ring
// path said kNoResource for the same refusal.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "braid/connection.h"
#include "tests/agent/sdk_fixture.h"

namespace braid::testing {
namespace {

class SdkRefusalTest : public SdkTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--max-regions-per-caller", "2", "--max-transfers-per-caller", "1"};
    SdkTest::SetUp();
  }
};

TEST_P(SdkRefusalTest, ALimitReachedIsNoResourceWithTheAgentsReasonOnBothPaths) {
  {
    auto conn = client::Connect(a_, b_, {.scheme = v1::SCHEME_SPRAY, .num_qps = 2});
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto src = a_->RegisterMemory(16 * kMiB, "src");
    auto dst = b_->RegisterMemory(16 * kMiB, "dst", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    FillPattern((*src)->data(), 16 * kMiB, 21);
    auto second = a_->RegisterMemory(kMiB, "second");
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    auto third = a_->RegisterMemory(kMiB, "third");
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.status().code(), common::StatusCode::kNoResource) << third.status().ToString();
    EXPECT_NE(third.status().ToString().find("(max_regions_per_caller)"), std::string::npos)
        << third.status().ToString();

    // Sixteen operations at once where the caller may have one accepted: the others are refused
    // as back-pressure, saying which limit, and none of them fails as a fault.
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    std::vector<client::TransferOp> ops;
    for (uint64_t i = 0; i < 16; ++i) ops.push_back(Op(**src, To(**dst), i));
    int moved = 0, refused = 0;
    for (auto& f : session->SubmitBatch(ops)) {
      const client::TransferResult r = f.get();
      if (r.status.ok()) {
        ++moved;
        continue;
      }
      ++refused;
      EXPECT_EQ(r.status.code(), common::StatusCode::kNoResource) << r.status.ToString();
      EXPECT_NE(r.status.ToString().find("max_transfers_per_caller"), std::string::npos)
          << r.status.ToString();
    }
    std::printf("%s path: %d moved, %d refused\n", session->path(), moved, refused);
    EXPECT_GE(moved, 1);
    EXPECT_GE(refused, 1);
    EXPECT_EQ(moved + refused, 16);
    // What moved arrived: operation 0 was accepted first.
    EXPECT_EQ(std::memcmp((*src)->data(), (*dst)->data(), kMiB), 0);
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// A call that misses its deadline says which call, on which agent, and the deadline (it said only
// "Deadline Exceeded"), and what the agent made for it is not kept.
TEST_P(SdkRefusalTest, ACallThatMissesItsDeadlineSaysWhichAndLeavesNothingBehind) {
  auto hasty =
      client::AgentClient::Open(TargetA(), {.call_timeout = std::chrono::milliseconds(50)});
  ASSERT_TRUE(hasty.ok()) << hasty.status().ToString();
  auto region = (*hasty)->RegisterMemory(1ull << 30, "slow to make");  // its pages take a while
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().code(), common::StatusCode::kDeadlineExceeded);
  EXPECT_NE(region.status().message().find("RegisterMemory on " + TargetA() +
                                           " got no answer within 50 ms"),
            std::string::npos)
      << region.status().ToString();
  // The agent is still making it when the call gives up: wait for its file to go too.
  bool empty = false;
  for (int i = 0; i < 500 && !empty; ++i) {
    auto regions = a_->ListRegions();
    size_t files = 0;
    for (const auto& f : std::filesystem::directory_iterator(pa_->region_dir())) {
      files += f.path().filename().string().find(".lock") == std::string::npos ? 1 : 0;
    }
    empty = regions.ok() && regions->empty() && files == 0;
    if (!empty) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(empty) << "the region made for the call that gave up is still registered";
}

INSTANTIATE_TEST_SUITE_P(Paths, SdkRefusalTest, ::testing::Bool(), PathName);

}  // namespace
}  // namespace braid::testing
