// Failure containment, end to end: a fault stays where it happened. One bad operation fails
// alone; a single-QP VQP keeps its notifications across a recovery; a restarted peer's new VQP is
// never touched by the old one; a VQP whose peer is gone fails cleanly; every state change is an
// event on WatchEvents; regions past the agent's memory limit are refused, not the agent killed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/session_client.h"
#include "dataplane/session/session_segment.h"
#include "tests/agent/agent_harness.h"
#include "tests/agent/event_collector.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A write of `length` bytes whose remote key is one the peer never issued.
v1::TransferOp BadKeyWrite(uint64_t vqp, const v1::RegionInfo& src, const v1::RegionInfo& dst,
                           uint64_t op_id, uint64_t length) {
  v1::TransferOp r = MiBWrites(vqp, src, dst, 1)[0];
  r.set_op_id(op_id);
  r.set_op(v1::OP_WRITE);
  r.set_length(length);
  for (auto& k : *r.mutable_remote()->mutable_keys()) k.set_rkey(k.rkey() ^ 0x5A5A00);
  return r;
}

// Waits (bounded) until `done(info)` holds for the VQP; returns the last answer.
template <typename F>
v1::VirtualQpInfo WaitVqp(AgentProcess& agent, uint64_t vqp, int timeout_ms, F done) {
  v1::VirtualQpInfo info;
  const auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    info = GetVqp(agent, vqp);
    if (done(info)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < until);
  return info;
}

// The kinds of `events` about (vqp, qp) in order, consecutive repeats folded.
std::vector<std::string> KindsFor(const std::vector<v1::Event>& events, uint64_t vqp, int qp) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    if (e.vqp_id() != vqp || e.qp_index() != qp) continue;
    if (out.empty() || out.back() != e.kind()) out.push_back(e.kind());
  }
  return out;
}

class ContainmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = AgentProcess::Spawn(Spec(0));
    b_ = AgentProcess::Spawn(Spec(1));
    ASSERT_TRUE(a_ && b_);
  }
  static AgentSpec Spec(int side, std::vector<std::string> extra = {}) {
    AgentSpec spec{side == 0 ? "ctn-a" : "ctn-b",
                   {TestNicIp(side, 0), TestNicIp(side, 1)},
                   side * 2,
                   true,
                   {"--recovery-budget-ms", "2000"}};
    spec.extra_args.insert(spec.extra_args.end(), extra.begin(), extra.end());
    return spec;
  }
  void Pair(v1::Scheme scheme, uint32_t qps) {
    va_ = CreateVqp(a_->stub(), scheme, qps);
    vb_ = CreateVqp(b_->stub(), scheme, qps);
    ConnectPair(a_->stub(), va_, b_->stub(), vb_);
    src_ = Register(a_->stub(), 64 * kMiB);
    dst_ = Register(b_->stub(), 64 * kMiB, "", {vb_.vqp_id()});
  }
  // `count` write-with-imm MiB writes; all must succeed, and B must see `count` notifications.
  void WritesWithNotifications(int count) {
    NotificationCollector notes(b_->stub(), vb_.vqp_id());
    ASSERT_TRUE(notes.subscribed());
    TransferRun run = RunTransfers(a_->stub(), MiBWrites(va_.vqp_id(), src_, dst_, count));
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.completions.size(), static_cast<size_t>(count));
    for (const auto& c : run.completions) ASSERT_EQ(c.code(), 0) << c.message();
    auto got = notes.WaitFor(static_cast<size_t>(count), 10000);
    ASSERT_EQ(got.size(), static_cast<size_t>(count)) << "notifications stopped";
    for (const auto& n : got) EXPECT_EQ(n.wc_status(), "success");
  }

  // Writes on `vqp` whose peer agent is dead: they fail by their 3 s deadline at the latest, and
  // the VQP's QPs die (an idle QP, as on RC, notices nothing).
  void UseDeadPeer(uint64_t vqp) {
    auto ops = MiBWrites(vqp, src_, dst_, 8);
    for (auto& op : ops) op.set_timeout_ms(3000);
    TransferRun run = RunTransfers(a_->stub(), ops);
    for (const auto& c : run.completions) EXPECT_NE(c.code(), 0);
  }

  std::unique_ptr<AgentProcess> a_, b_;
  v1::VirtualQpInfo va_, vb_;
  v1::RegionInfo src_, dst_;
};

