// Through two braidd agents under CPU contention: the 4 KiB WRITE rate (pipelined, the agent's
// window) and the one-at-a-time 4 KiB WRITE latency on an 8-QP SPRAY VQP, quiet and then with one
// competing busy process (a spinning child, as another tenant's poller would be), in each of
// several trials. A poller that degrades gracefully keeps a fair share of the cores; one that
// spins while work is in flight starves the threads that would complete it.
//
// Usage: braid_agent_contention_bench [trials]   (default 5)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/busy_process.h"
#include "tests/agent/agent_harness.h"

namespace {

using braid::testing::AgentProcess;
namespace v1 = braid::v1;

constexpr uint64_t kRegion = 64 << 20;
constexpr uint64_t kOp = 4096;

struct Figures {
  double rate_mops = 0;   // pipelined
  double latency_us = 0;  // one outstanding: mean time per op
  bool ok = true;
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

Figures Measure(AgentProcess& a, uint64_t vqp, const v1::RegionInfo& src,
                const v1::RegionInfo& dst) {
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
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const int trials = argc > 1 ? std::atoi(argv[1]) : 5;
  braid::testing::AgentPair pair = braid::testing::SpawnConnectedPair("contend", kRegion);
  if (!pair.a) return 1;
  AgentProcess* a = pair.a.get();
  const v1::VirtualQpInfo& va = pair.va;
  const v1::RegionInfo& src = pair.src;
  const v1::RegionInfo& dst = pair.dst;
  Measure(*a, va.vqp_id(), src, dst);  // warm-up

  std::printf("%-6s %12s %12s %7s %12s %12s %7s\n", "trial", "4K Mops/s", "contended", "ratio",
              "4K lat us", "contended", "ratio");
  double worst_rate = 1e9, worst_latency = 1e9;
  for (int t = 1; t <= trials; ++t) {
    const Figures quiet = Measure(*a, va.vqp_id(), src, dst);
    Figures busy;
    {
      const braid::bench::BusyProcess hog;
      busy = Measure(*a, va.vqp_id(), src, dst);
    }
    if (!quiet.ok || !busy.ok) {
      std::fprintf(stderr, "agent_contention_bench: a transfer failed\n");
      return 1;
    }
    const double rate = busy.rate_mops / quiet.rate_mops;
    const double latency = quiet.latency_us / busy.latency_us;  // kept fraction, as the rate
    worst_rate = std::min(worst_rate, rate);
    worst_latency = std::min(worst_latency, latency);
    std::printf("%-6d %12.4f %12.4f %7.2f %12.1f %12.1f %7.2f\n", t, quiet.rate_mops,
                busy.rate_mops, rate, quiet.latency_us, busy.latency_us, latency);
  }
  std::printf("worst of %d trials: 4 KiB rate kept %.2f, latency kept %.2f (quiet/contended)\n",
              trials, worst_rate, worst_latency);
  return 0;
}
