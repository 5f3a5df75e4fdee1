// Lifecycle: what the agent holds it lets go of. A cancelled watch stream frees its queue (and
// eventfd) at once, not when its VQP next receives a notification or is destroyed; the passive
// side of a half-connected pair keeps no socket once both VQPs are gone.
#include <gtest/gtest.h>

#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "tests/agent/agent_harness.h"

namespace braid::testing {
namespace {

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

TEST(AgentLifecycle, APassiveAgentKeepsNoSocketsOnceAHalfConnectedPairIsDestroyed) {
  auto a = AgentProcess::Spawn({"half-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0});
  auto b = AgentProcess::Spawn({"half-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  const v1::RegionInfo ra = Register(a->stub(), 1 << 20);
  const v1::RegionInfo rb = Register(b->stub(), 1 << 20);
  size_t before = 0;
  for (int round = 0; round <= 10; ++round) {
    if (round == 1) before = OpenFds(b->pid());  // after gRPC's own first-use fds
    // Only a connects (with b's card) and writes; b's VQP never connects.
    const v1::VirtualQpInfo va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 4);
    const v1::VirtualQpInfo vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 4);
    ConnectOne(a->stub(), va, vb);
    std::vector<v1::TransferRequest> ops = MiBWrites(va.vqp_id(), ra, rb, 4, 1);
    for (auto& op : ops) op.set_timeout_ms(100);
    const TransferRun run = RunTransfers(a->stub(), ops);
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.completions.size(), ops.size());
    DestroyVqp(a->stub(), va.vqp_id());
    DestroyVqp(b->stub(), vb.vqp_id());
  }
  size_t after = 0, close_wait = 0;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = OpenFds(b->pid());
    close_wait = CloseWaitSockets(b->pid());
    if (after <= before && close_wait == 0) break;
  }
  std::printf("passive agent: %zu fds before, %zu after 10 half-connected rounds, %zu in CLOSE_WAIT\n",
              before, after, close_wait);
  EXPECT_EQ(close_wait, 0u);
  EXPECT_LE(after, before);
}

// The files in `dir`, by name.
std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AgentLifecycle, AnAgentRestartedAfterSigkillRemovesItsEarlierRegionFiles) {
  char made[] = "/dev/shm/braid-test-XXXXXX";
  ASSERT_NE(mkdtemp(made), nullptr);
  const std::string dir = made;
  AgentSpec spec{"restart-a", {TestNicIp(0, 0)}, 0};
  spec.region_dir = dir;
  {
    auto a = AgentProcess::Spawn(spec);
    ASSERT_TRUE(a);
    for (int i = 0; i < 3; ++i) Register(a->stub(), 1 << 20);
    a->Kill(SIGKILL);
  }
  const std::vector<std::string> left = FilesIn(dir);
  EXPECT_EQ(left.size(), 4u) << "three region files and the lock survive SIGKILL";
  {
    // Another agent of another id on the same directory leaves them alone.
    AgentSpec other{"restart-b", {TestNicIp(1, 0)}, 2};
    other.region_dir = dir;
    auto b = AgentProcess::Spawn(other);
    ASSERT_TRUE(b);
    EXPECT_EQ(FilesIn(dir).size(), left.size() + 1) << "its own lock only";
  }
  {
    auto a = AgentProcess::Spawn(spec);
    ASSERT_TRUE(a);
    const v1::RegionInfo r = Register(a->stub(), 1 << 20);
    std::vector<std::string> now = FilesIn(dir);
    EXPECT_EQ(now.size(), 2u) << "the earlier process's files are gone: its lock and one region";
    EXPECT_TRUE(std::find(now.begin(), now.end(),
                          std::filesystem::path(r.path()).filename().string()) != now.end());
    EXPECT_EQ(a->Kill(SIGTERM), 0);
  }
  EXPECT_TRUE(FilesIn(dir).empty()) << "a clean shutdown leaves nothing behind";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace braid::testing
