// braidd's control plane: health (drain, faults, stalled data-plane thread), an idle agent's CPU
// use, lists in pages, drain under load and recovery of a dead data QP. Hostile requests:
// agent_hostile_test.cc.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <thread>

#include "braid/agent_client.h"
#include "dataplane/common/proc_status.h"
#include "dataplane/common/version.h"
#include "server/request_mapping.h"
#include "tests/agent/agent_harness.h"
#include "tests/agent/connected_pair_fixture.h"

namespace braid::testing {
namespace {

// Polls the health service until it answers `want` or `timeout_ms` passes; returns the last answer.
int WaitForHealth(AgentProcess& agent, int want, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int got = HealthStatus(agent.channel());
  while (got != want && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    got = HealthStatus(agent.channel());
  }
  return got;
}

grpc::Status Fault(AgentProcess& agent, v1::FaultKind kind, const std::string& device,
                   uint32_t duration_ms = 0) {
  grpc::ClientContext ctx;
  v1::InjectFaultRequest request;
  request.set_kind(kind);
  request.set_device(device);
  request.set_duration_ms(duration_ms);
  v1::InjectFaultResponse out;
  return agent.stub().InjectFault(&ctx, request, &out);
}

constexpr int kServing = 1;
constexpr int kNotServing = 2;

// Readiness ("") falls with the devices; liveness stays SERVING all along: a node whose devices
// are all drained or down is alive, and a probe that restarted its agent would destroy its VQPs.
TEST(AgentHealth, ReadyUntilEveryDeviceIsDrainedOrFaultedAndAliveAllAlong) {
  auto agent = AgentProcess::Spawn(
      {"health", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, /*fault_injection=*/true});
  ASSERT_TRUE(agent);
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);

  ASSERT_TRUE(Drain(*agent, "soft0", true).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(HealthStatus(agent->channel()), kServing);  // soft1 still healthy
  ASSERT_TRUE(Drain(*agent, "soft1", true).ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 3000), kNotServing);
  EXPECT_EQ(HealthStatus(agent->channel(), "liveness"), kServing);
  ASSERT_TRUE(Drain(*agent, "soft0", false).ok());
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
  ASSERT_TRUE(Drain(*agent, "soft1", false).ok());

  // Faulted devices count as unhealthy too.
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_DOWN, "soft0").ok());
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_DOWN, "soft1").ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 3000), kNotServing);
  EXPECT_EQ(HealthStatus(agent->channel(), "liveness"), kServing);
  const std::string m = ScrapeMetrics(agent->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_device_state", {{"state", "faulted"}}), 2);
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_UP, "soft1").ok());
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
}

TEST(AgentHealth, NeitherReadyNorAliveWhileTheDataPlaneThreadIsStalled) {
  auto agent = AgentProcess::Spawn(
      {"stall", {TestNicIp(0, 0)}, 0, /*fault_injection=*/true, {"--watchdog-ms", "300"}});
  ASSERT_TRUE(agent);
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
  EXPECT_EQ(MetricSum(ScrapeMetrics(agent->metrics_port()), "braid_engine_loop_stalls_total"), 0);
  EXPECT_EQ(HealthStatus(agent->channel(), "liveness"), kServing);
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_STALL_ENGINE, "", 2500).ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 2000), kNotServing);
  EXPECT_EQ(HealthStatus(agent->channel(), "liveness"), kNotServing);
  // After the stall the loop turns again: SERVING, one stall counted.
  EXPECT_EQ(WaitForHealth(*agent, kServing, 5000), kServing);
  EXPECT_EQ(HealthStatus(agent->channel(), "liveness"), kServing);
  const std::string m = ScrapeMetrics(agent->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_engine_loop_stalls_total"), 1);
  EXPECT_EQ(MetricSum(m, "braid_engine_stalled"), 0);
}

