// End-to-end benchmark through two braidd agents on loopback: 1 MiB write and read bandwidth and
// a pipelined 4 KiB write rate over an 8-QP SPRAY VQP across two soft NICs per agent, through the
// gRPC Transfer stream (batched; at 4 KiB also one operation per message) and through a local
// session's rings (the client's own memfd registered with RegisterFd, doc/local_data_path.md), on
// the same agents in the same run. Each figure is printed next to the in-process soft-TCP figure
// of the same `make bench` run when that run's results file is given, with the CPU both agents and
// this client spent per GB moved (from /proc), and the one-way latency of an 8-byte
// WRITE_WITH_IMM ping-pong between a client of each agent, both on their agents' rings, the
// notifications included (p50/p99), on the 8-QP VQP and on a 1-QP VQP pair.
//
// With --rounds=N --tcp-bench=PATH, then N rounds of the in-process 1 MiB WRITE and READ (a run of
// braid_tcp_bench) each followed by the ring's, on the 8-QP VQP and on a VQP of the in-process
// figure's shape (4 QPs on one NIC pair, one soft operation per 1 MiB), and the ratios of their
// medians.
//
// Usage: braid_agent_bench [tcp_loopback.txt] [--rounds=N --tcp-bench=PATH]
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bench/ring_client.h"
#include "dataplane/session/session_client.h"
#include "tests/agent/agent_harness.h"

namespace {

using braid::bench::RingClient;
using braid::testing::AgentProcess;
namespace v1 = braid::v1;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRegion = 256 * kMiB;

// The figure on the line of `in` that starts with `label` (GB/s or Mops/s), or -1.
double FigureOn(std::istream& in, const std::string& label) {
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(label, 0) == 0) return std::stod(line.substr(label.size()));
  }
  return -1;
}

double InProcess(const std::string& file, const std::string& label) {
  std::ifstream in(file);
  return FigureOn(in, label);
}

// What `command` prints on its standard output.
std::string Output(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  pclose(p);
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// CPU seconds of both agents and of this process so far.
double CpuSeconds(const AgentProcess& a, const AgentProcess& b) {
  timespec self{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self);
  const double ticks =
      static_cast<double>(braid::testing::CpuTicks(a.pid()) + braid::testing::CpuTicks(b.pid()));
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK)) + static_cast<double>(self.tv_sec) +
         static_cast<double>(self.tv_nsec) * 1e-9;
}

struct Figure {
  double seconds = 0;
  double cpu = 0;  // both agents and this client
  uint64_t ops = 0;
  uint64_t bytes = 0;
  bool ok = true;
  double gbs() const { return static_cast<double>(bytes) / seconds / 1e9; }
  double mops() const { return static_cast<double>(ops) / seconds / 1e6; }
  double cpu_per_gb() const { return cpu / (static_cast<double>(bytes) / 1e9); }
};

Figure Run(AgentProcess& a, AgentProcess& b, v1::Op op, uint64_t vqp, const v1::RegionInfo& local,
           const v1::RegionInfo& remote, uint64_t size, uint64_t count, uint32_t batch = 0) {
  const std::vector<v1::TransferOp> ops =
      braid::testing::Transfers(op, vqp, local, remote, size, count, kRegion / size);
  const double cpu0 = CpuSeconds(a, b);
  const auto t0 = std::chrono::steady_clock::now();
  braid::testing::TransferRun run = braid::testing::RunTransfers(a.stub(), ops, 0, batch);
  Figure f;
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.cpu = CpuSeconds(a, b) - cpu0;
  f.ok = run.status.ok() && run.completions.size() == count;
  for (const auto& c : run.completions) {
    f.ok = f.ok && c.code() == 0;
    f.bytes += c.bytes();
  }
  f.ops = run.completions.size();
  return f;
}

