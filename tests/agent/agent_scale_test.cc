// Scale and limits: many connected VQPs on default settings, and what happens at the fd limit.
// Two braidd processes with two soft NICs each, driven over gRPC as a client would.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/common/unique_fd.h"
#include "dataplane/session/session_client.h"
#include "dataplane/session/session_wire.h"
#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

using Clock = std::chrono::steady_clock;

// The soft "Max open files" of process `pid` (0 when unreadable).
uint64_t SoftFdLimit(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) == 0) return std::strtoull(line.c_str() + 26, nullptr, 10);
  }
  return 0;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// One 1 MiB write of a fresh pattern from `src` (on A) to `dst` (on B) on `vqp`; the bytes are
// compared.
void VerifiedWrite(AgentProcess& a, AgentProcess& b, uint64_t vqp, uint64_t peer_vqp,
                   const v1::RegionInfo& src, const v1::RegionInfo& dst, uint64_t seed) {
  MappedRegion s(src.path(), kMiB), d(dst.path(), kMiB);
  ASSERT_TRUE(s.data() && d.data());
  FillPattern(s.data(), kMiB, seed);
  const v1::RegionInfo granted = WithGrant(b.stub(), dst, peer_vqp);
  TransferRun run = RunTransfers(a.stub(), MiBWrites(vqp, src, granted, 1, 1));
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), 1u);
  ASSERT_EQ(run.completions[0].code(), 0) << "VQP " << vqp << ": " << run.completions[0].message();
  EXPECT_EQ(Checksum(d.data(), kMiB), Checksum(s.data(), kMiB)) << "VQP " << vqp;
}

