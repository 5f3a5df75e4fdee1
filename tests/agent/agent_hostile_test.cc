// Hostile requests to braidd: each refused with a precise code and message while nothing held
// changes and other clients keep being served; a client sending past its Transfer window, and
// empty or oversized Transfer messages.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

#include "dataplane/common/unique_fd.h"
#include "tests/agent/agent_harness.h"
#include "tests/agent/connected_pair_fixture.h"

namespace braid::testing {
namespace {

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
      {"CreateVirtualQp with a scheme no agent knows",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::CreateVirtualQpRequest r;
         r.set_scheme(static_cast<v1::Scheme>(7));
         r.set_num_qps(2);
         v1::VirtualQpInfo out;
         return s.CreateVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "scheme must be SCHEME_SPRAY or SCHEME_DQPLB (or unset: SCHEME_SPRAY), got 7"},
      {"ListVirtualQps with a page token no agent wrote",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::ListVirtualQpsRequest r;
         r.set_page_token("12abc");
         v1::ListVirtualQpsResponse out;
         return s.ListVirtualQps(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "page_token '12abc' is not one this agent gave: pass the next_page_token of the previous "
       "page, or none for the first"},
      {"ListRegions with an 8,000-character page token",
       [](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::ListRegionsRequest r;
         r.set_page_token(std::string(8000, '9'));
         v1::ListRegionsResponse out;
         return s.ListRegions(&c, r, &out);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "page_token '9999999999999999999999999999999999999999999999999999999999999999999999999999999"
       "999999999999999999999…' (7900 more characters) is not one this agent gave*"},
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
  ASSERT_TRUE(StopProcess(b_->pid()));
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

// A value a client chose cannot write a log line of its own: the control endpoint in a
// ConnectVirtualQp card reaches the log in the connected event's cause, and a newline in it wrote
// a forged record (here one claiming to be an error of another agent).
TEST(AgentLog, AClientCannotWriteALineOfItsOwnIntoTheAgentsLog) {
  AgentSpec spec_a{"log-a", {TestNicIp(2, 0)}, 4};
  spec_a.log_level = "info";  // where events are logged
  auto a = AgentProcess::Spawn(spec_a);
  auto b = AgentProcess::Spawn({"log-b", {TestNicIp(3, 0)}, 6});
  ASSERT_TRUE(a && b);
  const v1::VirtualQpInfo mine = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 1);
  v1::VirtualQpInfo theirs = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 1);
  const std::string forged =
      "ts=2020-01-01T00:00:00.000+00:00 level=error agent=forged msg=\"disk on fire\"";
  theirs.mutable_card()->set_control_endpoint("127.0.0.1:1\n" + forged);
  ConnectOne(a->stub(), mine, theirs);
  std::string log, line;
  for (int i = 0; i < 200 && log.find("connected with VQP") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the log thread writes it
    std::ifstream in(a->log_path());
    log.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::istringstream lines(log);
  int records = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("ts=20", 0), 0u) << "a line that is not a record: " << line;
    EXPECT_NE(line.rfind("ts=2020-01-01", 0), 0u) << "the forged record: " << line;
    ++records;
  }
  EXPECT_GT(records, 0);
  EXPECT_NE(log.find("127.0.0.1:1\\nts=2020-01-01T00:00:00.000+00:00 level=error agent=forged "
                     "msg=\\\"disk on fire\\\""),
            std::string::npos)
      << log;
}

// Connections to the metrics port that say nothing (a port scan, a health checker that only
// connects) or stop half-way through a request kept every scrape out: civetweb's two workers each
// waited 30 s on one. Now fewer idle connections than workers cost a scrape nothing, and more
// only delay it by the request timeout, well within Prometheus' 10 s scrape timeout (the scrape
// here gives up after 10 s).
TEST_F(AgentHostileTest, IdleConnectionsToTheMetricsPortDoNotKeepScrapesOut) {
  auto hold = [&](int idle, int partial) {
    std::vector<common::UniqueFd> held;
    for (int i = 0; i < idle + partial; ++i) {
      common::UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(a_->metrics_port());
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
      if (i >= idle) {
        const char kHalf[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
        EXPECT_GT(send(fd.get(), kHalf, sizeof(kHalf) - 1, MSG_NOSIGNAL), 0);
      }
      held.push_back(std::move(fd));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // civetweb hands them out
    return held;
  };
  auto scrape = [&](const char* when) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string text = ScrapeMetrics(a_->metrics_port());
    EXPECT_NE(text.find("\nbraid_engine_up"), std::string::npos)
        << when << ": " << text.substr(0, 100);
    std::printf("scrape %s: %.3f s\n", when,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  {
    const auto held = hold(5, 2);  // fewer than the exporter's 8 workers
    scrape("next to 7 silent connections");
  }
  {
    const auto held = hold(10, 2);  // more
    scrape("next to 12 silent connections");
  }
}

// Idle means asleep: over ten seconds the engine loop turns only when its wait times out (every
// 100 ms) or a control call wakes it, never spinning; and it costs under 1 % of a core. The CPU
// share is checked in optimised builds only (sanitizers add their own background work).

}  // namespace
}  // namespace braid::testing
