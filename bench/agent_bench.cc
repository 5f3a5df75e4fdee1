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
// Usage: braid_agent_bench [tcp_loopback.txt]
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/session_client.h"
#include "tests/agent/agent_harness.h"

namespace {

using braid::testing::AgentProcess;
namespace v1 = braid::v1;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRegion = 256 * kMiB;

// The figure on the line of `file` that starts with `label` (GB/s or Mops/s), or -1.
double InProcess(const std::string& file, const std::string& label) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(label, 0) == 0) return std::stod(line.substr(label.size()));
  }
  return -1;
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

// The client's side of the ring path: its own memory (a sealed memfd of kRegion bytes) registered
// with RegisterFd, and the peer's region bound to its session.
struct RingClient {
  std::unique_ptr<braid::session::SessionClient> client;
  uint64_t region = 0;
  uint32_t handle = 0;
  int fd = -1;
  uint8_t* data = nullptr;
  ~RingClient() {
    if (data != nullptr) munmap(data, kRegion);
    if (fd >= 0) close(fd);
  }
};

bool OpenRing(AgentProcess& a, const std::string& socket, uint64_t vqp, const v1::RegionInfo& dst,
              RingClient* out) {
  out->fd = memfd_create("braid-bench", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (out->fd < 0 || ftruncate(out->fd, kRegion) != 0 ||
      fcntl(out->fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return false;
  }
  void* p = mmap(nullptr, kRegion, PROT_READ | PROT_WRITE, MAP_SHARED, out->fd, 0);
  if (p == MAP_FAILED) return false;
  out->data = static_cast<uint8_t*>(p);
  braid::testing::FillPattern(out->data, kRegion, 1);
  auto client = braid::session::SessionClient::Connect(socket, {1024, 1024, 1024});
  if (!client.ok()) {
    std::fprintf(stderr, "session: %s\n", client.status().ToString().c_str());
    return false;
  }
  out->client = std::move(client).value();
  auto region = out->client->RegisterFd(out->fd, 0, kRegion, {&vqp, 1}, "bench");
  if (!region.ok()) {
    std::fprintf(stderr, "RegisterFd: %s\n", region.status().ToString().c_str());
    return false;
  }
  out->region = *region;
  grpc::ClientContext ctx;
  v1::BindRemoteRequest request;
  request.set_session_id(out->client->id());
  request.set_vqp_id(vqp);
  *request.mutable_remote() = braid::testing::GrantOf(dst);
  v1::BindRemoteResponse response;
  const grpc::Status s = a.stub().BindRemote(&ctx, request, &response);
  if (!s.ok()) {
    std::fprintf(stderr, "BindRemote: %s\n", s.error_message().c_str());
    return false;
  }
  out->handle = response.handle();
  return true;
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

// Waits for one notification on `r`'s session, reaping (and checking) completions meanwhile; when
// both rings are empty it spins 50 us, as the SDK's ring reader does, giving its core away between
// looks (on a small machine the agent's engine needs it: on 2 cores, spinning without yielding
// made the one-way p50 about 8 times longer than sleeping at once), then sleeps on the client's
// doorbell. False after 5 s or a failure.
bool AwaitNotification(RingClient& r, braid::session::NotifyEntry* out) {
  namespace session = braid::session;
  session::CompletionEntry done[16];
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const uint32_t c = r.client->Reap(done);
    for (uint32_t i = 0; i < c; ++i) {
      if (done[i].status != 0) return false;
    }
    if (r.client->ReapNotifications({out, 1}) == 1) {
      return out->kind == static_cast<uint8_t>(session::NotifyKind::kNotification);
    }
    const auto waited = std::chrono::steady_clock::now() - t0;
    if (waited > std::chrono::seconds(5)) return false;
    if (waited < std::chrono::microseconds(50)) {
      sched_yield();
      continue;
    }
    r.client->Wait(1);
  }
}

// Subscribes `r`'s session to `vqp`'s notifications.
bool WatchRing(RingClient& r, uint64_t vqp) {
  const braid::session::SubmitEntry watch = braid::session::SessionClient::Watch(vqp, 1);
  if (r.client->Submit({&watch, 1}) != 1) return false;
  braid::session::CompletionEntry done{};
  for (int i = 0; i < 5000 && r.client->Reap({&done, 1}) == 0; ++i) r.client->Wait(1);
  return done.user_data == 1 && done.status == 0;
}

// The two sides of a ping-pong over the VQP pair `vqp_a` (agent A) / `vqp_b` (agent B): a client
// of A writing into `b_memory` (B's region granted to `vqp_b`) and a client of B writing back
// into A's client's memory, both subscribed to their VQP's notifications.
bool OpenRingPair(AgentProcess& a, AgentProcess& b, const std::string& dir, uint64_t vqp_a,
                  uint64_t vqp_b, const v1::RegionInfo& b_memory, RingClient* ra, RingClient* rb) {
  if (!OpenRing(a, dir + "/a.sock.session", vqp_a, b_memory, ra)) return false;
  v1::RegionInfo a_memory;
  a_memory.set_region_id(ra->region);
  return OpenRing(b, dir + "/b.sock.session", vqp_b,
                  braid::testing::WithGrant(a.stub(), a_memory, vqp_a), rb) &&
         WatchRing(*ra, vqp_a) && WatchRing(*rb, vqp_b);
}

// 8-byte WRITE_WITH_IMM ping-pong between two clients, each on its own agent's session rings: A
// writes into B's region, B's client hears the notification and writes back into A's, A's hears
// it. One-way latency (half of each round trip as A sees it) in microseconds: p50 and p99.
std::pair<double, double> RingPingPong(RingClient& a, uint64_t vqp_a, RingClient& b, uint64_t vqp_b,
                                       int rounds) {
  namespace session = braid::session;
  auto submit = [](RingClient& r, uint64_t vqp, uint32_t imm) {
    session::SubmitEntry e{};
    e.user_data = imm;
    e.vqp_id = vqp;
    e.local_region = static_cast<uint32_t>(r.region);
    e.remote_region = r.handle;
    e.length = 8;
    e.imm = imm;
    e.op = static_cast<uint8_t>(session::RingOp::kWriteWithImm);
    while (r.client->Submit({&e, 1}) == 0) {
    }
  };
  std::atomic<bool> ok{true};
  std::thread pong([&] {
    session::NotifyEntry n{};
    for (int i = 0; i < rounds && ok; ++i) {
      if (!AwaitNotification(b, &n) || n.imm != static_cast<uint32_t>(i)) {
        ok = false;
        return;
      }
      submit(b, vqp_b, n.imm);
    }
  });
  std::vector<double> us;
  session::NotifyEntry n{};
  for (int i = 0; i < rounds && ok; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    submit(a, vqp_a, static_cast<uint32_t>(i));
    if (!AwaitNotification(a, &n) || n.imm != static_cast<uint32_t>(i)) {
      ok = false;
      break;
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
        2);
  }
  pong.join();
  if (!ok || us.empty()) return {-1, -1};
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[us.size() * 99 / 100]};
}

}  // namespace

