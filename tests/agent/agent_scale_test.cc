// Scale and limits: many connected VQPs on default settings, and what happens at the fd limit.
// Two braidd processes with two soft NICs each, driven over gRPC as a client would.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

using Clock = std::chrono::steady_clock;

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
// first 16,384 entries, the agents raise their fd limit (soft NICs hold a descriptor per QP),
// transfers on randomly chosen VQPs move verified bytes, and destroying everything returns the fds.
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
  EXPECT_GT(fds_a, 1024u) << "the agent kept its soft limit of 1,024 (it should raise it)";

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

// An agent whose limit is too low for what is asked (soft = hard = 600 descriptors) refuses the
// VQP that would eat into its reserve with RESOURCE_EXHAUSTED naming the limit, never with EMFILE
// from somewhere else, and keeps answering: GetInfo, health, a new gRPC connection, a region, and
// transfers on the VQPs it has. Destroying some VQPs makes room again.
TEST(AgentLimits, AtAnFdLimitNewVqpsAreRefusedCleanlyAndTheControlPlaneKeepsAnswering) {
  AgentSpec sa{"fdlim-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0};
  sa.fd_soft_limit = sa.fd_hard_limit = 600;
  auto a = AgentProcess::Spawn(sa);
  auto b = AgentProcess::Spawn({"fdlim-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
  ASSERT_TRUE(a && b);
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  grpc::Status refusal;
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest r;
    r.set_scheme(v1::SCHEME_SPRAY);
    r.set_num_qps(8);
    v1::VirtualQpInfo va;
    refusal = a->stub().CreateVirtualQp(&ctx, r, &va);
    if (!refusal.ok()) break;
    v1::VirtualQpInfo vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 8);
    ConnectPair(a->stub(), va, b->stub(), vb);
    ASSERT_FALSE(::testing::Test::HasFatalFailure()) << "pair " << i;
    pairs.emplace_back(va.vqp_id(), vb.vqp_id());
  }
  std::printf("admitted %zu VQPs under a limit of 600 fds (%zu open); refusal: %s\n", pairs.size(),
              OpenFds(a->pid()), refusal.error_message().c_str());
  ASSERT_FALSE(refusal.ok()) << "100 VQPs fit in 600 descriptors?";
  EXPECT_EQ(refusal.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refusal.error_message().find("of its limit of 600"), std::string::npos);
  EXPECT_GE(pairs.size(), 20u) << "the reserve took more than it should";

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
  // Room comes back with destroyed VQPs.
  for (int i = 0; i < 3; ++i) {
    DestroyVqp(a->stub(), pairs.back().first);
    DestroyVqp(b->stub(), pairs.back().second);
    pairs.pop_back();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  v1::VirtualQpInfo again = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 8);
  EXPECT_NE(again.vqp_id(), 0u);
}

}  // namespace
}  // namespace braid::testing