// An operator reading `top -H` or a profile sees what each of the agent's own threads does.
TEST(AgentHealth, TheAgentsOwnThreadsAreNamedForTheirRoles) {
  auto agent = AgentProcess::Spawn({"names", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(agent);
  const std::vector<std::string> names = ThreadNames(agent->pid());
  for (const char* role :
       {"braid-engine", "braid-ports", "braid-relay", "braid-health", "braid-recovery"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), role), names.end()) << role;
  }
}

TEST(AgentHealth, FaultInjectionIsRefusedUnlessEnabled) {
  auto agent = AgentProcess::Spawn({"nofaults", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(agent);
  const grpc::Status s = Fault(*agent, v1::FAULT_KIND_STALL_ENGINE, "", 1000);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), "fault injection is disabled in this agent's config");
}

// Lists come in pages that any gRPC client's default 4 MiB receive limit holds: 500 entries unless
// the caller asks (at most 1,000), a page token to walk on; the SDK walks every page for its
// caller.
TEST(AgentLists, ListsComeInPagesAndTheSdkWalksThemAll) {
  auto agent = AgentProcess::Spawn({"lists", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(agent);
  constexpr int kRegions = 1203;
  for (int i = 0; i < kRegions; ++i) {
    grpc::ClientContext ctx;
    v1::RegisterMemoryRequest request;
    request.set_length(4096);
    v1::RegionInfo out;
    ASSERT_TRUE(agent->stub().RegisterMemory(&ctx, request, &out).ok()) << i;
  }
  auto page = [&](uint32_t size, const std::string& token, v1::ListRegionsResponse* out) {
    grpc::ClientContext ctx;
    v1::ListRegionsRequest request;
    request.set_page_size(size);
    request.set_page_token(token);
    return agent->stub().ListRegions(&ctx, request, out);
  };
  v1::ListRegionsResponse biggest;
  ASSERT_TRUE(page(5000, "", &biggest).ok());
  EXPECT_EQ(biggest.regions_size(), 1000);  // asked 5,000: the most a page holds
  EXPECT_FALSE(biggest.next_page_token().empty());

  std::vector<uint64_t> walked;
  std::vector<int> sizes;
  std::string token;
  do {
    v1::ListRegionsResponse out;
    ASSERT_TRUE(page(0, token, &out).ok());
    sizes.push_back(out.regions_size());
    for (const auto& r : out.regions()) walked.push_back(r.region_id());
    token = out.next_page_token();
  } while (!token.empty() && sizes.size() < 10);
  EXPECT_EQ(sizes, (std::vector<int>{500, 500, 203}));
  EXPECT_TRUE(std::is_sorted(walked.begin(), walked.end()));
  EXPECT_EQ(std::set<uint64_t>(walked.begin(), walked.end()).size(), size_t{kRegions});

  auto sdk = client::AgentClient::Open(agent->endpoint());
  ASSERT_TRUE(sdk.ok()) << sdk.status().ToString();
  auto listed = (*sdk)->ListRegions();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->size(), size_t{kRegions});

  // A VQP asked for with no scheme is made with the default one, SPRAY; VQPs page the same way.
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest request;
    request.set_num_qps(1);
    v1::VirtualQpInfo out;
    ASSERT_TRUE(agent->stub().CreateVirtualQp(&ctx, request, &out).ok());
    EXPECT_EQ(out.scheme(), v1::SCHEME_SPRAY);
  }
  grpc::ClientContext ctx;
  v1::ListVirtualQpsRequest request;
  request.set_page_size(2);
  v1::ListVirtualQpsResponse two;
  ASSERT_TRUE(agent->stub().ListVirtualQps(&ctx, request, &two).ok());
  EXPECT_EQ(two.vqps_size(), 2);
  EXPECT_EQ(two.next_page_token(), std::to_string(two.vqps(1).vqp_id()));
  auto vqps = (*sdk)->ListVqps();
  ASSERT_TRUE(vqps.ok());
  EXPECT_EQ(vqps->size(), 3u);
}