// `count` operations of `size` bytes through the ring, at most `depth` in flight; the client
// sleeps on its doorbell while its window is full and nothing is ready.
Figure RingRun(AgentProcess& a, AgentProcess& b, RingClient& r, uint64_t vqp,
               braid::session::RingOp op, uint64_t size, uint64_t count, uint32_t depth) {
  namespace session = braid::session;
  std::vector<session::SubmitEntry> batch(64);
  std::vector<session::CompletionEntry> out(256);
  const uint64_t slots = kRegion / size;
  uint64_t submitted = 0, done = 0;
  Figure f;
  const double cpu0 = CpuSeconds(a, b);
  const auto t0 = std::chrono::steady_clock::now();
  while (done < count) {
    const uint64_t room = std::min<uint64_t>(depth - (submitted - done), count - submitted);
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(room, batch.size()));
    for (uint32_t i = 0; i < n; ++i) {
      session::SubmitEntry& e = batch[i];
      e = {};
      e.user_data = submitted + i;
      e.vqp_id = vqp;
      e.local_region = static_cast<uint32_t>(r.region);
      e.remote_region = r.handle;
      e.local_offset = e.remote_offset = ((submitted + i) % slots) * size;
      e.length = static_cast<uint32_t>(size);
      e.op = static_cast<uint8_t>(op);
    }
    if (n > 0) submitted += r.client->Submit({batch.data(), n});
    const uint32_t got = r.client->Reap(out);
    for (uint32_t i = 0; i < got; ++i) {
      f.ok = f.ok && out[i].status == 0;
      f.bytes += out[i].length;
    }
    done += got;
    // Nothing to reap and nothing more may go: sleep on the doorbell rather than spin (the
    // agents need the cores).
    if (got == 0 && submitted - done == std::min<uint64_t>(depth, count - done)) {
      r.client->Wait(1);
    }
  }
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.cpu = CpuSeconds(a, b) - cpu0;
  f.ops = done;
  return f;
}

// A connected VQP pair of `num_qps` QPs on each agent's first soft NIC only, with fragments of
// 1 MiB: the QPs and operations of the in-process 4-QP figure (4 soft QPs between two soft NICs,
// one soft WRITE or READ per 1 MiB), behind the agents.
std::pair<uint64_t, uint64_t> OneNicPair(AgentProcess& a, AgentProcess& b, uint32_t num_qps) {
  auto create = [&](AgentProcess& agent) {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest request;
    request.set_scheme(v1::SCHEME_SPRAY);
    request.set_num_qps(num_qps);
    request.add_devices("soft0");
    request.set_fragment_size(kMiB);
    v1::VirtualQpInfo info;
    const grpc::Status s = agent.stub().CreateVirtualQp(&ctx, request, &info);
    if (!s.ok()) std::fprintf(stderr, "CreateVirtualQp: %s\n", s.error_message().c_str());
    return info;
  };
  const v1::VirtualQpInfo va = create(a);
  const v1::VirtualQpInfo vb = create(b);
  braid::testing::ConnectPair(a.stub(), va, b.stub(), vb);
  return {va.vqp_id(), vb.vqp_id()};
}

// `rounds` rounds of: the in-process 1 MiB WRITE and READ on 4 soft QPs (`tcp_bench --bulk-4qp`,
// 1 s each), then the same through the ring, on the 8-QP VQP over two NICs (`ring`, 256 deep)
// and on a 4-QP VQP over one NIC with 1 MiB fragments (`same`, 64 deep: the in-process QPs and
// depth). This VM's speed drifts by half from one minute to the next; alternating makes each ring
// figure meet an in-process one of the same minute. Prints every round, the medians and the
// ratios of the medians.
bool Rounds(AgentProcess& a, AgentProcess& b, RingClient& ring, uint64_t vqp, RingClient& same,
            uint64_t same_vqp, int rounds, const std::string& tcp_bench) {
  namespace session = braid::session;
  std::vector<double> in_w, in_r, ring_w, ring_r, same_w, same_r;
  std::printf(
      "1 MiB, in-process (4 soft QPs) and through the ring (8-QP VQP on 2 NICs; 4-QP VQP on 1 "
      "NIC), round after round (GB/s)\n");
  std::printf("%-6s %10s %10s %10s %10s %10s %10s\n", "round", "in WRITE", "ring8 W", "ring4 W",
              "in READ", "ring8 R", "ring4 R");
  for (int i = 1; i <= rounds; ++i) {
    std::istringstream out(Output(tcp_bench + " --bulk-4qp --seconds=1"));
    const double w = FigureOn(out, "4 soft QPs, 1 MiB RDMA WRITE, depth 16 each");
    const double r = FigureOn(out, "4 soft QPs, 1 MiB RDMA READ, depth 16 each");
    const Figure rw = RingRun(a, b, ring, vqp, session::RingOp::kWrite, kMiB, 2048, 256);
    const Figure sw = RingRun(a, b, same, same_vqp, session::RingOp::kWrite, kMiB, 2048, 64);
    const Figure rr = RingRun(a, b, ring, vqp, session::RingOp::kRead, kMiB, 2048, 256);
    const Figure sr = RingRun(a, b, same, same_vqp, session::RingOp::kRead, kMiB, 2048, 64);
    if (w <= 0 || r <= 0 || !rw.ok || !rr.ok || !sw.ok || !sr.ok) {
      std::fprintf(stderr, "agent_bench: round %d failed (in-process %.3f / %.3f)\n", i, w, r);
      return false;
    }
    in_w.push_back(w);
    in_r.push_back(r);
    ring_w.push_back(rw.gbs());
    ring_r.push_back(rr.gbs());
    same_w.push_back(sw.gbs());
    same_r.push_back(sr.gbs());
    std::printf("%-6d %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", i, w, rw.gbs(), sw.gbs(), r,
                rr.gbs(), sr.gbs());
    std::fflush(stdout);
  }
  const double mw = Median(in_w), mr = Median(in_r);
  std::printf("%-6s %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", "median", mw, Median(ring_w),
              Median(same_w), mr, Median(ring_r), Median(same_r));
  // Each round's ring figure over its own in-process one: the pairing the alternation is for.
  auto paired = [](const std::vector<double>& ring, const std::vector<double>& in) {
    std::vector<double> r;
    for (size_t i = 0; i < ring.size(); ++i) r.push_back(ring[i] / in[i]);
    return Median(r);
  };
  std::printf(
      "ring/in-process (goal >= 0.95), ratio of the medians of %d rounds | median of the rounds' "
      "ratios:\n  the same 4 QPs:         1 MiB WRITE %.2f | %.2f, READ %.2f | %.2f\n"
      "  the 8-QP VQP on 2 NICs: 1 MiB WRITE %.2f | %.2f, READ %.2f | %.2f\n",
      rounds, Median(same_w) / mw, paired(same_w, in_w), Median(same_r) / mr, paired(same_r, in_r),
      Median(ring_w) / mw, paired(ring_w, in_w), Median(ring_r) / mr, paired(ring_r, in_r));
  return true;
}

}  // namespace

