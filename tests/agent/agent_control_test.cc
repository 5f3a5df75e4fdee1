// braidd's control plane: health (drain, faults, stalled data-plane thread), hostile requests
// (each refused with a precise code and message, nothing held changes, other clients keep being
// served), and an idle agent's CPU use.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <limits>
#include <thread>

#include "tests/agent/agent_harness.h"

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

grpc::Status Drain(AgentProcess& agent, const std::string& device, bool drain) {
  grpc::ClientContext ctx;
  v1::DrainDeviceRequest request;
  request.set_device(device);
  v1::Device out;
  return drain ? agent.stub().DrainDevice(&ctx, request, &out)
               : agent.stub().UndrainDevice(&ctx, request, &out);
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

TEST(AgentHealth, ServingUntilEveryDeviceIsDrainedOrFaulted) {
  auto agent = AgentProcess::Spawn(
      {"health", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, /*fault_injection=*/true});
  ASSERT_TRUE(agent);
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);

  ASSERT_TRUE(Drain(*agent, "soft0", true).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(HealthStatus(agent->channel()), kServing);  // soft1 still healthy
  ASSERT_TRUE(Drain(*agent, "soft1", true).ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 3000), kNotServing);
  ASSERT_TRUE(Drain(*agent, "soft0", false).ok());
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
  ASSERT_TRUE(Drain(*agent, "soft1", false).ok());

  // Faulted devices count as unhealthy too.
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_DOWN, "soft0").ok());
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_DOWN, "soft1").ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 3000), kNotServing);
  const std::string m = ScrapeMetrics(agent->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_device_state", {{"state", "faulted"}}), 2);
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_DEVICE_UP, "soft1").ok());
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
}