// Two agents started with a soft fd limit of 1,024 (hard: this process's) take 200 connected 8-QP
// VQPs, SPRAY and DQPLB mixed, on their default settings: the completion queues grow past their
// first 16,384 entries, the agents raise their fd limit, their descriptors do not grow with the
// VQPs (all QPs between two soft NICs share one connection), transfers on randomly chosen VQPs
// move verified bytes, and destroying everything returns the fds.
TEST(AgentScale, TwoHundredVqpsAreAdmittedAndCarryVerifiedTransfers) {
  constexpr int kVqps = 200;
  AgentSpec sa{"scale-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0};
  AgentSpec sb{"scale-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2};
  sa.fd_soft_limit = sb.fd_soft_limit = 1024;
  rlimit ours{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &ours), 0);
  ASSERT_GE(ours.rlim_max, 4096u) << "this test needs a hard fd limit of at least 4,096";
  sa.fd_hard_limit = sb.fd_hard_limit = ours.rlim_max;
  auto a = AgentProcess::Spawn(sa);
  auto b = AgentProcess::Spawn(sb);
  ASSERT_TRUE(a && b);
  v1::RegionInfo src = Register(a->stub(), kMiB, "src");
  v1::RegionInfo dst = Register(b->stub(), kMiB, "dst");
  const size_t fds_a0 = OpenFds(a->pid()), fds_b0 = OpenFds(b->pid());
  const uint64_t rss_a0 = RssKiB(a->pid());

  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  std::vector<double> ms;
  for (int i = 0; i < kVqps; ++i) {
    const v1::Scheme scheme = i % 2 == 0 ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB;
    const auto t0 = Clock::now();
    v1::VirtualQpInfo va = CreateVqp(a->stub(), scheme, 8);
    v1::VirtualQpInfo vb = CreateVqp(b->stub(), scheme, 8);
    ASSERT_NE(va.vqp_id(), 0u) << "VQP " << i << " was not admitted on A";
    ASSERT_NE(vb.vqp_id(), 0u) << "VQP " << i << " was not admitted on B";
    ConnectPair(a->stub(), va, b->stub(), vb);
    if (::testing::Test::HasFatalFailure()) return;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / 2);
    pairs.emplace_back(va.vqp_id(), vb.vqp_id());
  }
  const size_t fds_a = OpenFds(a->pid()), fds_b = OpenFds(b->pid());
  std::printf(
      "%d connected 8-QP VQP pairs: create+connect per VQP p50 %.2f ms, p99 %.2f ms; "
      "agent A %zu fds (%zu before), RSS %lu KiB (%lu before); agent B %zu fds\n",
      kVqps, Percentile(ms, 0.5), Percentile(ms, 0.99), fds_a, fds_a0,
      static_cast<unsigned long>(RssKiB(a->pid())), static_cast<unsigned long>(rss_a0), fds_b);
  EXPECT_EQ(SoftFdLimit(a->pid()), ours.rlim_max) << "the agent should raise its soft limit";
  // Two soft NICs on each agent: at most four NIC pairs, a connection each.
  EXPECT_LE(fds_a, fds_a0 + 4) << "descriptors grow with VQPs";
  EXPECT_LE(fds_b, fds_b0 + 4) << "descriptors grow with VQPs";

  std::mt19937 rng(1);
  for (int i = 0; i < 10; ++i) {
    const auto& [va, vb] = pairs[rng() % pairs.size()];
    VerifiedWrite(*a, *b, va, vb, src, dst, 100 + static_cast<uint64_t>(i));
  }
  for (const auto& [va, vb] : pairs) {
    DestroyVqp(a->stub(), va);
    DestroyVqp(b->stub(), vb);
  }
  // The peer closes its side of each connection asynchronously: give it a moment.
  for (int i = 0; i < 100 && (OpenFds(a->pid()) != fds_a0 || OpenFds(b->pid()) != fds_b0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(OpenFds(a->pid()), fds_a0);
  EXPECT_EQ(OpenFds(b->pid()), fds_b0);
}

// Creates 8-QP SPRAY VQPs on `stub` (appended to `made`), at most 100, until one is refused;
// returns the refusal (OK: none was).
grpc::Status CreateUntilRefused(v1::Agent::Stub& stub, std::vector<v1::VirtualQpInfo>* made) {
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest r;
    r.set_scheme(v1::SCHEME_SPRAY);
    r.set_num_qps(8);
    v1::VirtualQpInfo info;
    const grpc::Status s = stub.CreateVirtualQp(&ctx, r, &info);
    if (!s.ok()) return s;
    made->push_back(info);
  }
  return grpc::Status::OK;
}

// An agent whose limit is too low for what is asked (soft = hard = 400 descriptors) refuses the
// VQP that would eat into its reserve with RESOURCE_EXHAUSTED naming the limit, never with EMFILE
// from somewhere else, and keeps answering: GetInfo, health, a new gRPC connection, a region, and
// transfers on the VQPs it has. A VQP not yet connected is counted at its most (a new connection
// per QP); connecting it, or destroying VQPs, makes room again.
TEST(AgentLimits, AtAnFdLimitNewVqpsAreRefusedCleanlyAndTheControlPlaneKeepsAnswering) {
  AgentSpec sa{"fdlim-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0};
  sa.fd_soft_limit = sa.fd_hard_limit = 400;
  auto a = AgentProcess::Spawn(sa);
  auto b = AgentProcess::Spawn({"fdlim-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  std::vector<v1::VirtualQpInfo> waiting;  // created on A, not connected
  const grpc::Status refusal = CreateUntilRefused(a->stub(), &waiting);
  std::printf("admitted %zu unconnected VQPs under a limit of 400 fds (%zu open); refusal: %s\n",
              waiting.size(), OpenFds(a->pid()), refusal.error_message().c_str());
  ASSERT_FALSE(refusal.ok()) << "100 unconnected VQPs fit in 400 descriptors?";
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refusal.error_message().find("of its limit of 400"), std::string::npos);
  EXPECT_GE(waiting.size(), 3u) << "the reserve took more than it should";
  // Connected, they hold what they really use: room for more.
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  for (const v1::VirtualQpInfo& va : waiting) {
    v1::VirtualQpInfo vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 8);
    ConnectPair(a->stub(), va, b->stub(), vb);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    pairs.emplace_back(va.vqp_id(), vb.vqp_id());
  }
  v1::VirtualQpInfo more = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 8);
  EXPECT_NE(more.vqp_id(), 0u) << "connected VQPs still counted at their most";

  // The control plane answers, also on a connection opened now.
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(TestPort(0)),
                                     grpc::InsecureChannelCredentials());
  auto fresh = v1::Agent::NewStub(channel);
  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::AgentInfo info;
  EXPECT_TRUE(fresh->GetInfo(&info_ctx, {}, &info).ok());
  EXPECT_EQ(HealthStatus(channel), 1);
  v1::RegionInfo src = Register(a->stub(), kMiB, "src");
  v1::RegionInfo dst = Register(b->stub(), kMiB, "dst");
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  VerifiedWrite(*a, *b, pairs.front().first, pairs.front().second, src, dst, 1);
  VerifiedWrite(*a, *b, pairs.back().first, pairs.back().second, src, dst, 2);
  // Room comes back with destroyed VQPs: fill it with unconnected ones, destroy one, and one more
  // fits.
  std::vector<v1::VirtualQpInfo> unconnected{more};
  EXPECT_FALSE(CreateUntilRefused(a->stub(), &unconnected).ok());
  DestroyVqp(a->stub(), unconnected.back().vqp_id());
  v1::VirtualQpInfo again = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 8);
  EXPECT_NE(again.vqp_id(), 0u);
}