// The owner of a region deregisters it while the peer's writes stream into it (the agent unmaps
// it at once): the writes in flight fail or land before, and neither agent touches the memory
// after; both keep serving, and the VQP carries writes into a new region.
TEST_F(ContainmentTest, ARegionDeregisteredWhileThePeerWritesIntoItLeavesBothAgentsServing) {
  Pair(v1::SCHEME_SPRAY, 8);
  int failed = 0;
  for (int round = 0; round < 6; ++round) {
    const v1::RegionInfo dst = Register(b_->stub(), 64 * kMiB, "", {vb_.vqp_id()});
    TransferRun run;
    std::thread writer(
        [&] { run = RunTransfers(a_->stub(), MiBWrites(va_.vqp_id(), src_, dst, 768)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + 15 * round));
    grpc::ClientContext ctx;
    v1::DeregisterMemoryRequest request;
    request.set_region_id(dst.region_id());
    v1::DeregisterMemoryResponse response;
    const grpc::Status s = b_->stub().DeregisterMemory(&ctx, request, &response);
    writer.join();
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(kill(b_->pid(), 0), 0) << "agent B died";
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    for (const auto& c : run.completions) failed += c.code() != 0;
  }
  std::printf("writes failed by the deregistrations: %d of %d\n", failed, 6 * 768);
  EXPECT_GT(failed, 0) << "no deregistration happened while writes were in flight";
  EXPECT_EQ(HealthStatus(a_->channel()), 1);
  EXPECT_EQ(HealthStatus(b_->channel()), 1);
  (void)WaitVqp(*a_, va_.vqp_id(), 10000, [](const v1::VirtualQpInfo& i) {
    for (const auto& q : i.qps()) {
      if (q.health() != v1::QP_HEALTH_HEALTHY) return false;
    }
    return true;
  });
  WritesWithNotifications(16);
}

// A 1-QP VQP: a bad key kills its only QP, which recovers; the receives that carry notifications
// died with it and must be posted again, or every later write-with-imm waits forever.
TEST_F(ContainmentTest, ASingleQpVqpKeepsItsNotificationsAcrossARecovery) {
  Pair(v1::SCHEME_SPRAY, 1);
  WritesWithNotifications(4);
  TransferRun bad = RunTransfers(a_->stub(), {BadKeyWrite(va_.vqp_id(), src_, dst_, 99, 4096)});
  ASSERT_EQ(bad.completions.size(), 1u);
  EXPECT_EQ(bad.completions[0].code(), grpc::StatusCode::PERMISSION_DENIED)
      << bad.completions[0].message();
  auto healthy = [](const v1::VirtualQpInfo& i) {
    return i.qps(0).health() == v1::QP_HEALTH_HEALTHY && i.qps(0).recoveries() >= 1 &&
           i.pending_recvs() > 0;
  };
  v1::VirtualQpInfo ia = WaitVqp(*a_, va_.vqp_id(), 10000, healthy);
  ASSERT_EQ(ia.qps(0).health(), v1::QP_HEALTH_HEALTHY);
  v1::VirtualQpInfo ib = WaitVqp(*b_, vb_.vqp_id(), 10000, [](const v1::VirtualQpInfo& i) {
    return i.qps(0).health() == v1::QP_HEALTH_HEALTHY && i.pending_recvs() > 0;
  });
  std::printf("after recovery: pending_recvs A %u, B %u; epoch %lu\n", ia.pending_recvs(),
              ib.pending_recvs(), static_cast<unsigned long>(ia.epoch()));
  EXPECT_EQ(ib.pending_recvs(), 256u) << "the receiver's notification receives were not re-posted";
  WritesWithNotifications(32);
}

// An 8-QP VQP under a stream of good writes with one bad-key write every ~100 ms: only the bad
// ones fail, and at no moment is the VQP without a healthy data QP.
TEST_F(ContainmentTest, OneBadWriteEvery100MsFailsAloneAndTheVqpAlwaysHasAHealthyQp) {
  Pair(v1::SCHEME_DQPLB, 8);
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> min_healthy{8};
  std::thread watch([&] {
    while (!stop.load()) {
      const uint32_t h = GetVqp(*a_, va_.vqp_id()).healthy_data_qps();
      if (h < min_healthy.load()) min_healthy.store(h);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  int good = 0, bad = 0, good_failed = 0, bad_failed = 0;
  const auto start = Clock::now();
  for (int round = 0; round < 20; ++round) {
    auto ops = MiBWrites(va_.vqp_id(), src_, dst_, 64);
    for (size_t i = 0; i < ops.size(); ++i) ops[i].set_op_id(uint64_t(round) * 1000 + i);
    ops.insert(ops.begin() + 32, BadKeyWrite(va_.vqp_id(), src_, dst_, round * 1000 + 999, 65536));
    const auto round_start = Clock::now();
    TransferRun run = RunTransfers(a_->stub(), ops);
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.completions.size(), ops.size());
    for (const auto& c : run.completions) {
      const bool is_bad = c.op_id() % 1000 == 999;
      (is_bad ? bad : good)++;
      if (c.code() != 0) {
        (is_bad ? bad_failed : good_failed)++;
        if (!is_bad) ADD_FAILURE() << "good write " << c.op_id() << " failed: " << c.message();
      }
    }
    std::this_thread::sleep_until(round_start + std::chrono::milliseconds(100));
  }
  stop.store(true);
  watch.join();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const v1::VirtualQpInfo info = GetVqp(*a_, va_.vqp_id());
  std::printf(
      "%.1f s: %d good writes (%d failed), %d bad (%d failed); QPs died %lu; fewest "
      "healthy data QPs seen %u\n",
      secs, good, good_failed, bad, bad_failed, static_cast<unsigned long>(info.qps_died()),
      min_healthy.load());
  EXPECT_EQ(good_failed, 0);
  EXPECT_EQ(bad_failed, bad);
  EXPECT_GE(min_healthy.load(), 1u);
  EXPECT_LE(info.qps_died(), static_cast<uint64_t>(bad) * 2) << "a bad write killed several QPs";
}

// The peer agent is killed (-9) and restarted: it reuses VQP id 1. Our old VQP, still trying to
// recover, must not reset the new VQP's QPs; it learns that its peer is gone and fails.
TEST_F(ContainmentTest, ARestartedPeersNewVqpIsNeverTouchedByTheOldOne) {
  Pair(v1::SCHEME_SPRAY, 4);
  WritesWithNotifications(8);
  const uint64_t old_vqp = va_.vqp_id();
  b_->Kill(SIGKILL);
  b_.reset();
  UseDeadPeer(old_vqp);  // its QPs die and it starts recovering
  b_ = AgentProcess::Spawn(Spec(1));
  ASSERT_TRUE(b_);
  Pair(v1::SCHEME_SPRAY, 4);  // a new pair; B's VQP id starts over
  std::printf("old VQP %lu on A; new pair A %lu, B %lu\n", static_cast<unsigned long>(old_vqp),
              static_cast<unsigned long>(va_.vqp_id()), static_cast<unsigned long>(vb_.vqp_id()));
  const v1::VirtualQpInfo old_info = WaitVqp(
      *a_, old_vqp, 10000, [](const v1::VirtualQpInfo& i) { return i.state() == "failed"; });
  EXPECT_EQ(old_info.state(), "failed");
  EXPECT_NE(old_info.failure().find("no longer has this VQP"), std::string::npos)
      << old_info.failure();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const v1::VirtualQpInfo fresh = GetVqp(*b_, vb_.vqp_id());
  EXPECT_EQ(fresh.qps_died(), 0u);
  EXPECT_EQ(fresh.epoch(), 0u);
  WritesWithNotifications(64);
  // Work on the failed VQP is refused at once, with the reason.
  TransferRun refused = RunTransfers(a_->stub(), MiBWrites(old_vqp, src_, dst_, 1));
  ASSERT_EQ(refused.completions.size(), 1u);
  EXPECT_EQ(refused.completions[0].code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.completions[0].message().find("has failed"), std::string::npos);
}

// A VQP whose peer is gone for good fails after the recovery budget (2 s here) instead of
// retrying forever; metrics count it by state.
TEST_F(ContainmentTest, AVqpWhosePeerIsGoneFailsAfterTheRecoveryBudget) {
  Pair(v1::SCHEME_DQPLB, 4);
  WritesWithNotifications(4);
  EventCollector events(a_->stub());
  ASSERT_TRUE(events.subscribed());
  b_->Kill(SIGKILL);
  b_.reset();
  const auto t0 = Clock::now();
  UseDeadPeer(va_.vqp_id());
  const v1::VirtualQpInfo info = WaitVqp(
      *a_, va_.vqp_id(), 15000, [](const v1::VirtualQpInfo& i) { return i.state() == "failed"; });
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("failed %.2f s after the peer was killed: %s\n", secs, info.failure().c_str());
  ASSERT_EQ(info.state(), "failed");
  EXPECT_NE(info.failure().find("recovery budget"), std::string::npos) << info.failure();
  EXPECT_TRUE(events.WaitFor("vqp_failed", va_.vqp_id(), 2000));
  const std::string m = ScrapeMetrics(a_->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_virtual_qps", {{"state", "failed"}}), 1);
  int failed_events = 0;
  for (const auto& e : events.Snapshot()) failed_events += e.kind() == "vqp_failed";
  EXPECT_EQ(failed_events, 1);
}

// WatchEvents: a broken QP's death, recovery and return; a second death soon after (a flap)
// cools it down; a drain and undrain; a destroyed peer VQP. Each in order, nothing missing.
TEST_F(ContainmentTest, WatchEventsReportsEveryStateChangeInOrder) {
  // The second fault's cooldown (twice the first) must outlast the QP's recovery for the QP to
  // sit out its rest; with the default 100 ms a loaded machine recovered it later than that.
  a_.reset();
  b_.reset();
  a_ = AgentProcess::Spawn(Spec(0, {"--qp-cooldown-ms", "1000"}));
  b_ = AgentProcess::Spawn(Spec(1, {"--qp-cooldown-ms", "1000"}));
  ASSERT_TRUE(a_ && b_);
  Pair(v1::SCHEME_SPRAY, 4);
  EventCollector events(a_->stub());
  ASSERT_TRUE(events.subscribed());
  auto break_qp = [&](uint32_t index) {
    ASSERT_TRUE(BreakQp(a_->stub(), va_.vqp_id(), index).ok());
  };
  auto back = [](const v1::VirtualQpInfo& i) {
    return i.qps(1).health() == v1::QP_HEALTH_HEALTHY && i.qps(1).recovery() == "idle";
  };
  for (int flap = 0; flap < 2; ++flap) {
    break_qp(1);
    TransferRun run = RunTransfers(a_->stub(), MiBWrites(va_.vqp_id(), src_, dst_, 64));
    for (const auto& c : run.completions) ASSERT_EQ(c.code(), 0) << c.message();
    const v1::VirtualQpInfo i = WaitVqp(*a_, va_.vqp_id(), 10000, back);
    ASSERT_TRUE(back(i)) << "QP 1 did not come back after flap " << flap;
  }
  // Each flap: died, recovering, recovered (a stall may cool it down before it dies, and a QP
  // that keeps failing may cool down before it is re-admitted); the second flap is a strike.
  // The event stream may trail the state just read: wait (5 s at most) for the event that
  // brought the QP back.
  auto came_back = [](const std::vector<std::string>& k) {
    return !k.empty() && (k.back() == "qp_recovered" || k.back() == "qp_readmitted");
  };
  std::vector<std::string> kinds = KindsFor(events.Snapshot(), va_.vqp_id(), 1);
  for (int wait = 0; wait < 250 && !came_back(kinds); ++wait) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    kinds = KindsFor(events.Snapshot(), va_.vqp_id(), 1);
  }
  size_t next = 0;
  const std::vector<std::string> want = {"qp_died", "qp_recovering", "qp_died", "qp_recovering"};
  for (const std::string& k : kinds) {
    if (next < want.size() && k == want[next]) ++next;
  }
  EXPECT_EQ(next, want.size()) << "QP 1's events: " << ::testing::PrintToString(kinds);
  EXPECT_TRUE(came_back(kinds)) << ::testing::PrintToString(kinds);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "qp_cooling_down"), kinds.end())
      << "no cooldown after two faults: " << ::testing::PrintToString(kinds);

  {
    // braidctl follows the same stream.
    CommandResult ctl;
    const std::string log = "/tmp/braidctl-events-" + std::to_string(getpid()) + ".txt";
    std::thread follow([&] {
      ctl = RunCommand(std::string(BRAIDCTL_PATH) +
                       " --agent 127.0.0.1:" + std::to_string(TestPort(0)) +
                       " events --count 4 --seconds 20 > " + log + " 2>&1");
    });
    // It says when it has subscribed: from then on it misses nothing.
    auto logged = [&] {
      std::ifstream in(log);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    for (int i = 0; i < 200 && logged().find("subscribed") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_NE(logged().find("subscribed"), std::string::npos) << logged();
    grpc::ClientContext c1, c2;
    v1::DrainDeviceRequest d;
    d.set_device("soft0");
    v1::Device out;
    ASSERT_TRUE(a_->stub().DrainDevice(&c1, d, &out).ok());
    ASSERT_TRUE(events.WaitFor("device_drained", 0, 2000));
    ASSERT_TRUE(events.WaitFor("qp_draining", va_.vqp_id(), 2000));
    ASSERT_TRUE(a_->stub().UndrainDevice(&c2, d, &out).ok());
    ASSERT_TRUE(events.WaitFor("device_healthy", 0, 2000));
    follow.join();
    ctl.output = logged();
    std::remove(log.c_str());
    EXPECT_EQ(ctl.exit_code, 0) << ctl.output;
    EXPECT_NE(ctl.output.find("device_drained"), std::string::npos) << ctl.output;
    EXPECT_NE(ctl.output.find("qp_draining"), std::string::npos) << ctl.output;
  }
  {
    grpc::ClientContext ctx;
    v1::DestroyVirtualQpRequest d;
    d.set_vqp_id(vb_.vqp_id());
    v1::DestroyVirtualQpResponse out;
    ASSERT_TRUE(b_->stub().DestroyVirtualQp(&ctx, d, &out).ok());
  }
  // Our side notices when it next uses the VQP (or its QPs time out), and the peer says it is gone.
  (void)RunTransfers(a_->stub(), MiBWrites(va_.vqp_id(), src_, dst_, 8));
  EXPECT_TRUE(events.WaitFor("vqp_failed", va_.vqp_id(), 15000));
  const auto all = events.Snapshot();
  for (size_t i = 1; i < all.size(); ++i) {
    EXPECT_EQ(all[i].seq(), all[i - 1].seq() + 1) << "an event is missing";
  }
  // Device events come in order: drained, then healthy.
  std::vector<std::string> device_kinds;
  for (const auto& e : all) {
    if (e.vqp_id() == 0) device_kinds.push_back(e.kind());
  }
  EXPECT_EQ(device_kinds, (std::vector<std::string>{"device_drained", "device_healthy"}));
  for (const auto& e : all) {
    std::printf("event %lu %s vqp=%lu qp=%d %s %s\n", static_cast<unsigned long>(e.seq()),
                e.kind().c_str(), static_cast<unsigned long>(e.vqp_id()), e.qp_index(),
                e.device().c_str(), e.cause().c_str());
  }
}

// A memory cgroup of the test's own, with a limit, that a process can be moved into; removed when
// it goes (after the process in it has ended). v1's memory hierarchy or v2's root, as root.
class TestMemoryCgroup {
 public:
  static std::unique_ptr<TestMemoryCgroup> Make(uint64_t limit) {
    const std::string name = "/braid-test-" + std::to_string(getpid());
    for (const bool v2 : {false, true}) {
      const std::string base = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
      if (!std::filesystem::exists(base + (v2 ? "/memory.stat" : "/memory.limit_in_bytes")) &&
          !(v2 && std::filesystem::exists(base + "/cgroup.subtree_control"))) {
        continue;
      }
      if (mkdir((base + name).c_str(), 0755) != 0) continue;
      auto out = std::unique_ptr<TestMemoryCgroup>(new TestMemoryCgroup(base + name));
      std::ofstream(base + name + (v2 ? "/memory.max" : "/memory.limit_in_bytes")) << limit;
      if (std::filesystem::exists(base + name + (v2 ? "/memory.max" : "/memory.limit_in_bytes")))
        return out;
    }
    return nullptr;
  }
  ~TestMemoryCgroup() { rmdir(dir_.c_str()); }
  bool Enter(pid_t pid) const {
    std::ofstream procs(dir_ + "/cgroup.procs");
    procs << pid;
    procs.flush();
    return procs.good();
  }

 private:
  explicit TestMemoryCgroup(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// A region file's pages on tmpfs are charged to the agent's memory cgroup, and at its limit the
// kernel does not refuse a page: it kills the agent. A client with the default role registering
// 64 MiB regions under a 256 MiB limit got the agent OOM-killed on its third, with every VQP and
// region of every client. Regions are now admitted only while they fit under the limit less the
// agent's headroom; the refusal says so and the agent keeps serving.
TEST(AgentMemoryLimit, RegionsPastTheAgentsMemoryLimitAreRefusedAndTheAgentKeepsServing) {
  // Room for about 96 MiB of regions past the headroom, from what the agent holds already (its
  // start-up pages stay charged where they were taken). Made first: removed last.
  auto cgroup = TestMemoryCgroup::Make(256 * kMiB + 96 * kMiB);
  if (cgroup == nullptr) GTEST_SKIP() << "no memory cgroup can be made here (needs root)";
  auto agent = AgentProcess::Spawn({"memcg", {TestNicIp(0, 0)}, 0});
  ASSERT_NE(agent, nullptr);
  ASSERT_TRUE(cgroup->Enter(agent->pid()));
  std::vector<uint64_t> held;
  grpc::Status refused;
  for (int i = 0; i < 16 && refused.ok(); ++i) {  // 512 MiB: past the limit
    grpc::ClientContext ctx;
    v1::RegisterMemoryRequest req;
    req.set_length(32 * kMiB);
    v1::RegionInfo region;
    refused = agent->stub().RegisterMemory(&ctx, req, &region);
    if (refused.ok()) held.push_back(region.region_id());
  }
  EXPECT_GE(held.size(), 1u);
  EXPECT_LE(held.size(), 3u);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_code() << " " << refused.error_message();
  EXPECT_NE(refused.error_message().find("memory limit"), std::string::npos)
      << refused.error_message();
  ASSERT_EQ(waitpid(agent->pid(), nullptr, WNOHANG), 0) << "the agent died";
  // It keeps serving, and a deregistered region's room is there again.
  ASSERT_FALSE(held.empty());
  {
    grpc::ClientContext ctx;
    v1::DeregisterMemoryRequest req;
    req.set_region_id(held.back());
    v1::DeregisterMemoryResponse resp;
    ASSERT_TRUE(agent->stub().DeregisterMemory(&ctx, req, &resp).ok());
  }
  const v1::RegionInfo again = Register(agent->stub(), 32 * kMiB, "again");
  EXPECT_NE(again.region_id(), 0u);
}

// A session's segment is the agent's memory too (the engine writes its rings): its pages are taken
// when it opens, admitted under the same limit. Without that, each caller's sessions were bounded
// by max_session_bytes_per_caller alone (256 MiB), whatever the agent's limit.
TEST(AgentMemoryLimit, SessionRingsPastTheAgentsMemoryLimitAreRefusedAndTheAgentKeepsServing) {
  auto cgroup = TestMemoryCgroup::Make(256 * kMiB + 40 * kMiB);
  if (cgroup == nullptr) GTEST_SKIP() << "no memory cgroup can be made here (needs root)";
  const std::string dir = "/tmp/braid-memcg-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  {
    AgentSpec spec{"memcg-s", {TestNicIp(0, 0)}, 0};
    spec.extra_args = {"--grpc-unix", dir + "/braidd.sock"};
    auto agent = AgentProcess::Spawn(spec);
    ASSERT_NE(agent, nullptr);
    ASSERT_TRUE(cgroup->Enter(agent->pid()));
    const session::RingSizes largest{65536, 65536, 65536};  // about 8 MiB a session
    std::vector<std::unique_ptr<session::SessionClient>> open;
    common::Status refused;
    for (int i = 0; i < 30 && refused.ok(); ++i) {  // 240 MiB: within the caller's 256 MiB
      auto c = session::SessionClient::Connect(dir + "/braidd.sock.session", largest);
      if (c.ok()) open.push_back(std::move(*c));
      refused = c.status();
    }
    std::printf("%zu sessions of %lu bytes opened under the limit; refusal: %s\n", open.size(),
                static_cast<unsigned long>(session::SessionSegment::Layout(largest).total_bytes),
                refused.ToString().c_str());
    EXPECT_GE(open.size(), 1u);
    EXPECT_LE(open.size(), 5u);
    EXPECT_EQ(refused.code(), common::StatusCode::kNoResource) << refused.ToString();
    EXPECT_NE(refused.message().find("memory limit"), std::string::npos) << refused.ToString();
    ASSERT_EQ(waitpid(agent->pid(), nullptr, WNOHANG), 0) << "the agent died";
    open.pop_back();  // a closed session's room is there again
    bool reopened = false;
    for (int i = 0; i < 50 && !reopened; ++i) {  // the agent sees the close a moment later
      reopened = session::SessionClient::Connect(dir + "/braidd.sock.session", largest).ok();
      if (!reopened) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(reopened);
  }
  std::filesystem::remove_all(dir);
}

// The memory the agent keeps for itself is a setting (it was 256 MiB, fixed): in a pod with a
// limit below it nothing could be registered at all, whatever the agent really used.
TEST(AgentMemoryLimit, AMemoryReserveSetLowerLeavesRegionsTheRestOfTheLimit) {
  auto cgroup = TestMemoryCgroup::Make(160 * kMiB);
  if (cgroup == nullptr) GTEST_SKIP() << "no memory cgroup can be made here (needs root)";
  auto fill = [&](const std::vector<std::string>& args, grpc::Status* refused) {
    AgentSpec spec{"memcg-r", {TestNicIp(0, 0)}, 0};
    spec.extra_args = args;
    auto agent = AgentProcess::Spawn(spec);
    EXPECT_NE(agent, nullptr);
    if (agent == nullptr) return -1;
    EXPECT_TRUE(cgroup->Enter(agent->pid()));
    int held = 0;
    for (; held < 8; ++held) {  // 256 MiB: past the limit
      grpc::ClientContext ctx;
      v1::RegisterMemoryRequest req;
      req.set_length(32 * kMiB);
      v1::RegionInfo region;
      *refused = agent->stub().RegisterMemory(&ctx, req, &region);
      if (!refused->ok()) break;
    }
    EXPECT_EQ(waitpid(agent->pid(), nullptr, WNOHANG), 0) << "the agent died";
    return held;
  };
  grpc::Status refused;
  EXPECT_EQ(fill({}, &refused), 0);  // 160 MiB leaves nothing past the default 256 MiB
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("past the 268435456 it keeps for itself (memory_reserve)"),
            std::string::npos)
      << refused.error_message();
  const int held = fill({"--memory-reserve", std::to_string(32 * kMiB)}, &refused);
  EXPECT_GE(held, 2);  // about 128 MiB past the reserve, less what the agent has taken since
  EXPECT_LE(held, 4);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("past the 33554432 it keeps for itself"),
            std::string::npos)
      << refused.error_message();
}

}  // namespace
}  // namespace braid::testing