TEST(AgentHealth, NotServingWhileTheDataPlaneThreadIsStalled) {
  auto agent = AgentProcess::Spawn(
      {"stall", {TestNicIp(0, 0)}, 0, /*fault_injection=*/true, {"--watchdog-ms", "300"}});
  ASSERT_TRUE(agent);
  EXPECT_EQ(WaitForHealth(*agent, kServing, 3000), kServing);
  EXPECT_EQ(MetricSum(ScrapeMetrics(agent->metrics_port()), "braid_engine_loop_stalls_total"), 0);
  ASSERT_TRUE(Fault(*agent, v1::FAULT_KIND_STALL_ENGINE, "", 2500).ok());
  EXPECT_EQ(WaitForHealth(*agent, kNotServing, 2000), kNotServing);
  // After the stall the loop turns again: SERVING, one stall counted.
  EXPECT_EQ(WaitForHealth(*agent, kServing, 5000), kServing);
  const std::string m = ScrapeMetrics(agent->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_engine_loop_stalls_total"), 1);
  EXPECT_EQ(MetricSum(m, "braid_engine_stalled"), 0);
}

// An operator reading `top -H` or a profile sees what each of the agent's own threads does.
TEST(AgentHealth, TheAgentsOwnThreadsAreNamedForTheirRoles) {
  auto agent = AgentProcess::Spawn({"names", {TestNicIp(0, 0)}, 0});
  ASSERT_TRUE(agent);
  const std::vector<std::string> names = ThreadNames(agent->pid());
  for (const char* role : {"braid-engine", "braid-relay", "braid-health", "braid-recovery"}) {
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

// A connected 4-QP SPRAY pair with one region on each side.
class AgentHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A's completion queues may not grow past their first size, so that a VQP too large for
    // them can be asked for within the validated ranges.
    a_ = AgentProcess::Spawn(
        {"agent-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, false, {"--max-cq-entries", "16384"}});
    b_ = AgentProcess::Spawn({"agent-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
    ASSERT_TRUE(a_ && b_);
    va_ = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 4);
    vb_ = CreateVqp(b_->stub(), v1::SCHEME_SPRAY, 4);
    ConnectPair(a_->stub(), va_, b_->stub(), vb_);
    fresh_ = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 4);  // never connected
    ra_ = Register(a_->stub(), 4 * kMiB, "a", {va_.vqp_id()});
    rb_ = Register(b_->stub(), 4 * kMiB, "b", {vb_.vqp_id()});
  }

  v1::TransferOp GoodWrite(uint64_t op_id) const {
    v1::TransferOp r;
    r.set_op_id(op_id);
    r.set_vqp_id(va_.vqp_id());
    r.set_op(v1::OP_WRITE);
    r.set_local_region_id(ra_.region_id());
    *r.mutable_remote() = GrantOf(rb_);
    r.set_length(kMiB);
    return r;
  }

  // What the agent holds, as text: VQPs (ids, connection, QP health) and regions.
  std::string Holdings(AgentProcess& agent) {
    std::string out;
    grpc::ClientContext c1, c2;
    v1::ListVirtualQpsResponse vqps;
    v1::ListRegionsResponse regions;
    EXPECT_TRUE(agent.stub().ListVirtualQps(&c1, {}, &vqps).ok());
    EXPECT_TRUE(agent.stub().ListRegions(&c2, {}, &regions).ok());
    for (const auto& v : vqps.vqps()) {
      out += "vqp " + std::to_string(v.vqp_id()) + (v.connected() ? " connected" : "") +
             " healthy=" + std::to_string(v.healthy_data_qps()) + "\n";
    }
    for (const auto& r : regions.regions()) {
      out += "region " + std::to_string(r.region_id()) + " " + std::to_string(r.length()) + " " +
             r.path() + "\n";
    }
    return out;
  }

  std::unique_ptr<AgentProcess> a_, b_;
  v1::VirtualQpInfo va_, vb_, fresh_;
  v1::RegionInfo ra_, rb_;
};

struct UnaryCase {
  const char* name;
  std::function<grpc::Status(v1::Agent::Stub&)> call;
  grpc::StatusCode code;
  const char* message;  // exact, or a substring when it ends with '*'
};

void ExpectStatus(const char* name, const grpc::Status& s, grpc::StatusCode code,
                  const std::string& message) {
  EXPECT_EQ(s.error_code(), code) << name << ": " << s.error_message();
  if (!message.empty() && message.back() == '*') {
    EXPECT_NE(s.error_message().find(message.substr(0, message.size() - 1)), std::string::npos)
        << name << ": " << s.error_message();
  } else {
    EXPECT_EQ(s.error_message(), message) << name;
  }
}

TEST_F(AgentHostileTest, EveryBadRequestGetsAPreciseStatusAndChangesNothing) {
  const std::string before_a = Holdings(*a_);
  const std::string before_b = Holdings(*b_);
  const uint64_t vqp = fresh_.vqp_id();
  const v1::BusinessCard peer = vb_.card();
  auto connect = [](uint64_t vqp, v1::BusinessCard card) {
    return [vqp, card](v1::Agent::Stub& s) {
      grpc::ClientContext c;
      v1::ConnectVirtualQpRequest r;
      r.set_vqp_id(vqp);
      *r.mutable_remote_card() = card;
      v1::VirtualQpInfo out;
      return s.ConnectVirtualQp(&c, r, &out);
    };
  };
  v1::BusinessCard wrong_version = peer;
  wrong_version.set_version(2);
  v1::BusinessCard fewer_qps = peer;
  fewer_qps.mutable_data_qps()->RemoveLast();
  v1::BusinessCard other_scheme = peer;
  other_scheme.set_scheme(v1::SCHEME_DQPLB);
  v1::BusinessCard short_gid = peer;
  short_gid.mutable_devices(0)->set_gid("abc");
  v1::BusinessCard no_scheme = peer;
  no_scheme.set_scheme(v1::SCHEME_UNSPECIFIED);
  v1::BusinessCard long_name = peer;  // quoted whole, it overflowed gRPC's metadata limit
  long_name.mutable_devices(0)->set_name(std::string(8000, 'n'));

  const std::vector<UnaryCase> cases = {
      {"GetVirtualQp unknown id",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::GetVirtualQpRequest r;
         r.set_vqp_id(999999);
         v1::VirtualQpInfo out;
         return s.GetVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "no virtual QP 999999 on agent agent-a"},
      {"DestroyVirtualQp unknown id",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DestroyVirtualQpRequest r;
         r.set_vqp_id(123456);
         v1::DestroyVirtualQpResponse out;
         return s.DestroyVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "no virtual QP 123456 on agent agent-a"},
      {"ConnectVirtualQp without a card",
       [vqp](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::ConnectVirtualQpRequest r;
         r.set_vqp_id(vqp);
         v1::VirtualQpInfo out;
         return s.ConnectVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "remote_card is required"},
      {"card version 2", connect(vqp, wrong_version), grpc::StatusCode::INVALID_ARGUMENT,
       "remote card: business card version 2*"},
      {"card with 3 data QPs for a 4-QP VQP", connect(vqp, fewer_qps),
       grpc::StatusCode::FAILED_PRECONDITION, "data QP count mismatch: local 4*"},
      {"card with another scheme", connect(vqp, other_scheme),
       grpc::StatusCode::FAILED_PRECONDITION, "scheme mismatch: local*"},
      {"card with a 3-byte GID", connect(vqp, short_gid), grpc::StatusCode::INVALID_ARGUMENT,
       "card.devices[0].gid: 3 bytes, want 16"},
      {"card without a scheme", connect(vqp, no_scheme), grpc::StatusCode::INVALID_ARGUMENT,
       "card.scheme: unknown scheme 0"},
      {"card naming a device in 8,000 bytes", connect(vqp, long_name),
       grpc::StatusCode::INVALID_ARGUMENT,
       "remote card: device 0 of the card has a name of 8000 bytes; a device name has 1 to 64"},
      {"connect an already connected VQP", connect(va_.vqp_id(), peer),
       grpc::StatusCode::FAILED_PRECONDITION, "VQP is already connected"},
      {"RegisterMemory length 0",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::RegisterMemoryRequest r;
         v1::RegionInfo out;
         return s.RegisterMemory(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "region length must be > 0"},
      {"RegisterMemory length 2^64-1",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::RegisterMemoryRequest r;
         r.set_length(std::numeric_limits<uint64_t>::max());
         v1::RegionInfo out;
         return s.RegisterMemory(&c, r, &out);
       },
       grpc::StatusCode::OUT_OF_RANGE,
       "region length 18446744073709551615 exceeds this agent's limit of 68719476736 bytes"},
      {"DeregisterMemory of a foreign region id",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DeregisterMemoryRequest r;
         r.set_region_id(777);
         v1::DeregisterMemoryResponse out;
         return s.DeregisterMemory(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "no region 777 on agent agent-a"},
      {"CreateVirtualQp with 0 QPs",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_scheme(v1::SCHEME_SPRAY);
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "num_qps*"},
      // Within the validated ranges, but more than a device's completion queue could ever hold:
      // refused as a wrong request that names the limit, not as a full agent.
      {"CreateVirtualQp with 127 QPs",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_scheme(v1::SCHEME_SPRAY);
         r.set_num_qps(127);
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "this VQP needs 17536 completion entries on device soft0 (num_qps 127, qp_capacity 128, "
       "max_virtual_wrs 1024), more than its completion queue can hold (16384): lower num_qps, "
       "qp_capacity or max_virtual_wrs"},
      {"CreateVirtualQp with 65536 virtual WRs",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_scheme(v1::SCHEME_SPRAY);
         r.set_num_qps(2);
         r.set_max_virtual_wrs(65536);
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "this VQP needs 65920 completion entries on device soft0 (num_qps 2, qp_capacity 128, "
       "max_virtual_wrs 65536), more than its completion queue can hold (16384)*"},
      {"CreateVirtualQp on an unknown device",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_scheme(v1::SCHEME_SPRAY);
         r.set_num_qps(2);
         r.add_devices("mlx5_9");
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "no device named 'mlx5_9' on agent agent-a*"},
      {"CreateVirtualQp without a scheme",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_num_qps(2);
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "scheme must be SCHEME_SPRAY or SCHEME_DQPLB"},
      {"DrainDevice unknown",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DrainDeviceRequest r;
         r.set_device("soft9");
         v1::Device out;
         return s.DrainDevice(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "no device named 'soft9' on agent agent-a*"},
      // Client input is quoted at most 100 characters: an 8,000-character name stays NOT_FOUND
      // (echoed whole, it overflowed gRPC's metadata limit: RESOURCE_EXHAUSTED).
      {"DrainDevice with an 8,000-character name",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DrainDeviceRequest r;
         r.set_device(std::string(8000, 'x'));
         v1::Device out;
         return s.DrainDevice(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND, "(7900 more characters) on agent agent-a*"},
  };
  for (const UnaryCase& c : cases) ExpectStatus(c.name, c.call(a_->stub()), c.code, c.message);

  // Transfer operations: each refused with its own completion; the stream itself stays fine.
  struct OpCase {
    const char* name;
    std::function<void(v1::TransferOp&)> mutate;
    grpc::StatusCode code;
    const char* message;
  };
  const v1::RemoteRegion own = GrantOf(ra_);
  const std::vector<OpCase> ops = {
      {"unknown VQP", [](auto& r) { r.set_vqp_id(424242); }, grpc::StatusCode::NOT_FOUND,
       "no virtual QP 424242 on agent agent-a"},
      {"length 0", [](auto& r) { r.set_length(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "transfer length must be > 0"},
      {"length 2^64-1", [](auto& r) { r.set_length(std::numeric_limits<uint64_t>::max()); },
       grpc::StatusCode::OUT_OF_RANGE, "local range [0, 0 + 18446744073709551615)*"},
      {"local offset past the region", [](auto& r) { r.set_local_offset(4 * kMiB - 10); },
       grpc::StatusCode::OUT_OF_RANGE, "local range [4194294, 4194294 + 1048576) is past region*"},
      {"remote offset past the region", [](auto& r) { r.set_remote_offset(3 * kMiB + 1); },
       grpc::StatusCode::OUT_OF_RANGE, "remote range [3145729, 3145729 + 1048576)*"},
      {"foreign local region id", [](auto& r) { r.set_local_region_id(777); },
       grpc::StatusCode::NOT_FOUND, "no region 777 on agent agent-a"},
      {"remote region of this agent", [own](auto& r) { *r.mutable_remote() = own; },
       grpc::StatusCode::INVALID_ARGUMENT, "remote region 1 belongs to this agent (agent-a)*"},
      {"remote region without the peer's keys", [](auto& r) { r.mutable_remote()->clear_keys(); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "remote region 1 has no key for the peer's device 'soft0'"},
      {"op unspecified", [](auto& r) { r.set_op(v1::OP_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "op must be OP_WRITE, OP_WRITE_WITH_IMM or OP_READ"},
  };
  std::vector<v1::TransferOp> requests;
  for (size_t i = 0; i < ops.size(); ++i) {
    v1::TransferOp r = GoodWrite(i);
    ops[i].mutate(r);
    requests.push_back(r);
  }
  requests.push_back(GoodWrite(ops.size()));  // and a good one after them
  TransferRun run = RunTransfers(a_->stub(), requests);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), requests.size());
  for (const auto& c : run.completions) {
    if (c.op_id() == ops.size()) {
      EXPECT_EQ(c.code(), 0) << c.message();
      continue;
    }
    const OpCase& oc = ops[c.op_id()];
    ExpectStatus(oc.name, grpc::Status(static_cast<grpc::StatusCode>(c.code()), c.message()),
                 oc.code, oc.message);
    EXPECT_EQ(c.wc_status(), "") << oc.name << ": nothing was posted";
  }
  EXPECT_EQ(Holdings(*a_), before_a);
  EXPECT_EQ(Holdings(*b_), before_b);
}

TEST_F(AgentHostileTest, AClientSendingPastTheWindowIsHeldBackAndEveryOperationCompletes) {
  // The peer stops (SIGSTOP): no acknowledgement comes back, so accepted writes stay in flight.
  kill(b_->pid(), SIGSTOP);
  grpc::ClientContext ctx;
  auto stream = a_->stub().Transfer(&ctx);
  v1::TransferResponse response;
  ASSERT_TRUE(stream->Read(&response));
  const uint32_t window = response.window().max_in_flight();
  ASSERT_EQ(window, 1024u);
  // A full window in one message, then 44 more: sent quickly, so the peer's silence is measured
  // from when they went, not from a thousand separate messages.
  const uint32_t sent = window + 44;
  for (uint32_t first = 0; first < sent; first += window) {
    v1::TransferRequest request;
    for (uint32_t i = first; i < std::min(sent, first + window); ++i) {
      *request.add_ops() = GoodWrite(i);
    }
    ASSERT_TRUE(stream->Write(request)) << first;
  }
  stream->WritesDone();
  // A while later the stream is still open and nothing has completed: the agent stopped reading
  // at the window instead of ending the stream. (Much longer, and the peer's silence exhausts the
  // QPs' retries: the writes would fail, each reported once all the same.)
  std::atomic<int> completed{0};
  std::thread resume([&] {
    // Held back: the engine takes exactly a window of them (however long a loaded machine takes
    // to get there, and no more a while after); the rest wait unread in the stream.
    auto in_flight = [&] {
      return MetricSum(ScrapeMetrics(a_->metrics_port()), "braid_transfers_in_flight");
    };
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (in_flight() < window && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(completed.load(), 0);
    EXPECT_EQ(in_flight(), window);
    kill(b_->pid(), SIGCONT);
  });
  std::map<uint64_t, int> seen;
  while (stream->Read(&response)) {
    ASSERT_GT(response.completions_size(), 0);
    for (const v1::TransferCompletion& c : response.completions()) {
      ++completed;
      ++seen[c.op_id()];
      EXPECT_EQ(c.code(), 0) << c.message();
    }
  }
  resume.join();
  const grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(seen.size(), sent) << "every operation completes";
  for (const auto& [op, n] : seen) EXPECT_EQ(n, 1) << "op " << op << " completed " << n << " times";
  // Another client is served as before, and the flood's accepted writes drain.
  TransferRun run = RunTransfers(a_->stub(), {GoodWrite(1), GoodWrite(2)});
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), 2u);
  for (const auto& c : run.completions) EXPECT_EQ(c.code(), 0) << c.message();
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext c;
    v1::ListRegionsResponse regions;
    ASSERT_TRUE(a_->stub().ListRegions(&c, {}, &regions).ok());
    if (regions.regions(0).in_flight() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  grpc::ClientContext c;
  v1::ListRegionsResponse regions;
  ASSERT_TRUE(a_->stub().ListRegions(&c, {}, &regions).ok());
  EXPECT_EQ(regions.regions(0).in_flight(), 0u);
  const std::string m = ScrapeMetrics(a_->metrics_port());
  EXPECT_EQ(
      MetricSum(m, "braid_virtual_wr_completions_total", {{"op", "write"}, {"status", "success"}}),
      window + 44 + 2);
}

// A message with no operations, or with more than the window, ends the stream with
// INVALID_ARGUMENT, but only after every operation accepted before it has completed.
TEST_F(AgentHostileTest, AnEmptyOrOversizedTransferMessageEndsTheStreamAfterWhatWasAccepted) {
  constexpr int kWindow = 1024;  // the agent's default
  struct Case {
    const char* what;
    int ops;
  };
  for (const Case& bad : {Case{"empty", 0}, Case{"oversized", kWindow + 1}}) {
    SCOPED_TRACE(bad.what);
    grpc::ClientContext ctx;
    auto stream = a_->stub().Transfer(&ctx);
    v1::TransferResponse response;
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_EQ(response.window().max_in_flight(), static_cast<uint32_t>(kWindow));
    v1::TransferRequest good;  // three operations in one message
    for (uint64_t i = 1; i <= 3; ++i) *good.add_ops() = GoodWrite(i);
    ASSERT_TRUE(stream->Write(good));
    v1::TransferRequest malformed;
    for (int i = 0; i < bad.ops; ++i) *malformed.add_ops() = GoodWrite(100 + i);
    (void)stream->Write(malformed);
    stream->WritesDone();  // without the check, the stream would end well
    std::map<uint64_t, int> seen;
    while (stream->Read(&response)) {
      for (const v1::TransferCompletion& c : response.completions()) {
        ++seen[c.op_id()];
        EXPECT_EQ(c.code(), 0) << c.message();
      }
    }
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("carries " + std::to_string(bad.ops) +
                                     " operations; send 1 to " + std::to_string(kWindow)),
              std::string::npos)
        << s.error_message();
    EXPECT_EQ(seen, (std::map<uint64_t, int>{{1, 1}, {2, 1}, {3, 1}}));
  }
  // The agent goes on serving: a full window in one message, each completing once.
  std::vector<v1::TransferOp> ops;
  for (uint64_t i = 0; i < kWindow; ++i) ops.push_back(GoodWrite(i));
  const TransferRun run = RunTransfers(a_->stub(), ops, 0, kWindow);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  std::map<uint64_t, int> seen;
  for (const auto& c : run.completions) {
    ++seen[c.op_id()];
    EXPECT_EQ(c.code(), 0) << c.message();
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kWindow));
}

// Idle means asleep: over ten seconds the engine loop turns only when its wait times out (every
// 100 ms) or a control call wakes it, never spinning; and it costs under 1 % of a core. The CPU
// share is checked in optimised builds only (sanitizers add their own background work).
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
