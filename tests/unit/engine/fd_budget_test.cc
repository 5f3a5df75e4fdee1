// FdBudget: a reserve that leaves the engine too few of the process's descriptors is refused when
// the engine starts (an agent given fd_reserve 100000 under a limit of 20,000 served, and would
// have refused every VQP, region and session).
#include "dataplane/engine/fd_budget.h"

#include <gtest/gtest.h>

#include "dataplane/engine/engine.h"
#include "tests/testutil/null_provider.h"

namespace braid::engine {
namespace {

TEST(FdBudget, AReserveThatLeavesTooFewDescriptorsIsRefusedAtStart) {
  const uint64_t limit = FdBudget::Current().soft;
  ASSERT_GT(limit, FdBudget::kMinUsable + 32);
  ASSERT_LT(limit, uint64_t{UINT32_MAX});
  const auto reserve = [](uint64_t r) { return FdBudget(static_cast<uint32_t>(r)); };
  EXPECT_TRUE(reserve(limit - FdBudget::kMinUsable).CheckRoom().ok());
  const common::Status refused = reserve(limit - FdBudget::kMinUsable + 1).CheckRoom();
  EXPECT_EQ(refused.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(
      refused.message().find("of the agent's file-descriptor limit of " + std::to_string(limit)),
      std::string::npos)
      << refused.ToString();

  testing::NullProvider provider;
  EngineOptions options;
  options.provider = &provider;
  options.fd_reserve = static_cast<uint32_t>(limit);
  auto engine = Engine::Start(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("fd_reserve " + std::to_string(limit) + " leaves 0"),
            std::string::npos)
      << engine.status().ToString();
  options.fd_reserve = 256;
  EXPECT_TRUE(Engine::Start(options).ok());
}

}  // namespace
}  // namespace braid::engine
