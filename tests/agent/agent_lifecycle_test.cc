// Lifecycle: what the agent holds it lets go of. A cancelled watch stream frees its queue and
// eventfd at once; the passive side of a half-connected pair keeps no socket once both VQPs are
// gone; what a lease (a Hold call) holds is given back when the call ends; SIGTERM drains.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>

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
    std::vector<v1::TransferOp> ops =
        MiBWrites(va.vqp_id(), ra, WithGrant(b->stub(), rb, vb.vqp_id()), 4, 1);
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
  std::printf(
      "passive agent: %zu fds before, %zu after 10 half-connected rounds, %zu in CLOSE_WAIT\n",
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

// Creates a VQP or registers 1 MiB with `lease` (0: none); the id, or 0 with `status` set.
uint64_t CreateLeased(v1::Agent::Stub& stub, bool vqp, uint64_t lease, grpc::Status* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (vqp) {
    v1::CreateVirtualQpRequest request;
    request.set_scheme(v1::SCHEME_SPRAY);
    request.set_num_qps(2);
    request.set_lease_id(lease);
    v1::VirtualQpInfo out;
    *status = stub.CreateVirtualQp(&ctx, request, &out);
    return out.vqp_id();
  }
  v1::RegisterMemoryRequest request;
  request.set_length(1 << 20);
  request.set_lease_id(lease);
  v1::RegionInfo out;
  *status = stub.RegisterMemory(&ctx, request, &out);
  return out.region_id();
}

// The ids of the VQPs (`vqps`) or of the regions the agent holds.
std::vector<uint64_t> Ids(v1::Agent::Stub& stub, bool vqps) {
  grpc::ClientContext ctx;
  std::vector<uint64_t> ids;
  if (vqps) {
    v1::ListVirtualQpsResponse out;
    EXPECT_TRUE(stub.ListVirtualQps(&ctx, {}, &out).ok());
    for (const auto& v : out.vqps()) ids.push_back(v.vqp_id());
  } else {
    v1::ListRegionsResponse out;
    EXPECT_TRUE(stub.ListRegions(&ctx, {}, &out).ok());
    for (const auto& r : out.regions()) ids.push_back(r.region_id());
  }
  return ids;
}
std::vector<uint64_t> VqpIds(v1::Agent::Stub& stub) { return Ids(stub, true); }
std::vector<uint64_t> RegionIds(v1::Agent::Stub& stub) { return Ids(stub, false); }

TEST(AgentLifecycle, WhatALeaseStillHoldsIsGivenBackWhenItsHoldCallEndsAndNothingElse) {
  auto a = AgentProcess::Spawn({"lease-a", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(a);
  v1::Agent::Stub& stub = a->stub();
  HoldCall hold(stub);
  ASSERT_NE(hold.lease(), 0u);
  grpc::Status s;
  std::vector<uint64_t> leased_vqps, leased_regions;
  for (int i = 0; i < 3; ++i) {
    leased_vqps.push_back(CreateLeased(stub, true, hold.lease(), &s));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  for (int i = 0; i < 2; ++i) {
    leased_regions.push_back(CreateLeased(stub, false, hold.lease(), &s));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  const uint64_t kept_vqp = CreateLeased(stub, true, 0, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const uint64_t kept_region = CreateLeased(stub, false, 0, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  DestroyVqp(stub, leased_vqps[0]);  // leaves the lease: not given back twice
  EXPECT_EQ(MetricSum(ScrapeMetrics(a->metrics_port()), "braid_leases"), 1);

  hold.End();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((VqpIds(stub).size() > 1 || RegionIds(stub).size() > 1) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(VqpIds(stub), std::vector<uint64_t>{kept_vqp});
  EXPECT_EQ(RegionIds(stub), std::vector<uint64_t>{kept_region});
  const std::string m = ScrapeMetrics(a->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_leases"), 0);
  EXPECT_EQ(MetricSum(m, "braid_reclaimed_total", {{"kind", "vqp"}}), 2);
  EXPECT_EQ(MetricSum(m, "braid_reclaimed_total", {{"kind", "region"}}), 2);
  EXPECT_EQ(MetricSum(m, "braid_reclaim_pending"), 0);

  // An ended lease, and one never opened, take nothing more.
  for (const uint64_t lease : {hold.lease(), uint64_t{12345}}) {
    for (const bool vqp : {true, false}) {
      EXPECT_EQ(CreateLeased(stub, vqp, lease, &s), 0u);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
      EXPECT_NE(s.error_message().find("lease " + std::to_string(lease) + " is not open"),
                std::string::npos)
          << s.error_message();
    }
  }
  EXPECT_EQ(VqpIds(stub), std::vector<uint64_t>{kept_vqp});
  EXPECT_EQ(RegionIds(stub), std::vector<uint64_t>{kept_region});
  ReleaseEverything(stub);
}

// With a grace period a lease outlives its Hold call: a call of the same client naming it takes
// it over with what it holds, also from a call still open (which the agent then ends); when no
// call comes within the grace, the lease ends and what it held is given back.
TEST(AgentLifecycle, ALeaseWithAGraceIsTakenOverByACallNamingItAndEndsWhenNoneComes) {
  AgentSpec spec{"grace-a", {TestNicIp(0, 0)}, 0};
  spec.extra_args = {"--lease-grace-ms", "1000"};
  auto a = AgentProcess::Spawn(spec);
  ASSERT_TRUE(a);
  v1::Agent::Stub& stub = a->stub();
  std::optional<HoldCall> first(std::in_place, stub);
  const uint64_t lease = first->lease();
  ASSERT_NE(lease, 0u);
  EXPECT_EQ(first->grace_ms(), 1000u);
  grpc::Status s;
  const uint64_t vqp = CreateLeased(stub, true, lease, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const uint64_t region = CreateLeased(stub, false, lease, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  first.reset();  // the connection "dropped"
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  HoldCall second(stub, lease);
  EXPECT_EQ(second.lease(), lease) << second.refusal().error_message();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // past the first call's grace
  EXPECT_EQ(VqpIds(stub), std::vector<uint64_t>{vqp});
  EXPECT_EQ(RegionIds(stub), std::vector<uint64_t>{region});
  HoldCall third(stub, lease);  // while the second is open
  EXPECT_EQ(third.lease(), lease) << third.refusal().error_message();
  const grpc::Status taken = second.AwaitEnd();
  EXPECT_EQ(taken.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_NE(taken.error_message().find("took the lease over"), std::string::npos)
      << taken.error_message();
  EXPECT_EQ(MetricSum(ScrapeMetrics(a->metrics_port()), "braid_leases"), 1);

  third.End();  // and nobody comes back
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(VqpIds(stub).size(), 1u) << "still within the grace";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!VqpIds(stub).empty() || !RegionIds(stub).empty()) {
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(VqpIds(stub).empty());
  EXPECT_TRUE(RegionIds(stub).empty());
  HoldCall late(stub, lease);
  EXPECT_EQ(late.lease(), 0u);
  EXPECT_EQ(late.refusal().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(MetricSum(ScrapeMetrics(a->metrics_port()), "braid_leases"), 0);
}

// Lease ids are not numbers a restarted agent hands out again: a client resuming its lease after
// the agent restarted is refused, even when another client of the same identity opened a lease
// on the new agent first. And a client may end its lease itself, without waiting out the grace.
TEST(AgentLifecycle, ALeaseIsNotResumedOnARestartedAgentAndEndsAtItsOwnersWord) {
  AgentSpec spec{"restart-lease", {TestNicIp(0, 0)}, 0};
  spec.extra_args = {"--lease-grace-ms", "60000"};
  uint64_t before = 0;
  {
    auto a = AgentProcess::Spawn(spec);
    ASSERT_TRUE(a);
    HoldCall hold(a->stub());
    before = hold.lease();
    ASSERT_NE(before, 0u);
  }
  auto a = AgentProcess::Spawn(spec);
  ASSERT_TRUE(a);
  HoldCall other(a->stub());
  ASSERT_NE(other.lease(), 0u);
  HoldCall resumed(a->stub(), before);
  EXPECT_EQ(resumed.lease(), 0u) << "took over lease " << before << " of the new agent";
  EXPECT_EQ(resumed.refusal().error_code(), grpc::StatusCode::NOT_FOUND);

  // EndLease gives back what a lease holds at once, without its (here 60 s) grace.
  grpc::Status s;
  const uint64_t vqp = CreateLeased(a->stub(), true, other.lease(), &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  for (const uint64_t lease : {other.lease(), uint64_t{12345}}) {
    grpc::ClientContext ctx;
    v1::EndLeaseRequest request;
    request.set_lease_id(lease);
    v1::EndLeaseResponse out;
    EXPECT_EQ(a->stub().EndLease(&ctx, request, &out).error_code(),
              lease == other.lease() ? grpc::StatusCode::OK : grpc::StatusCode::NOT_FOUND);
  }
  const grpc::Status ended = other.AwaitEnd();
  EXPECT_NE(ended.error_message().find("the client ended its lease"), std::string::npos)
      << ended.error_message();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!VqpIds(a->stub()).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(VqpIds(a->stub()).empty()) << "VQP " << vqp << " still there";
}

// One caller opening Hold calls without end is stopped at its limit, told which; an ended lease
// makes room.
TEST(AgentLifecycle, ACallerHasAtMostItsLimitOfLeasesOpen) {
  AgentSpec spec{"leases-a", {TestNicIp(0, 0)}, 0};
  spec.extra_args = {"--max-leases-per-caller", "3"};
  auto a = AgentProcess::Spawn(spec);
  ASSERT_TRUE(a);
  std::vector<std::unique_ptr<HoldCall>> holds;
  for (int i = 0; i < 3; ++i) {
    holds.push_back(std::make_unique<HoldCall>(a->stub()));
    ASSERT_NE(holds.back()->lease(), 0u) << holds.back()->refusal().error_message();
  }
  HoldCall refused(a->stub());
  EXPECT_EQ(refused.lease(), 0u);
  EXPECT_EQ(refused.refusal().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.refusal().error_message(),
            "an anonymous caller has 3 leases open, its limit (max_leases_per_caller): end one "
            "before opening another (a client needs only one)");
  holds.front()->End();
  std::unique_ptr<HoldCall> again;
  for (int i = 0; i < 100 && (!again || again->lease() == 0); ++i) {  // the end takes a moment
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    again = std::make_unique<HoldCall>(a->stub());
  }
  EXPECT_NE(again->lease(), 0u) << again->refusal().error_message();
  EXPECT_EQ(MetricSum(ScrapeMetrics(a->metrics_port()), "braid_leases"), 3);
}

// SIGTERM ends the agent's streams and it exits at once: a client idly connected (a channel with
// no call open, which no client closes by itself) and the metrics listener used to keep it 2 s
// each (gRPC's shutdown deadline, civetweb's poll period).
TEST(AgentLifecycle, AStoppedAgentExitsAtOnceWithClientsIdlyConnected) {
  auto a = AgentProcess::Spawn({"stop-a", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(a);
  ASSERT_NE(ScrapeMetrics(a->metrics_port()).find("braid_"), std::string::npos);
  grpc::ClientContext watch;
  auto events = a->stub().WatchEvents(&watch, {});
  v1::WatchEventsResponse first;
  ASSERT_TRUE(events->Read(&first) && first.subscribed());
  (void)CreateVqp(a->stub(), v1::SCHEME_SPRAY, 1);  // then the harness's channel idles
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(a->Kill(SIGTERM), 0) << "a clean exit";
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("SIGTERM to exit: %.3f s\n", took);
  EXPECT_LT(took, 1.0);
  while (events->Read(&first)) {
  }
  EXPECT_EQ(events->Finish().error_code(), grpc::StatusCode::CANCELLED)
      << "the watch stream was ended by the agent";
}

// SIGHUP (systemctl reload, a logrotate habit) killed the agent on the spot, and every VQP with
// it: now it is logged and changes nothing.
TEST(AgentLifecycle, SighupNeitherStopsTheAgentNorTouchesItsVqps) {
  auto a = AgentProcess::Spawn({"hup-a", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(a);
  const v1::VirtualQpInfo vqp = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 2);
  ASSERT_EQ(kill(a->pid(), SIGHUP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  grpc::ClientContext ctx;
  v1::ListVirtualQpsResponse listed;
  ASSERT_TRUE(a->stub().ListVirtualQps(&ctx, {}, &listed).ok()) << "the agent died of SIGHUP";
  ASSERT_EQ(listed.vqps_size(), 1);
  EXPECT_EQ(listed.vqps(0).vqp_id(), vqp.vqp_id());
  EXPECT_EQ(a->Kill(SIGTERM), 0) << "a clean exit";
}

// Whether process `pid` (a child not yet waited for) has exited.
bool Exited(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || line.substr(paren + 2, 1) == "Z";
}

// Two agents, A draining for `drain_ms` on SIGTERM, a connected VQP pair and 8 MiB regions (the
// source filled); B stopped (its host hangs), so A's writes stay in flight until it resumes.
struct DrainPair {
  static constexpr uint64_t kBytes = 8 << 20;
  std::unique_ptr<AgentProcess> a, b;
  v1::VirtualQpInfo va, vb;
  v1::RegionInfo src, dst;
  std::optional<MappedRegion> src_map, dst_map;
  TransferRun run;
  std::thread writer;

  explicit DrainPair(const std::string& drain_ms) {
    AgentSpec draining{"drain-a", {TestNicIp(0, 0)}, 0};
    draining.extra_args = {"--shutdown-drain-ms", drain_ms};
    a = AgentProcess::Spawn(draining);
    b = AgentProcess::Spawn({"drain-b", {TestNicIp(1, 0)}, 2});
    if (!a || !b) return;
    va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 2);
    vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 2);
    ConnectPair(a->stub(), va, b->stub(), vb);
    src = Register(a->stub(), kBytes, "src");
    dst = Register(b->stub(), kBytes, "dst", {vb.vqp_id()});
    src_map.emplace(src.path(), kBytes);
    dst_map.emplace(dst.path(), kBytes);
    FillPattern(src_map->data(), kBytes, 23);
  }
  // Stops B, starts eight 1 MiB writes on A's stream, then sends A SIGTERM once all 8 are in
  // flight (a fixed 200 ms wait let the signal come first on a loaded host).
  bool WriteThenStopA() {
    if (!StopProcess(b->pid())) return false;
    writer = std::thread([this] {
      run = RunTransfers(a->stub(), Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, 1 << 20, 8, 8));
    });
    for (int i = 0; i < 500; ++i, std::this_thread::sleep_for(std::chrono::milliseconds(10))) {
      if (MetricSum(ScrapeMetrics(a->metrics_port()), "braid_transfers_in_flight") >= 8) break;
    }
    return kill(a->pid(), SIGTERM) == 0;
  }
  // Whether A exits by itself within `ms`.
  bool AExitsWithin(int ms) {
    for (int i = 0; i < ms / 10; ++i) {
      if (Exited(a->pid())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return Exited(a->pid());
  }
  ~DrainPair() {
    if (b) kill(b->pid(), SIGCONT);
    if (writer.joinable()) writer.join();
  }
};

// SIGTERM drains before the agent stops: health answers NOT_SERVING at once (and the metrics page
// braid_transfers_refused 1), transfers accepted before the signal finish (their peer was stopped,
// so they were still in flight when it came), and the agent exits by itself once none is left,
// long before shutdown_drain_ms. It used to fail them all at once (a rolling update failed every
// transfer in flight on the node).
TEST(AgentLifecycle, SigtermLetsTransfersInFlightFinishBeforeTheAgentStops) {
  DrainPair p("20000");
  ASSERT_TRUE(p.a && p.b && p.src_map->data() && p.dst_map->data());
  ASSERT_TRUE(p.WriteThenStopA());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(Exited(p.a->pid())) << "the agent stopped without waiting for its transfers";
  EXPECT_EQ(HealthStatus(p.a->channel()), 2) << "NOT_SERVING while it drains";
  EXPECT_EQ(HealthStatus(p.a->channel(), "liveness"), 1) << "alive while it drains";
  EXPECT_EQ(MetricSum(ScrapeMetrics(p.a->metrics_port()), "braid_transfers_refused"), 1);
  ASSERT_EQ(kill(p.b->pid(), SIGCONT), 0);
  p.writer.join();
  ASSERT_TRUE(p.run.status.ok()) << p.run.status.error_message();
  ASSERT_EQ(p.run.completions.size(), 8u);
  for (const auto& c : p.run.completions) EXPECT_EQ(c.wc_status(), "success") << c.message();
  EXPECT_EQ(Checksum(p.dst_map->data(), DrainPair::kBytes),
            Checksum(p.src_map->data(), DrainPair::kBytes));
  EXPECT_TRUE(p.AExitsWithin(2000)) << "the agent did not stop once its transfers were done";
  EXPECT_EQ(p.a->Kill(SIGTERM), 0) << "a clean exit";
}

// The drain has a limit: with the peer still hung when it passes, the agent stops and what is in
// flight fails (CANCELLED, saying the agent is shutting down), and a second SIGTERM ends a long
// drain at once.
TEST(AgentLifecycle, ADrainEndsAtItsLimitOrASecondSignal) {
  for (const bool second_signal : {false, true}) {
    DrainPair p(second_signal ? "60000" : "300");
    ASSERT_TRUE(p.a && p.b && p.src_map->data());
    ASSERT_TRUE(p.WriteThenStopA());
    if (second_signal) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ASSERT_FALSE(Exited(p.a->pid())) << "no drain";
      ASSERT_EQ(kill(p.a->pid(), SIGTERM), 0);
    }
    EXPECT_TRUE(p.AExitsWithin(3000)) << "second signal: " << second_signal;
    p.writer.join();
    ASSERT_EQ(p.run.completions.size(), 8u);
    for (const auto& c : p.run.completions) {
      EXPECT_EQ(c.code(), grpc::StatusCode::CANCELLED) << c.wc_status();
      EXPECT_NE(c.message().find("the agent is shutting down"), std::string::npos) << c.message();
    }
    EXPECT_EQ(p.a->Kill(SIGTERM), 0) << "a clean exit";
  }
}

// A caller that gives up on RegisterMemory before the agent answers (its deadline passed) never
// learns the region's id: made without a lease, the region stayed until the agent stopped, and
// nobody could deregister it. What the agent makes for a call nobody waits on any more it
// destroys again; the same call with time to answer makes it.
TEST(AgentLifecycle, ARegionMadeForACallerThatGaveUpIsDestroyedAgain) {
  auto a = AgentProcess::Spawn({"gave-up", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(a);
  v1::RegisterMemoryRequest request;
  request.set_length(1ull << 30);  // taking a GiB's pages lasts far beyond the deadline
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(20));
    v1::RegionInfo out;
    const grpc::Status s = a->stub().RegisterMemory(&ctx, request, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
  // The agent is still making it when the caller gives up: wait for it to be gone, file and all.
  std::vector<uint64_t> left;
  std::vector<std::string> files;
  for (int i = 0; i < 500; ++i) {
    left = RegionIds(a->stub());
    files = FilesIn(a->region_dir());
    if (left.empty() && files.size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(left.empty()) << left.size() << " region(s) left behind";
  EXPECT_EQ(files.size(), 1u) << "only the agent's lock file, not " << files.front();
  grpc::ClientContext ctx;
  v1::RegionInfo out;
  ASSERT_TRUE(a->stub().RegisterMemory(&ctx, request, &out).ok());
  EXPECT_EQ(RegionIds(a->stub()), std::vector<uint64_t>{out.region_id()});
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

// One soak cycle: a connected pair, two regions, a verified write-with-immediate, a Transfer
// stream and two watch streams cancelled midway, then everything destroyed.
// One cycle of the soak. Every other cycle's VQPs and regions are leased: its Hold calls end
// instead of the API calls that destroy them, and the agents give them back.
void SoakCycle(AgentProcess& a, AgentProcess& b, int cycle) {
  const bool leased = cycle % 4 >= 2;
  std::optional<HoldCall> hold_a, hold_b;
  if (leased) {
    hold_a.emplace(a.stub());
    hold_b.emplace(b.stub());
    ASSERT_NE(hold_a->lease(), 0u) << hold_a->refusal().error_message();
    ASSERT_NE(hold_b->lease(), 0u) << hold_b->refusal().error_message();
  }
  const uint64_t lease_a = leased ? hold_a->lease() : 0, lease_b = leased ? hold_b->lease() : 0;
  const v1::VirtualQpInfo va =
      CreateVqp(a.stub(), cycle % 2 ? v1::SCHEME_DQPLB : v1::SCHEME_SPRAY, 2, lease_a);
  const v1::VirtualQpInfo vb =
      CreateVqp(b.stub(), cycle % 2 ? v1::SCHEME_DQPLB : v1::SCHEME_SPRAY, 2, lease_b);
  ConnectPair(a.stub(), va, b.stub(), vb);
  const v1::RegionInfo ra = Register(a.stub(), 64 << 10, "", {}, lease_a);
  const v1::RegionInfo rb = Register(b.stub(), 64 << 10, "", {vb.vqp_id()}, lease_b);
  {
    grpc::ClientContext ctx;  // a watch stream cancelled once subscribed
    v1::WatchNotificationsRequest request;
    request.set_vqp_id(vb.vqp_id());
    auto reader = b.stub().WatchNotifications(&ctx, request);
    v1::WatchNotificationsResponse first;
    EXPECT_TRUE(reader->Read(&first) && first.subscribed());
    ctx.TryCancel();
    (void)reader->Finish();
  }
  {
    grpc::ClientContext ctx;
    auto reader = a.stub().WatchEvents(&ctx, {});
    v1::WatchEventsResponse first;
    EXPECT_TRUE(reader->Read(&first) && first.subscribed());
    ctx.TryCancel();
    (void)reader->Finish();
  }
  v1::TransferOp op;
  op.set_op_id(static_cast<uint64_t>(cycle));
  op.set_vqp_id(va.vqp_id());
  op.set_op(v1::OP_WRITE_WITH_IMM);
  op.set_local_region_id(ra.region_id());
  *op.mutable_remote() = GrantOf(rb);
  op.set_length(4096);
  op.set_imm(static_cast<uint32_t>(cycle));
  {
    grpc::ClientContext ctx;  // a Transfer stream cancelled with an operation in it
    auto stream = a.stub().Transfer(&ctx);
    v1::TransferResponse hello;
    EXPECT_TRUE(stream->Read(&hello) && hello.has_window());
    (void)stream->Write(OneOp(op));
    ctx.TryCancel();
    (void)stream->Finish();
  }
  const TransferRun run = RunTransfers(a.stub(), {op});
  EXPECT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), 1u);
  EXPECT_EQ(run.completions[0].code(), 0) << run.completions[0].message();
  if (leased) {
    hold_a->End();
    hold_b->End();
    for (int tries = 0; !VqpIds(a.stub()).empty() || !RegionIds(a.stub()).empty() ||
                        !VqpIds(b.stub()).empty() || !RegionIds(b.stub()).empty();
         ++tries) {
      ASSERT_LT(tries, 5000) << "the ended leases' VQPs and regions are still there";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return;
  }
  for (auto [agent, vqp] : {std::pair{&a, va.vqp_id()}, std::pair{&b, vb.vqp_id()}}) {
    DestroyVqp(agent->stub(), vqp);
  }
  for (auto [agent, region] : {std::pair{&a, ra.region_id()}, std::pair{&b, rb.region_id()}}) {
    for (int tries = 0;; ++tries) {  // the cancelled stream's write may still be in flight
      grpc::ClientContext ctx;
      v1::DeregisterMemoryRequest request;
      request.set_region_id(region);
      v1::DeregisterMemoryResponse response;
      const grpc::Status s = agent->stub().DeregisterMemory(&ctx, request, &response);
      if (s.ok()) break;
      ASSERT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
      ASSERT_LT(tries, 1000) << s.error_message();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

struct Holdings {
  size_t fds = 0;
  size_t threads = 0;
  uint64_t rss_kib = 0;
};

// Threads besides gRPC's callback executor (a pool bounded by the cores that keeps its threads).
Holdings HoldingsOf(pid_t pid) { return {OpenFds(pid), OwnThreads(pid), RssKiB(pid)}; }

TEST(AgentLifecycle, ChurnSoakReturnsFdsThreadsAndMemoryToBaseline) {
#ifdef BRAID_SANITIZED
  int cycles = 200;  // instrumented agents are several times slower
#else
  int cycles = 2000;
#endif
  if (const char* env = std::getenv("BRAID_SOAK_CYCLES")) cycles = std::atoi(env);
  auto a = AgentProcess::Spawn({"soak-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0});
  auto b = AgentProcess::Spawn({"soak-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 20; ++i) SoakCycle(*a, *b, i);  // gRPC's and the allocator's first use
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const Holdings base_a = HoldingsOf(a->pid()), base_b = HoldingsOf(b->pid());
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < cycles && !::testing::Test::HasFatalFailure(); ++i) SoakCycle(*a, *b, i);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ReleaseEverything(a->stub());
  ReleaseEverything(b->stub());
  Holdings end_a, end_b;
  for (int i = 0; i < 100; ++i) {  // handler threads and sockets wind down within moments
    end_a = HoldingsOf(a->pid());
    end_b = HoldingsOf(b->pid());
    if (end_a.fds <= base_a.fds && end_b.fds <= base_b.fds && end_a.threads <= base_a.threads &&
        end_b.threads <= base_b.threads) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto [name, base, end] : {std::tuple{"a", base_a, end_a}, std::tuple{"b", base_b, end_b}}) {
    std::printf(
        "soak %s: %d cycles in %.1f s; fds %zu -> %zu, threads %zu -> %zu, RSS %.1f -> "
        "%.1f MiB\n",
        name, cycles, seconds, base.fds, end.fds, base.threads, end.threads,
        static_cast<double>(base.rss_kib) / 1024, static_cast<double>(end.rss_kib) / 1024);
    EXPECT_EQ(end.fds, base.fds) << name;
    EXPECT_EQ(end.threads, base.threads) << name;
#ifndef BRAID_SANITIZED
    EXPECT_LE(end.rss_kib, base.rss_kib + 10 * 1024) << name;
#endif
  }
  // The leased cycles' VQPs and regions were given back by the agents, one of each per cycle.
  auto leased = [](int n) {
    int count = 0;
    for (int i = 0; i < n; ++i) count += i % 4 >= 2 ? 1 : 0;
    return count;
  };
  for (AgentProcess* agent : {a.get(), b.get()}) {
    const std::string m = ScrapeMetrics(agent->metrics_port());
    EXPECT_EQ(MetricSum(m, "braid_reclaimed_total", {{"kind", "vqp"}}),
              leased(20) + leased(cycles));
    EXPECT_EQ(MetricSum(m, "braid_reclaimed_total", {{"kind", "region"}}),
              leased(20) + leased(cycles));
  }
  for (AgentProcess* agent : {a.get(), b.get()}) {
    const std::vector<std::string> files = FilesIn(agent->region_dir());
    EXPECT_EQ(files.size(), 1u) << "only the agent's lock file is left in " << agent->region_dir();
  }
}

}  // namespace
}  // namespace braid::testing
