// What mutual TLS costs through two braidd agents: 1 MiB WRITE throughput through the Transfer
// stream (8-QP SPRAY VQP, two soft NICs per agent) and the latency of a control call (GetInfo on
// an open connection), with plaintext agents and with mutual-TLS agents, in alternating rounds
// (the same machine state for both); medians of the rounds and their ratios.
//
// Usage: braid_agent_tls_bench [rounds]   (default 3)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/agent/agent_harness.h"

namespace {

using braid::testing::AgentProcess;
using braid::testing::AgentSpec;
using braid::testing::TestNicIp;
namespace v1 = braid::v1;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRegion = 256 * kMiB;

struct Round {
  double write_gbs = 0;
  double call_p50_us = 0;    // GetInfo: the agent's service and its engine
  double health_p50_us = 0;  // gRPC's health service: the transport alone
  double vqp_p50_us = 0;     // CreateVirtualQp (8 QPs) + DestroyVirtualQp: control calls at work
  bool ok = true;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Round Measure(bool tls, const braid::testing::TestPki& pki) {
  Round out;
  std::unique_ptr<AgentProcess> agents[2];
  for (int i = 0; i < 2; ++i) {
    const std::string name = i == 0 ? "agent-a" : "agent-b";
    AgentSpec spec{name, {TestNicIp(i, 0), TestNicIp(i, 1)}, i * 2};
    if (tls) {
      spec.security_args = pki.AgentArgs(name, "require", "");
      spec.credentials = pki.Tls("ca1", "client-a");
    }
    agents[i] = AgentProcess::Spawn(spec);
    if (!agents[i]) {
      out.ok = false;
      return out;
    }
  }
  AgentProcess& a = *agents[0];
  AgentProcess& b = *agents[1];
  auto va = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 8);
  auto vb = braid::testing::CreateVqp(b.stub(), v1::SCHEME_SPRAY, 8);
  braid::testing::ConnectPair(a.stub(), va, b.stub(), vb);
  auto src = braid::testing::Register(a.stub(), kRegion, "src");
  auto dst = braid::testing::Register(b.stub(), kRegion, "dst", {vb.vqp_id()});
  auto writes = [&](uint64_t count) {
    return braid::testing::Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, kMiB, count,
                                     kRegion / kMiB);
  };
  braid::testing::RunTransfers(a.stub(), writes(256));  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  braid::testing::TransferRun run = braid::testing::RunTransfers(a.stub(), writes(2048));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = 0;
  out.ok = run.status.ok() && run.completions.size() == 2048;
  for (const auto& c : run.completions) {
    out.ok = out.ok && c.code() == 0;
    bytes += c.bytes();
  }
  out.write_gbs = static_cast<double>(bytes) / seconds / 1e9;
  std::vector<double> calls;
  for (int i = 0; i < 2000; ++i) {
    grpc::ClientContext ctx;
    v1::AgentInfo info;
    const auto c0 = std::chrono::steady_clock::now();
    out.ok = out.ok && a.stub().GetInfo(&ctx, {}, &info).ok();
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.call_p50_us = Median(calls);
  calls.clear();
  for (int i = 0; i < 2000; ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    out.ok = out.ok && braid::testing::HealthStatus(a.channel()) == 1;
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.health_p50_us = Median(calls);
  calls.clear();
  for (int i = 0; i < 300; ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    const v1::VirtualQpInfo v = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 8);
    braid::testing::DestroyVqp(a.stub(), v.vqp_id());
    out.ok = out.ok && v.vqp_id() != 0;
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.vqp_p50_us = Median(calls);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  auto pki = braid::testing::TestPki::Make();
  if (!pki) return 1;
  std::vector<double> plain_w, tls_w, plain_c, tls_c, plain_v, tls_v;
  for (int r = 0; r < rounds; ++r) {
    for (bool tls : {false, true}) {
      const Round m = Measure(tls, *pki);
      if (!m.ok) {
        std::fprintf(stderr, "agent_tls_bench: a %s round failed\n", tls ? "TLS" : "plaintext");
        return 1;
      }
      std::printf(
          "round %d %-9s 1 MiB WRITE %.3f GB/s, GetInfo p50 %.1f us, health p50 %.1f us, "
          "create+destroy VQP p50 %.1f us\n",
          r + 1, tls ? "mTLS" : "plaintext", m.write_gbs, m.call_p50_us, m.health_p50_us,
          m.vqp_p50_us);
      (tls ? tls_w : plain_w).push_back(m.write_gbs);
      (tls ? tls_c : plain_c).push_back(m.call_p50_us);
      (tls ? tls_v : plain_v).push_back(m.vqp_p50_us);
    }
  }
  const double w0 = Median(plain_w), w1 = Median(tls_w);
  const double c0 = Median(plain_c), c1 = Median(tls_c);
  const double v0 = Median(plain_v), v1 = Median(tls_v);
  std::printf("%-50s %10s %10s %8s\n", "through two agents, medians of the rounds", "plaintext",
              "mTLS", "ratio");
  std::printf("%-50s %10.3f %10.3f %8.3f  (GB/s; throughput kept)\n",
              "8-QP SPRAY VQP, 2 NICs each, 1 MiB WRITE", w0, w1, w1 / w0);
  std::printf("%-50s %10.1f %10.1f %8.3f  (us; latency added)\n",
              "control call (GetInfo) p50 on an open connection", c0, c1, c1 / c0);
  std::printf("%-50s %10.1f %10.1f %8.3f  (us; latency added)\n",
              "CreateVirtualQp (8 QPs) + DestroyVirtualQp p50", v0, v1, v1 / v0);
  return 0;
}