// A page stops short of its entry count at its byte budget (a 128-QP VQP's entry is about 5 KB:
// 1,000 of them would pass gRPC's 4 MiB default), holding one entry at least, and the token
// continues after the last entry it holds.
TEST(AgentLists, APageStopsAtItsByteBudget) {
  engine::Listed<engine::RegionStatus> list;
  for (uint64_t id = 1; id <= 10; ++id) {
    list.items.push_back({.id = id, .label = std::string(200, 'l')});
  }
  list.next_after = 10;
  auto write = [](const engine::RegionStatus& r, v1::RegionInfo* info) {
    info->set_region_id(r.id);
    info->set_label(r.label);
  };
  google::protobuf::RepeatedPtrField<v1::RegionInfo> out;
  EXPECT_EQ(server::FillPage(list, write, 700, &out), "3");  // three of ~205 bytes fit in 700
  EXPECT_EQ(out.size(), 3);
  out.Clear();
  EXPECT_EQ(server::FillPage(list, write, 10, &out), "1");  // the first always goes
  EXPECT_EQ(out.size(), 1);
  out.Clear();
  EXPECT_EQ(server::FillPage(list, write, 1 << 20, &out), "10");  // all fit: the list's own token
  EXPECT_EQ(out.size(), 10);
}

// The metrics page carries the process_* series every Prometheus client library exports (so
// dashboards and alerts written for any server read the agent: descriptors against their limit,
// memory, threads, restarts) and the build's version; each agrees with what /proc says.
TEST(AgentMetrics, TheProcessSeriesAndTheBuildInfoAgreeWithProc) {
  auto agent = AgentProcess::Spawn({"process", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(agent);
  const std::string m = ScrapeMetrics(agent->metrics_port());
  const std::string proc = "/proc/" + std::to_string(agent->pid());
  const double fds = static_cast<double>(std::distance(
      std::filesystem::directory_iterator(proc + "/fd"), std::filesystem::directory_iterator()));
  EXPECT_NEAR(MetricSum(m, "process_open_fds"), fds, 3) << m;
  std::ifstream limits(proc + "/limits");
  std::string line;
  double soft_limit = -1;
  while (std::getline(limits, line)) {
    if (line.rfind("Max open files", 0) == 0) soft_limit = std::stod(line.substr(26));
  }
  EXPECT_EQ(MetricSum(m, "process_max_fds"), soft_limit);
  const std::string status = proc + "/status";
  EXPECT_NEAR(MetricSum(m, "process_threads"),
              static_cast<double>(*common::ProcStatusField("Threads", 10, status)), 3);
  const double rss = static_cast<double>(*common::ProcStatusField("VmRSS", 10, status)) * 1024;
  EXPECT_NEAR(MetricSum(m, "process_resident_memory_bytes"), rss, rss / 4);
  EXPECT_GT(MetricSum(m, "process_virtual_memory_bytes"), rss);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(MetricSum(m, "process_start_time_seconds"), now, 60);
  EXPECT_GT(MetricSum(m, "process_cpu_seconds_total"), 0);
  EXPECT_EQ(
      MetricSum(m, "braid_build_info",
                {{"version", common::kVersion}, {"agent_id", "process"}, {"provider", "soft"}}),
      1);
  EXPECT_EQ(MetricSum(m, "braid_transfers_refused"), 0);
}

TEST(AgentIdle, SleepsAndUsesUnderOnePercentOfACoreOverTenSeconds) {
  auto a = AgentProcess::Spawn({"idle-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0});
  auto b = AgentProcess::Spawn({"idle-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  // Idle, but with connected QPs and posted receives, as after real work.
  auto va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 8);
  auto vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 8);
  ConnectPair(a->stub(), va, b->stub(), vb);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto loops = [](AgentProcess& p) {
    return MetricSum(ScrapeMetrics(p.metrics_port()), "braid_engine_loop_iterations_total", {});
  };
  const double a_loops0 = loops(*a), b_loops0 = loops(*b);
  const uint64_t a0 = CpuTicks(a->pid()), b0 = CpuTicks(b->pid());
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(10));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double a_share = static_cast<double>(CpuTicks(a->pid()) - a0) / hz / seconds;
  const double b_share = static_cast<double>(CpuTicks(b->pid()) - b0) / hz / seconds;
  const double a_loops = loops(*a) - a_loops0, b_loops = loops(*b) - b_loops0;
  std::printf(
      "idle over %.1f s: agent a %.3f%% of one core, %.0f engine loops; agent b %.3f%%, "
      "%.0f loops\n",
      seconds, a_share * 100, a_loops, b_share * 100, b_loops);
  // 100 timed-out waits, a few health snapshots and scrapes, each waking the loop a few times.
  EXPECT_LT(a_loops, 500);
  EXPECT_LT(b_loops, 500);
#ifndef BRAID_SANITIZED
  EXPECT_LT(a_share, 0.01);
  EXPECT_LT(b_share, 0.01);
#endif
}

}  // namespace
}  // namespace braid::testing

namespace braid::testing {
namespace {

// Bytes written by the VQP's QPs on `device`, and the WRs they still have in flight.
std::pair<uint64_t, uint32_t> DeviceLoad(v1::Agent::Stub& stub, uint64_t vqp,
                                         const std::string& device) {
  grpc::ClientContext ctx;
  v1::GetVirtualQpRequest request;
  request.set_vqp_id(vqp);
  v1::VirtualQpInfo info;
  EXPECT_TRUE(stub.GetVirtualQp(&ctx, request, &info).ok());
  uint64_t bytes = 0;
  uint32_t outstanding = 0;
  for (const auto& q : info.qps()) {
    if (q.device() != device) continue;
    bytes += q.bytes_written();
    outstanding += q.outstanding_wrs();
    EXPECT_NE(q.health(), v1::QP_HEALTH_DEAD) << q.death();
  }
  return {bytes, outstanding};
}

// The same connected pair, for an operator's drain.
using AgentDrainTest = AgentHostileTest;

TEST_F(AgentDrainTest, UnderLoadInFlightWorkFinishesNoNewWorkIsTakenNothingFails) {
  v1::RegionInfo src = Register(a_->stub(), 64 * kMiB, "src");
  v1::RegionInfo dst = Register(b_->stub(), 64 * kMiB, "dst", {vb_.vqp_id()});
  auto ops = [&](int count) { return MiBWrites(va_.vqp_id(), src, dst, count); };
  TransferRun first;
  std::thread load([&] { first = RunTransfers(a_->stub(), ops(2048)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ASSERT_TRUE(Drain(*a_, "soft1", true).ok());
  // In-flight work on soft1 finishes...
  std::pair<uint64_t, uint32_t> at_drain;
  for (int i = 0; i < 200; ++i) {
    at_drain = DeviceLoad(a_->stub(), va_.vqp_id(), "soft1");
    if (at_drain.second == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(at_drain.second, 0u);
  load.join();
  // ...and it takes no new work, while every transfer succeeds on soft0.
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.completions.size(), 2048u);
  for (const auto& c : first.completions) ASSERT_EQ(c.code(), 0) << c.message();
  const auto after = DeviceLoad(a_->stub(), va_.vqp_id(), "soft1");
  EXPECT_EQ(after.first, at_drain.first);
  EXPECT_GT(at_drain.first, 0u);  // it did carry data before the drain
  const auto soft0 = DeviceLoad(a_->stub(), va_.vqp_id(), "soft0");
  std::printf("drain: soft1 carried %.1f MiB before the drain and none after; soft0 %.1f MiB\n",
              static_cast<double>(at_drain.first) / kMiB, static_cast<double>(soft0.first) / kMiB);
  // Undrain: soft1 is back in service.
  ASSERT_TRUE(Drain(*a_, "soft1", false).ok());
  TransferRun second = RunTransfers(a_->stub(), ops(256));
  ASSERT_TRUE(second.status.ok());
  for (const auto& c : second.completions) ASSERT_EQ(c.code(), 0) << c.message();
  EXPECT_GT(DeviceLoad(a_->stub(), va_.vqp_id(), "soft1").first, after.first);
}

}  // namespace
}  // namespace braid::testing

namespace braid::testing {
namespace {

// Dead QPs come back, end to end: a data QP's connection breaks under load; the QP dies, its work
// fails over (no transfer fails), the two agents reset and reconnect the QP pair over gRPC, and it
// carries data again. Metrics and GetVirtualQp show the recovery.
TEST(AgentRecovery, ADeadDataQpIsRecoveredWithThePeerAndCarriesDataAgain) {
  auto a = AgentProcess::Spawn({"rec-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, true});
  auto b = AgentProcess::Spawn({"rec-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2, true});
  ASSERT_TRUE(a && b);
  auto va = CreateVqp(a->stub(), v1::SCHEME_DQPLB, 4);
  auto vb = CreateVqp(b->stub(), v1::SCHEME_DQPLB, 4);
  ConnectPair(a->stub(), va, b->stub(), vb);
  v1::RegionInfo src = Register(a->stub(), 64 * kMiB);
  v1::RegionInfo dst = Register(b->stub(), 64 * kMiB, "", {vb.vqp_id()});
  auto ops = [&](int count) { return MiBWrites(va.vqp_id(), src, dst, count); };
  TransferRun load;
  std::thread writer([&] { load = RunTransfers(a->stub(), ops(3072)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(BreakQp(a->stub(), va.vqp_id(), 1).ok());
  writer.join();
  ASSERT_TRUE(load.status.ok()) << load.status.error_message();
  ASSERT_EQ(load.completions.size(), 3072u);
  for (const auto& c : load.completions) ASSERT_EQ(c.code(), 0) << c.message();

  // Back within a few backoff periods (the QP first has to time out: 4 × 67 ms × 8).
  v1::VirtualQpInfo ia, ib;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    ia = GetVqp(*a, va.vqp_id());
    ib = GetVqp(*b, vb.vqp_id());
    if (ia.qps(1).recoveries() >= 1 && ia.qps(1).health() == v1::QP_HEALTH_HEALTHY &&
        ib.qps(1).health() == v1::QP_HEALTH_HEALTHY) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf(
      "recovery: QP 1 healthy again %.2f s after the load ended; epoch %lu; "
      "failovers %lu\n",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      static_cast<unsigned long>(ia.epoch()), static_cast<unsigned long>(ia.failovers()));
  ASSERT_EQ(ia.qps(1).health(), v1::QP_HEALTH_HEALTHY) << ia.qps(1).death();
  EXPECT_EQ(ib.qps(1).health(), v1::QP_HEALTH_HEALTHY);
  EXPECT_GE(ia.qps(1).recoveries(), 1u);
  EXPECT_GE(ia.epoch(), 1u);
  EXPECT_EQ(ia.qps(1).recovery(), "idle");
  EXPECT_GE(ia.qps_died(), 1u);
  const std::string m = ScrapeMetrics(a->metrics_port());
  EXPECT_GE(MetricSum(m, "braid_recoveries_total", {{"result", "success"}}), 1);
  EXPECT_EQ(MetricSum(m, "braid_dead_qps"), 0);

  // It carries data again, and everything still arrives.
  const uint64_t before = ia.qps(1).bytes_written();
  TransferRun again = RunTransfers(a->stub(), ops(256));
  ASSERT_TRUE(again.status.ok());
  for (const auto& c : again.completions) ASSERT_EQ(c.code(), 0) << c.message();
  EXPECT_GT(GetVqp(*a, va.vqp_id()).qps(1).bytes_written(), before);
}

}  // namespace
}  // namespace braid::testing
