// Through two braidd agents under CPU contention: the 4 KiB WRITE rate (pipelined, the agent's
// window) and the one-at-a-time 4 KiB WRITE latency over gRPC, and the one-way p50 of an 8-byte
// WRITE_WITH_IMM ping-pong between a client of each agent on their session rings, on an 8-QP
// SPRAY VQP, quiet and then with one competing busy process (a spinning child, as another
// tenant's poller would be), in each of several trials. A poller that degrades gracefully keeps a
// fair share of the cores; one that spins while work is in flight starves the threads that would
// complete it.
//
// Usage: braid_agent_contention_bench [trials]   (default 5)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/busy_process.h"
#include "bench/ring_client.h"
#include "tests/agent/agent_harness.h"

namespace {

using braid::testing::AgentProcess;
namespace v1 = braid::v1;

constexpr uint64_t kRegion = 64 << 20;
constexpr uint64_t kOp = 4096;

struct Figures {
  double rate_mops = 0;   // pipelined
  double latency_us = 0;  // one outstanding: mean time per op
  double ping_us = 0;     // ping-pong through both agents' rings, one-way p50
  bool ok = true;
};

// The ping-pong's two clients (one on each agent's rings) and their VQPs.
struct Rings {
  braid::bench::RingClient a, b;
  uint64_t vqp_a = 0, vqp_b = 0;
};

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool AllSucceeded(const braid::testing::TransferRun& run, uint64_t count) {
  if (!run.status.ok() || run.completions.size() != count) return false;
  for (const auto& c : run.completions) {
    if (c.code() != 0 || c.bytes() != kOp) return false;
  }
  return true;
}

Figures Measure(AgentProcess& a, uint64_t vqp, const v1::RegionInfo& src, const v1::RegionInfo& dst,
                Rings& rings) {
  Figures f;
  constexpr uint64_t kRateOps = 20000, kLatencyOps = 1000;
  const auto rate_ops =
      braid::testing::Transfers(v1::OP_WRITE, vqp, src, dst, kOp, kRateOps, kRegion / kOp);
  auto t0 = std::chrono::steady_clock::now();
  braid::testing::TransferRun run = braid::testing::RunTransfers(a.stub(), rate_ops);
  f.rate_mops = static_cast<double>(kRateOps) / Seconds(t0) / 1e6;
  f.ok = AllSucceeded(run, kRateOps);
  const auto latency_ops =
      braid::testing::Transfers(v1::OP_WRITE, vqp, src, dst, kOp, kLatencyOps, kRegion / kOp);
  t0 = std::chrono::steady_clock::now();
  run = braid::testing::RunTransfers(a.stub(), latency_ops, /*max_outstanding=*/1);
  f.latency_us = Seconds(t0) * 1e6 / static_cast<double>(kLatencyOps);
  f.ok = f.ok && AllSucceeded(run, kLatencyOps);
  f.ping_us = braid::bench::RingPingPong(rings.a, rings.vqp_a, rings.b, rings.vqp_b, 2000).first;
  f.ok = f.ok && f.ping_us > 0;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const int trials = argc > 1 ? std::atoi(argv[1]) : 5;
  const std::string dir = "/tmp/braid-contention-bench-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  braid::testing::AgentPair pair =
      braid::testing::SpawnConnectedPair("contend", kRegion, dir + "/a.sock", dir + "/b.sock");
  if (!pair.a) return 1;
  AgentProcess* a = pair.a.get();
  const v1::VirtualQpInfo& va = pair.va;
  const v1::RegionInfo& src = pair.src;
  const v1::RegionInfo& dst = pair.dst;
  Rings rings;
  rings.vqp_a = va.vqp_id();
  rings.vqp_b = pair.vb.vqp_id();
  if (!braid::bench::OpenRingPair(*a, *pair.b, dir + "/a.sock.session", dir + "/b.sock.session",
                                  rings.vqp_a, rings.vqp_b, dst, 1 << 20, &rings.a, &rings.b)) {
    return 1;
  }
  Measure(*a, va.vqp_id(), src, dst, rings);  // warm-up

  std::printf("%-6s %10s %10s %6s %10s %10s %6s %10s %10s %6s\n", "trial", "4K Mops/s", "contended",
              "ratio", "4K lat us", "contended", "ratio", "ping us", "contended", "ratio");
  double worst_rate = 1e9, worst_latency = 1e9, worst_ping = 1e9;
  for (int t = 1; t <= trials; ++t) {
    const Figures quiet = Measure(*a, va.vqp_id(), src, dst, rings);
    Figures busy;
    {
      const braid::bench::BusyProcess hog;
      busy = Measure(*a, va.vqp_id(), src, dst, rings);
    }
    if (!quiet.ok || !busy.ok) {
      std::fprintf(stderr, "agent_contention_bench: a transfer failed\n");
      return 1;
    }
    const double rate = busy.rate_mops / quiet.rate_mops;
    const double latency = quiet.latency_us / busy.latency_us;  // kept fraction, as the rate
    const double ping = quiet.ping_us / busy.ping_us;
    worst_rate = std::min(worst_rate, rate);
    worst_latency = std::min(worst_latency, latency);
    worst_ping = std::min(worst_ping, ping);
    std::printf("%-6d %10.4f %10.4f %6.2f %10.1f %10.1f %6.2f %10.1f %10.1f %6.2f\n", t,
                quiet.rate_mops, busy.rate_mops, rate, quiet.latency_us, busy.latency_us, latency,
                quiet.ping_us, busy.ping_us, ping);
  }
  std::printf(
      "worst of %d trials: 4 KiB rate kept %.2f, latency kept %.2f, ping-pong latency kept %.2f "
      "(quiet/contended)\n",
      trials, worst_rate, worst_latency, worst_ping);
  rings.a.client.reset();
  rings.b.client.reset();
  pair.a.reset();
  pair.b.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
