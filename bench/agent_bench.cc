// End-to-end benchmark through two braidd agents on loopback (issue 6): 1 MiB write and read
// bandwidth and a pipelined 4 KiB write rate through the Transfer stream, over an 8-QP SPRAY VQP
// across two soft NICs per agent. Each figure is printed next to the in-process soft-TCP figure
// of the same run when that run's results file is given.
//
// Usage: braid_agent_bench [tcp_loopback.txt]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

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

struct Figure {
  double seconds = 0;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  bool ok = true;
};

Figure Run(AgentProcess& a, v1::Op op, uint64_t vqp, const v1::RegionInfo& local,
           const v1::RegionInfo& remote, uint64_t size, uint64_t count) {
  const std::vector<v1::TransferRequest> ops =
      braid::testing::Transfers(op, vqp, local, remote, size, count, kRegion / size);
  const auto t0 = std::chrono::steady_clock::now();
  braid::testing::TransferRun run = braid::testing::RunTransfers(a.stub(), ops);
  Figure f;
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.ok = run.status.ok() && run.completions.size() == count;
  for (const auto& c : run.completions) {
    f.ok = f.ok && c.code() == 0;
    f.bytes += c.bytes();
  }
  f.ops = run.completions.size();
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string tcp_results = argc > 1 ? argv[1] : "";
  braid::testing::AgentPair pair = braid::testing::SpawnConnectedPair("bench", kRegion);
  if (!pair.a) return 1;
  AgentProcess* a = pair.a.get();
  const v1::VirtualQpInfo& va = pair.va;
  const v1::RegionInfo& src = pair.src;
  const v1::RegionInfo& dst = pair.dst;

  Run(*a, v1::OP_WRITE, va.vqp_id(), src, dst, kMiB, 256);  // warm-up
  const Figure w = Run(*a, v1::OP_WRITE, va.vqp_id(), src, dst, kMiB, 2048);
  const Figure r = Run(*a, v1::OP_READ, va.vqp_id(), src, dst, kMiB, 2048);
  const Figure s = Run(*a, v1::OP_WRITE, va.vqp_id(), src, dst, 4096, 200000);
  if (!w.ok || !r.ok || !s.ok) {
    std::fprintf(stderr, "agent_bench: a transfer failed\n");
    return 1;
  }
  const double w_gbs = static_cast<double>(w.bytes) / w.seconds / 1e9;
  const double r_gbs = static_cast<double>(r.bytes) / r.seconds / 1e9;
  const double s_mops = static_cast<double>(s.ops) / s.seconds / 1e6;
  const double s_gbs = static_cast<double>(s.bytes) / s.seconds / 1e9;
  const double tcp_w = InProcess(tcp_results, "4 soft QPs, 1 MiB RDMA WRITE, depth 16 each");
  const double tcp_r = InProcess(tcp_results, "4 soft QPs, 1 MiB RDMA READ, depth 16 each");
  const double tcp_s = InProcess(tcp_results, "1 soft QP, 4 KiB RDMA WRITE rate");
  std::printf("%-58s %8s %10s\n", "through two braidd agents (Transfer stream, window 256)",
              "agents", "in-process");
  std::printf("%-58s %8.3f %10.3f  GB/s\n", "8-QP SPRAY VQP, 2 NICs each, 1 MiB WRITE", w_gbs,
              tcp_w);
  std::printf("%-58s %8.3f %10.3f  GB/s\n", "8-QP SPRAY VQP, 2 NICs each, 1 MiB READ", r_gbs,
              tcp_r);
  std::printf("%-58s %8.3f %10.3f  Mops/s  (%.3f GB/s)\n",
              "8-QP SPRAY VQP, 2 NICs each, 4 KiB WRITE, pipelined", s_mops, tcp_s, s_gbs);
  std::printf(
      "(in-process: bench/tcp_loopback.sh of this run, 4 soft QPs / 1 soft QP; -1: not run)\n");
  return 0;
}
