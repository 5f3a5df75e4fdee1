// SdkTest: two real agents and an SDK client of each, on one of a session's two paths (the
// test's parameter): the gRPC Transfer stream (agents reached over TCP) or a local session's
// rings (agents reached over their Unix sockets). Shared by the SDK's test files.
#ifndef BRAID_TESTS_AGENT_SDK_FIXTURE_H_
#define BRAID_TESTS_AGENT_SDK_FIXTURE_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "braid/agent_client.h"
#include "braid/transfer_session.h"
#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {

inline AgentSpec SpecA() { return {"sdk-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0}; }
inline AgentSpec SpecB() { return {"sdk-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2}; }
inline std::string Target(int slot) { return "127.0.0.1:" + std::to_string(TestPort(slot)); }

// The parameter: true for the ring path; PathName names it in test names.
inline std::string PathName(const ::testing::TestParamInfo<bool>& p) {
  return p.param ? "Ring" : "Grpc";
}

class SdkTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    pa_ = AgentProcess::Spawn(SpecOfA());
    pb_ = AgentProcess::Spawn(SpecOfB());
    ASSERT_TRUE(pa_ && pb_);
    auto a = client::AgentClient::Open(TargetA());
    auto b = client::AgentClient::Open(TargetB());
    ASSERT_TRUE(a.ok() && b.ok());
    a_ = *a;
    b_ = *b;
  }
  ~SdkTest() override {
    if (GetParam()) {
      std::filesystem::remove(UnixSocket("a"));
      std::filesystem::remove(UnixSocket("b"));
    }
  }
  std::string UnixSocket(const std::string& agent) const {
    return "/tmp/braid-sdk-test-" + std::to_string(getpid()) + "-" + agent + ".sock";
  }
  AgentSpec SpecOfA() const {
    AgentSpec spec = SpecA();
    spec.extra_args = extra_args_;
    if (GetParam()) spec.extra_args.insert(spec.extra_args.end(), {"--grpc-unix", UnixSocket("a")});
    return spec;
  }
  AgentSpec SpecOfB() const {
    AgentSpec spec = SpecB();
    spec.extra_args = extra_args_;
    if (GetParam()) spec.extra_args.insert(spec.extra_args.end(), {"--grpc-unix", UnixSocket("b")});
    return spec;
  }
  std::string TargetA() const { return GetParam() ? "unix:" + UnixSocket("a") : Target(0); }
  std::string TargetB() const { return GetParam() ? "unix:" + UnixSocket("b") : Target(2); }
  // A session on agent A's VQP `vqp`, on this test's path (checked).
  std::unique_ptr<client::TransferSession> OpenSession(uint64_t vqp) {
    auto session = client::TransferSession::Open(a_, vqp);
    EXPECT_TRUE(session.ok()) << session.status().ToString();
    if (!session.ok()) return nullptr;
    EXPECT_STREQ((*session)->path(), GetParam() ? "ring" : "grpc");
    return std::move(session).value();
  }
  // Nothing leaked: every test ends with empty lists on the agents that are up.
  void ExpectNothingHeld(client::AgentClient& agent) {
    auto vqps = agent.ListVqps();
    auto regions = agent.ListRegions();
    ASSERT_TRUE(vqps.ok() && regions.ok());
    EXPECT_EQ(vqps->size(), 0u) << agent.target();
    EXPECT_EQ(regions->size(), 0u) << agent.target();
  }
  // The one grant of `region` (registered for one VQP).
  static const v1::RemoteRegion& To(const client::Region& region) {
    EXPECT_EQ(region.info().grants_size(), 1);
    return region.info().grants(0);
  }
  client::TransferOp Op(const client::Region& src, const v1::RemoteRegion& dst, uint64_t i,
                        uint64_t length = kMiB) {
    client::TransferOp op;
    op.op = v1::OP_WRITE_WITH_IMM;
    op.local_region = src.id();
    op.local_offset = (i * length) % src.size();
    op.remote = dst;
    op.remote_offset = (i * length) % dst.length();
    op.length = length;
    op.imm = static_cast<uint32_t>(i);
    return op;
  }

  std::vector<std::string> extra_args_;  // both agents', set before SetUp
  std::unique_ptr<AgentProcess> pa_, pb_;
  std::shared_ptr<client::AgentClient> a_, b_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_AGENT_SDK_FIXTURE_H_