int main(int argc, char** argv) {
  namespace session = braid::session;
  const std::string tcp_results = argc > 1 ? argv[1] : "";
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
  if (!OpenRingPair(a, b, dir, vqp, pair.vb.vqp_id(), dst, &ring, &back)) return 1;
  // The same ping-pong on a 1-QP VQP pair: the shape of the in-process figure (one soft QP, where
  // the immediate travels with the data; an 8-QP SPRAY VQP sends it in a notify after the data's
  // acknowledgement and, when the data went over the other NIC, a fence READ).
  const v1::VirtualQpInfo one_a = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 1);
  const v1::VirtualQpInfo one_b = braid::testing::CreateVqp(b.stub(), v1::SCHEME_SPRAY, 1);
  braid::testing::ConnectPair(a.stub(), one_a, b.stub(), one_b);
  RingClient one_ring, one_back;
  if (!OpenRingPair(a, b, dir, one_a.vqp_id(), one_b.vqp_id(),
                    braid::testing::WithGrant(b.stub(), dst, one_b.vqp_id()), &one_ring,
                    &one_back)) {
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
  const auto [p50, p99] = RingPingPong(ring, vqp, back, pair.vb.vqp_id(), 20000);
  const auto [one_p50, one_p99] =
      RingPingPong(one_ring, one_a.vqp_id(), one_back, one_b.vqp_id(), 20000);
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
  ring.client.reset();
  back.client.reset();
  one_ring.client.reset();
  one_back.client.reset();
  pair.a.reset();
  pair.b.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