// Connections of `type` to the Unix socket `path`, up to `n`, each connected without blocking and
// retried while the agent's backlog is full; fewer when the agent stops accepting for 2 s.
std::vector<common::UniqueFd> Flood(const std::string& path, int type, size_t n) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  std::vector<common::UniqueFd> out;
  auto last_progress = Clock::now();
  while (out.size() < n && Clock::now() - last_progress < std::chrono::seconds(2)) {
    common::UniqueFd s(::socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s.valid()) break;
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      out.push_back(std::move(s));
      last_progress = Clock::now();
    } else if (errno == EAGAIN) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      break;
    }
  }
  return out;
}

// Whether the agent closed `s` (after what it sent first, if anything): a refused connection.
bool ClosedByAgent(int s) {
  char buf[4096];
  for (;;) {
    const ssize_t got = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
    if (got == 0) return true;
    if (got < 0) return errno != EAGAIN;
  }
}

// How many of `conns` the agent closed, once `expected` of them are or 10 s have passed.
size_t CountClosed(const std::vector<common::UniqueFd>& conns, size_t expected) {
  std::vector<bool> closed(conns.size(), false);
  size_t count = 0;
  for (auto t0 = Clock::now(); Clock::now() - t0 < std::chrono::seconds(10);) {
    for (size_t i = 0; i < conns.size(); ++i) {
      if (!closed[i] && ClosedByAgent(conns[i].get())) {
        closed[i] = true;
        ++count;
      }
    }
    if (count >= expected) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return count;
}

// GetInfo over a connection opened now to `target`, within 5 s.
bool AnswersOn(const std::string& target) {
  auto stub = v1::Agent::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::AgentInfo info;
  return stub->GetInfo(&ctx, {}, &info).ok();
}

// One local process opening connections to both Unix sockets and sending nothing cannot deafen an
// agent (limit: 400 descriptors): on the gRPC socket it holds at most its uid's cap (100 here) and
// the rest are closed at once; on the session socket a connection is also admitted against the
// descriptor reserve, and the refused ones are told why. Meanwhile GetInfo and health answer on
// new connections, every refusal is counted, and once the flood closes, the cap counts the
// connections the gRPC server closed as gone (a new one over the Unix socket answers), a session
// opens, and the agent's descriptors are back at their baseline. Without the cap and the budget,
// the flood filled the agent's 400 descriptors and it answered nobody until the flood was gone.
// So did 300 idle connections to its TCP port, for gRPC's two minutes of handshake time; now they
// are closed after 5 s.
TEST(AgentLimits, IdleUnixConnectionsAreCappedPerUidAndLeaveTheAgentAnswering) {
  constexpr size_t kFlood = 300, kCap = 100, kLimit = 400, kReserve = 256;
  rlimit ours{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &ours), 0);
  ASSERT_GE(ours.rlim_max, 4 * kFlood) << "this test needs a hard fd limit of at least 1,200";
  const rlimit raised{ours.rlim_max, ours.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &raised), 0);
  const std::string dir = "/tmp/braid-flood-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  AgentSpec spec{"flood-a", {TestNicIp(0, 0)}, 0};
  spec.fd_soft_limit = spec.fd_hard_limit = kLimit;
  spec.extra_args = {"--grpc-unix", dir + "/a.sock", "--unix-connections-per-uid",
                     std::to_string(kCap)};
  auto a = AgentProcess::Spawn(spec);
  ASSERT_TRUE(a);
  const std::string tcp = "127.0.0.1:" + std::to_string(TestPort(0));
  const size_t fds0 = OpenFds(a->pid());
  ASSERT_TRUE(AnswersOn("unix:" + dir + "/a.sock"));
  {
    std::vector<common::UniqueFd> grpc_flood = Flood(dir + "/a.sock", SOCK_STREAM, kFlood);
    EXPECT_EQ(grpc_flood.size(), kFlood) << "the agent stopped accepting on its gRPC socket";
    EXPECT_EQ(CountClosed(grpc_flood, kFlood - kCap), kFlood - kCap);
    std::vector<common::UniqueFd> session_flood =
        Flood(dir + "/a.sock.session", SOCK_SEQPACKET, kFlood);
    EXPECT_EQ(session_flood.size(), kFlood) << "the agent stopped accepting on its session socket";
    // A refused connection has its answer waiting; a held one has nothing.
    std::vector<pollfd> polled;
    for (const common::UniqueFd& s : session_flood) polled.push_back({s.get(), POLLIN, 0});
    size_t refused = 0;
    for (auto t0 = Clock::now(); Clock::now() - t0 < std::chrono::seconds(5);) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      const size_t before = refused;
      refused = static_cast<size_t>(poll(polled.data(), polled.size(), 0));
      if (refused > 0 && refused == before) break;
    }
    for (const pollfd& p : polled) {
      if ((p.revents & POLLIN) == 0) continue;
      session::WireReply reply;
      std::vector<int> fds;
      ASSERT_TRUE(session::ReceiveMessage(p.fd, &reply, sizeof(reply), &fds).ok());
      EXPECT_EQ(reply.code, static_cast<uint32_t>(common::StatusCode::kNoResource));
      EXPECT_NE(std::string(reply.message).find("of its limit of 400"), std::string::npos)
          << reply.message;
    }
    const size_t held = OpenFds(a->pid());
    std::printf(
        "flood of %zu + %zu idle connections: the agent holds %zu descriptors (%zu before, limit "
        "%zu), refused %zu on its session socket\n",
        kFlood, kFlood, held, fds0, kLimit, refused);
    EXPECT_GT(refused, 0u);
    EXPECT_LE(held, kLimit - kReserve) << "the flood ate into the control plane's reserve";
    // A client of the SDK is told why.
    auto refused_client = session::SessionClient::Connect(dir + "/a.sock.session", {64, 64, 64});
    ASSERT_FALSE(refused_client.ok());
    EXPECT_EQ(refused_client.status().code(), common::StatusCode::kNoResource);
    EXPECT_NE(refused_client.status().ToString().find("of its limit of 400"), std::string::npos)
        << refused_client.status().ToString();
    EXPECT_TRUE(AnswersOn(tcp));
    EXPECT_EQ(HealthStatus(a->channel()), 1);
    const std::string metrics = ScrapeMetrics(a->metrics_port());
    EXPECT_NE(metrics.find("braid_denied_requests_total{rpc=\"(Unix socket)\",reason=\"connection_"
                           "limit\"} " +
                           std::to_string(kFlood - kCap)),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("braid_denied_requests_total{rpc=\"(session socket)\",reason=\"fd_"
                           "limit\"} " +
                           std::to_string(refused + 1)),  // and the SDK client's
              std::string::npos)
        << metrics;
  }
  // Idle TCP connections that never finish their handshake are closed within seconds (gRPC's
  // default: two minutes), while their client still holds them.
  {
    std::vector<common::UniqueFd> tcp_flood;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(TestPort(0));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (size_t i = 0; i < kFlood; ++i) {
      common::UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      ASSERT_EQ(connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
      tcp_flood.push_back(std::move(s));
    }
    EXPECT_EQ(CountClosed(tcp_flood, kFlood), kFlood) << "idle TCP connections left open";
    EXPECT_TRUE(AnswersOn(tcp));
  }
  // The flood is gone: what the gRPC server closed is no longer counted against the uid.
  for (int i = 0; i < 100 && OpenFds(a->pid()) != fds0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(OpenFds(a->pid()), fds0);
  std::vector<std::unique_ptr<session::SessionClient>> sessions;
  for (size_t i = 0; i < 3; ++i) {
    auto c = session::SessionClient::Connect(dir + "/a.sock.session", {64, 64, 64});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    sessions.push_back(std::move(c).value());
  }
  EXPECT_TRUE(AnswersOn("unix:" + dir + "/a.sock"));
  sessions.clear();
  a.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace braid::testing

namespace braid::testing {
namespace {

// Drives `n` async operations of one kind on `cq` and expects every one to succeed.
void Drain(grpc::CompletionQueue& cq, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i) {
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok)) << what;
    ASSERT_TRUE(ok) << what << " #" << reinterpret_cast<uintptr_t>(tag);
  }
}

// A caller that opens stream after stream and fills each window without reading its results
// made the agent hold every one of them (1,000 streams of 1,024: 194 MB, kept); watchers that
// never read could each hold 16,384 notifications. A Transfer stream's window and a watcher's
// capacity now come out of its caller's budgets: full while the budget lasts, then what is left,
// then a floor (1 operation, 256 notifications); another caller has its own budgets, and an ended
// stream gives its share back.
TEST(AgentLimits, OneCallersStreamsShareItsBudgetsAndLeaveOtherCallersTheirs) {
  const std::string dir = "/tmp/braid-window-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  AgentSpec spec{"window-a", {TestNicIp(0, 0)}, 0};
  spec.extra_args = {"--grpc-unix",
                     dir + "/a.sock",
                     "--identity",
                     "uid:" + std::to_string(getuid()) + "=client",
                     "--transfer-window",
                     "8",
                     "--transfer-window-per-caller",
                     "20",
                     "--watch-backlog-per-caller",
                     "40000"};
  auto a = AgentProcess::Spawn(spec);
  ASSERT_TRUE(a);
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::TransferRequest, v1::TransferResponse>> rw;
    uint32_t window = 0;
  };
  auto open = [](v1::Agent::Stub& stub) {
    auto s = std::make_unique<Stream>();
    s->rw = stub.Transfer(&s->ctx);
    v1::TransferResponse hello;
    if (s->rw->Read(&hello)) s->window = hello.window().max_in_flight();
    return s;
  };
  auto close = [](std::unique_ptr<Stream> s) {
    s->rw->WritesDone();
    return s->rw->Finish();
  };
  std::vector<std::unique_ptr<Stream>> tcp;
  std::vector<uint32_t> windows;
  for (int i = 0; i < 4; ++i) {
    tcp.push_back(open(a->stub()));
    windows.push_back(tcp.back()->window);
  }
  EXPECT_EQ(windows, (std::vector<uint32_t>{8, 8, 4, 1}));
  // The caller past its budget still moves: one operation (on no VQP: refused, and answered).
  v1::TransferOp op;
  op.set_op_id(42);
  op.set_vqp_id(999999);
  op.set_op(v1::OP_WRITE);
  op.set_length(1);
  ASSERT_TRUE(tcp.back()->rw->Write(OneOp(op)));
  v1::TransferResponse answer;
  ASSERT_TRUE(tcp.back()->rw->Read(&answer));
  ASSERT_EQ(answer.completions_size(), 1);
  EXPECT_EQ(answer.completions(0).op_id(), 42u);
  EXPECT_EQ(answer.completions(0).code(), grpc::StatusCode::NOT_FOUND);
  // Another caller (this uid, over the Unix socket) has a budget of its own.
  auto local = v1::Agent::NewStub(
      grpc::CreateChannel("unix:" + dir + "/a.sock", grpc::InsecureChannelCredentials()));
  auto other = open(*local);
  EXPECT_EQ(other->window, 8u);
  // An ended stream's window comes back (once the agent has let the stream go).
  EXPECT_TRUE(close(std::move(tcp.front())).ok());
  tcp.erase(tcp.begin());
  uint32_t again = 0;
  for (auto t0 = Clock::now(); again != 8 && Clock::now() - t0 < std::chrono::seconds(5);) {
    auto s = open(a->stub());
    again = s->window;
    EXPECT_TRUE(close(std::move(s)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(again, 8u);
  for (auto& s : tcp) EXPECT_TRUE(close(std::move(s)).ok());
  EXPECT_TRUE(close(std::move(other)).ok());

  struct Watch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::WatchNotificationsResponse>> reader;
    uint32_t capacity = 0;
  };
  auto watch = [](v1::Agent::Stub& stub, uint64_t vqp) {
    auto w = std::make_unique<Watch>();
    v1::WatchNotificationsRequest request;
    request.set_vqp_id(vqp);
    w->reader = stub.WatchNotifications(&w->ctx, request);
    v1::WatchNotificationsResponse first;
    if (w->reader->Read(&first) && first.subscribed()) w->capacity = first.capacity();
    return w;
  };
  const uint64_t vqp = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 1).vqp_id();
  std::vector<std::unique_ptr<Watch>> watches;
  std::vector<uint32_t> capacities;
  for (int i = 0; i < 5; ++i) {
    watches.push_back(watch(a->stub(), vqp));
    capacities.push_back(watches.back()->capacity);
  }
  EXPECT_EQ(capacities, (std::vector<uint32_t>{16384, 16384, 7232, 256, 256}));
  EXPECT_EQ(watch(*local, CreateVqp(*local, v1::SCHEME_SPRAY, 1).vqp_id())->capacity, 16384u);
  watches.front()->ctx.TryCancel();
  watches.erase(watches.begin());
  uint32_t regained = 0;
  for (auto t0 = Clock::now(); regained != 16384 && Clock::now() - t0 < std::chrono::seconds(5);) {
    regained = watch(a->stub(), vqp)->capacity;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(regained, 16384u);
  for (auto& w : watches) w->ctx.TryCancel();
  watches.clear();
  a.reset();
  std::filesystem::remove_all(dir);
}

// Open streams cost the agent no thread each: `kStreams` Transfer streams and as many
// WatchNotifications streams stay open on one agent (idle) while its threads stay within a small
// fixed number (gRPC's pools and the agent's own) and its memory grows by a few dozen KiB per
// stream pair; then every Transfer stream moves one 4 KiB
// write whose bytes are compared, and once all are closed the agent holds the threads and fds it
// had before.
TEST(AgentScale, ThousandsOfOpenStreamsTakeNoThreadEach) {
  // BRAID_STREAMS overrides the count (the issue's figure: 10,000 of each).
  const char* env = std::getenv("BRAID_STREAMS");
  const size_t kStreams = env != nullptr ? std::strtoul(env, nullptr, 10) : 1000;
  constexpr uint64_t kOp = 4096;
  auto a = AgentProcess::Spawn({"streams-a", {TestNicIp(0, 0)}, 0});
  auto b = AgentProcess::Spawn({"streams-b", {TestNicIp(1, 0)}, 2});
  ASSERT_TRUE(a && b);
  const v1::VirtualQpInfo va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 2);
  const v1::VirtualQpInfo vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 2);
  ConnectPair(a->stub(), va, b->stub(), vb);
  const v1::RegionInfo src = Register(a->stub(), kStreams * kOp, "src");
  const v1::RegionInfo dst = Register(b->stub(), kStreams * kOp, "dst", {vb.vqp_id()});
  MappedRegion s(src.path(), kStreams * kOp), d(dst.path(), kStreams * kOp);
  ASSERT_TRUE(s.data() && d.data());
  FillPattern(s.data(), kStreams * kOp, 77);
  RunTransfers(a->stub(), Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, kOp, 1, 1));  // warm-up
  const size_t fds0 = OpenFds(a->pid()), own0 = OwnThreads(a->pid());
  const std::vector<std::string> fd_targets0 = FdTargets(a->pid());
  const uint64_t rss0 = RssKiB(a->pid());

  grpc::CompletionQueue cq;
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::TransferRequest, v1::TransferResponse>> rw;
    v1::TransferResponse response;
    grpc::Status status;
  };
  struct Watch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientAsyncReader<v1::WatchNotificationsResponse>> reader;
    v1::WatchNotificationsResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Stream>> streams(kStreams);
  std::vector<std::unique_ptr<Watch>> watches(kStreams);
  auto tag = [](size_t i) { return reinterpret_cast<void*>(i + 1); };
  v1::WatchNotificationsRequest watch_request;
  watch_request.set_vqp_id(va.vqp_id());
  for (size_t i = 0; i < kStreams; ++i) {
    streams[i] = std::make_unique<Stream>();
    streams[i]->rw = a->stub().AsyncTransfer(&streams[i]->ctx, &cq, tag(i));
    watches[i] = std::make_unique<Watch>();
    watches[i]->reader =
        a->stub().AsyncWatchNotifications(&watches[i]->ctx, watch_request, &cq, tag(i));
  }
  Drain(cq, 2 * kStreams, "stream start");
  for (size_t i = 0; i < kStreams; ++i) {
    streams[i]->rw->Read(&streams[i]->response, tag(i));
    watches[i]->reader->Read(&watches[i]->response, tag(i));
  }
  Drain(cq, 2 * kStreams, "first message");
  for (size_t i = 0; i < kStreams; ++i) {
    ASSERT_GT(streams[i]->response.window().max_in_flight(), 0u) << i;
    ASSERT_TRUE(watches[i]->response.subscribed()) << i;
  }
  const size_t threads_open = Threads(a->pid());
  const uint64_t rss_open = RssKiB(a->pid());
  std::printf(
      "%zu Transfer and %zu WatchNotifications streams open: agent threads %zu (%zu "
      "before), RSS %.1f MiB (%.1f before)\n",
      kStreams, kStreams, threads_open, own0, rss_open / 1024.0, rss0 / 1024.0);
  EXPECT_LE(threads_open, 64u) << "a thread per stream?";