// Usage: braid_agent_bench [tcp_loopback.txt] [--rounds=N --tcp-bench=PATH]
int main(int argc, char** argv) {
  namespace session = braid::session;
  std::string tcp_results, tcp_bench;
  int rounds = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--rounds=")) {
      rounds = std::atoi(arg.c_str() + 9);
    } else if (arg.starts_with("--tcp-bench=")) {
      tcp_bench = arg.substr(12);
    } else if (!arg.starts_with("--")) {
      tcp_results = arg;
    } else {
      std::fprintf(stderr,
                   "usage: braid_agent_bench [tcp_loopback.txt] [--rounds=N --tcp-bench=PATH]\n");
      return 2;
    }
  }
  const std::string dir = "/tmp/braid-agent-bench-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  braid::testing::AgentPair pair =
      braid::testing::SpawnConnectedPair("bench", kRegion, dir + "/a.sock", dir + "/b.sock");
  if (!pair.a) return 1;
  AgentProcess& a = *pair.a;
  AgentProcess& b = *pair.b;
  const uint64_t vqp = pair.va.vqp_id();
  const v1::RegionInfo& src = pair.src;
  const v1::RegionInfo& dst = pair.dst;
  RingClient ring, back;
  if (!braid::bench::OpenRingPair(a, b, dir + "/a.sock.session", dir + "/b.sock.session", vqp,
                                  pair.vb.vqp_id(), dst, kRegion, &ring, &back)) {
    return 1;
  }
  // The same ping-pong on a 1-QP VQP pair: the shape of the in-process figure (one soft QP, where
  // the immediate travels with the data; an 8-QP SPRAY VQP sends it in a notify, which for a
  // message of one fragment follows the data on the same QP).
  const v1::VirtualQpInfo one_a = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 1);
  const v1::VirtualQpInfo one_b = braid::testing::CreateVqp(b.stub(), v1::SCHEME_SPRAY, 1);
  braid::testing::ConnectPair(a.stub(), one_a, b.stub(), one_b);
  RingClient one_ring, one_back;
  if (!braid::bench::OpenRingPair(a, b, dir + "/a.sock.session", dir + "/b.sock.session",
                                  one_a.vqp_id(), one_b.vqp_id(),
                                  braid::testing::WithGrant(b.stub(), dst, one_b.vqp_id()), kRegion,
                                  &one_ring, &one_back)) {
    return 1;
  }

  Run(a, b, v1::OP_WRITE, vqp, src, dst, kMiB, 256);  // warm-up
  const Figure w = Run(a, b, v1::OP_WRITE, vqp, src, dst, kMiB, 2048);
  const Figure r = Run(a, b, v1::OP_READ, vqp, src, dst, kMiB, 2048);
  const Figure s = Run(a, b, v1::OP_WRITE, vqp, src, dst, 4096, 200000);
  const Figure s1 = Run(a, b, v1::OP_WRITE, vqp, src, dst, 4096, 20000, 1);
  RingRun(a, b, ring, vqp, session::RingOp::kWrite, kMiB, 256, 256);  // warm-up
  const Figure rw = RingRun(a, b, ring, vqp, session::RingOp::kWrite, kMiB, 2048, 256);
  const Figure rr = RingRun(a, b, ring, vqp, session::RingOp::kRead, kMiB, 2048, 256);
  const Figure rs = RingRun(a, b, ring, vqp, session::RingOp::kWrite, 4096, 400000, 1024);
  const auto [p50, p99] = braid::bench::RingPingPong(ring, vqp, back, pair.vb.vqp_id(), 20000);
  const auto [one_p50, one_p99] =
      braid::bench::RingPingPong(one_ring, one_a.vqp_id(), one_back, one_b.vqp_id(), 20000);
  if (!w.ok || !r.ok || !s.ok || !s1.ok || !rw.ok || !rr.ok || !rs.ok || p50 < 0 || one_p50 < 0) {
    std::fprintf(stderr, "agent_bench: a transfer failed\n");
    return 1;
  }
  const double tcp_w = InProcess(tcp_results, "4 soft QPs, 1 MiB RDMA WRITE, depth 16 each");
  const double tcp_r = InProcess(tcp_results, "4 soft QPs, 1 MiB RDMA READ, depth 16 each");
  const double tcp_s = InProcess(tcp_results, "1 soft QP, 4 KiB RDMA WRITE rate");
  const double tcp_l = InProcess(tcp_results, "WRITE_WITH_IMM ping-pong, one-way latency");
  auto ratio = [](double x, double of) { return of > 0 ? x / of : -1; };
  std::printf(
      "through two braidd agents, 8-QP SPRAY VQP, 2 soft NICs each (same agents, same run)\n");
  std::printf("%-22s %9s %9s %10s %8s %8s %14s %14s\n", "", "gRPC", "ring", "in-process", "gRPC/in",
              "ring/in", "CPU s/GB gRPC", "CPU s/GB ring");
  auto row = [&](const char* what, double g, double rg, double in, const Figure& fg,
                 const Figure& fr, const char* unit) {
    std::printf("%-22s %9.3f %9.3f %10.3f %8.2f %8.2f %14.3f %14.3f  %s\n", what, g, rg, in,
                ratio(g, in), ratio(rg, in), fg.cpu_per_gb(), fr.cpu_per_gb(), unit);
  };
  row("1 MiB WRITE", w.gbs(), rw.gbs(), tcp_w, w, rw, "GB/s");
  row("1 MiB READ", r.gbs(), rr.gbs(), tcp_r, r, rr, "GB/s");
  row("4 KiB WRITE, pipelined", s.mops(), rs.mops(), tcp_s, s, rs, "Mops/s");
  std::printf(
      "gRPC 4 KiB WRITE: %.3f Mops/s batched (as many per message as the window has room for), "
      "%.3f one per message: %.2fx\n",
      s.mops(), s1.mops(), ratio(s.mops(), s1.mops()));
  std::printf(
      "8 B WRITE_WITH_IMM ping-pong through both agents' rings, one-way: p50 %.1f us, p99 %.1f us; "
      "in-process %.1f us; p50/in %.2f, p99/in %.2f\n",
      p50, p99, tcp_l, ratio(p50, tcp_l), ratio(p99, tcp_l));
  std::printf(
      "the same on a 1-QP VQP pair (one soft QP each, as in-process): p50 %.1f us, p99 %.1f us; "
      "p50/in %.2f, p99/in %.2f\n",
      one_p50, one_p99, ratio(one_p50, tcp_l), ratio(one_p99, tcp_l));
  std::printf(
      "(gRPC: the Transfer stream, window 1024, batched; ring: a session, 256 deep at 1 MiB, 1024 "
      "at 4 KiB;\n"
      " in-process: bench/tcp_loopback.sh of this run, 4 soft QPs / 1 soft QP, -1: not run;\n"
      " CPU: both agents and this client, from /proc)\n");
  if (rounds > 0 && !tcp_bench.empty()) {
    const auto [same_a, same_b] = OneNicPair(a, b, 4);
    RingClient same;
    if (!braid::bench::OpenRing(a, dir + "/a.sock.session", same_a,
                                braid::testing::WithGrant(b.stub(), dst, same_b), kRegion, &same) ||
        !Rounds(a, b, ring, vqp, same, same_a, rounds, tcp_bench)) {
      return 1;
    }
  }
  ring.client.reset();
  back.client.reset();
  one_ring.client.reset();
  one_back.client.reset();
  pair.a.reset();
  pair.b.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
