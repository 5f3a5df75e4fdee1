// Lifecycle: what the agent holds it lets go of. A cancelled watch stream frees its queue (and
// eventfd) at once, not when its VQP next receives a notification or is destroyed.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "tests/agent/agent_harness.h"

namespace braid::testing {
namespace {

size_t OpenFds(pid_t pid) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++n;
  }
  return n;
}

// Opens a watch stream of each kind, waits for `subscribed`, then cancels both.
void WatchAndCancel(v1::Agent::Stub& stub, uint64_t vqp) {
  {
    grpc::ClientContext ctx;
    v1::WatchNotificationsRequest request;
    request.set_vqp_id(vqp);
    auto reader = stub.WatchNotifications(&ctx, request);
    v1::WatchNotificationsResponse first;
    ASSERT_TRUE(reader->Read(&first) && first.subscribed());
    ctx.TryCancel();
    (void)reader->Finish();
  }
  {
    grpc::ClientContext ctx;
    auto reader = stub.WatchEvents(&ctx, {});
    v1::WatchEventsResponse first;
    ASSERT_TRUE(reader->Read(&first) && first.subscribed());
    ctx.TryCancel();
    (void)reader->Finish();
  }
}

TEST(AgentLifecycle, CancelledWatchStreamsLeaveNoFdsBehind) {
  auto a = AgentProcess::Spawn({"life-a", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(a);
  const v1::VirtualQpInfo v = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 1);
  WatchAndCancel(a->stub(), v.vqp_id());  // gRPC's own first-use fds
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const size_t before = OpenFds(a->pid());
  for (int i = 0; i < 50; ++i) WatchAndCancel(a->stub(), v.vqp_id());
  size_t after = 0;
  for (int i = 0; i < 50; ++i) {  // the server lets go as each stream's handler returns
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = OpenFds(a->pid());
    if (after <= before) break;
  }
  std::printf("agent fds: %zu before, %zu after 50 cancelled notification and 50 event streams\n",
              before, after);
  EXPECT_LE(after, before);
}

}  // namespace
}  // namespace braid::testing