#ifndef BRAID_SANITIZED
  // An idle stream's memory follows what it has waiting, not its window (1,024 operations; a
  // sink sized for the window took ~250 KiB per stream): ~35 KiB per pair of streams here.
  EXPECT_LT((rss_open - rss0) / kStreams, 64u)
      << "KiB of agent memory per open Transfer and WatchNotifications stream";
#endif

  // One verified 4 KiB write per Transfer stream.
  std::vector<v1::TransferOp> ops =
      Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, kOp, kStreams, kStreams);
  std::vector<v1::TransferRequest> requests;  // alive until the writes are done
  for (const v1::TransferOp& op : ops) requests.push_back(OneOp(op));
  for (size_t i = 0; i < kStreams; ++i) streams[i]->rw->Write(requests[i], tag(i));
  Drain(cq, kStreams, "write");
  for (size_t i = 0; i < kStreams; ++i) streams[i]->rw->Read(&streams[i]->response, tag(i));
  Drain(cq, kStreams, "completion");
  for (size_t i = 0; i < kStreams; ++i) {
    const v1::TransferResponse& r = streams[i]->response;
    ASSERT_EQ(r.completions_size(), 1) << i;
    EXPECT_EQ(r.completions(0).op_id(), i);
    EXPECT_EQ(r.completions(0).code(), 0) << r.completions(0).message();
  }
  EXPECT_EQ(Checksum(d.data(), kStreams * kOp), Checksum(s.data(), kStreams * kOp));

  for (size_t i = 0; i < kStreams; ++i) {
    streams[i]->rw->WritesDone(tag(i));
    watches[i]->ctx.TryCancel();
  }
  Drain(cq, kStreams, "writes done");
  for (size_t i = 0; i < kStreams; ++i) {
    streams[i]->rw->Finish(&streams[i]->status, tag(i));
    watches[i]->reader->Finish(&watches[i]->status, tag(i));
  }
  Drain(cq, 2 * kStreams, "finish");
  for (size_t i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(streams[i]->status.ok()) << streams[i]->status.error_message();
    EXPECT_EQ(watches[i]->status.error_code(), grpc::StatusCode::CANCELLED);
  }
  size_t fds = 0, own = 0;
  for (int tries = 0; tries < 100; ++tries) {
    fds = OpenFds(a->pid());
    own = OwnThreads(a->pid());
    if (fds <= fds0 && own <= own0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Nothing of the streams stays open. Fewer is no leak: one ASan run under make test's load saw
  // 25 against 27 taken after the warm-up (the listing below says which, should it recur).
  EXPECT_LE(fds, fds0) << "before: " << ::testing::PrintToString(fd_targets0)
                       << "\nafter: " << ::testing::PrintToString(FdTargets(a->pid()));
  EXPECT_EQ(own, own0) << "threads besides gRPC's callback executor";
  EXPECT_LE(ExecutorThreads(a->pid()), MaxExecutorThreads());
  cq.Shutdown();
  void* t;
  bool ok;
  while (cq.Next(&t, &ok)) {
  }
}

}  // namespace
}  // namespace braid::testing
