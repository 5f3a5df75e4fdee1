// AgentHostileTest: the fixture of the hostile-request tests (agent_hostile_test.cc), also the
// base of the drain test (agent_control_test.cc): two agents with a connected VQP pair and a region
// on each side. Each test gets fresh agents.
#ifndef BRAID_TESTS_AGENT_CONNECTED_PAIR_FIXTURE_H_
#define BRAID_TESTS_AGENT_CONNECTED_PAIR_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/agent/agent_harness.h"

namespace braid::testing {

// A connected 4-QP SPRAY pair with one region on each side.
class AgentHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A's completion queues may not grow past their first size, so that a VQP too large for
    // them can be asked for within the validated ranges.
    a_ = AgentProcess::Spawn(
        {"agent-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, false, {"--max-cq-entries", "16384"}});
    b_ = AgentProcess::Spawn({"agent-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
    ASSERT_TRUE(a_ && b_);
    va_ = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 4);
    vb_ = CreateVqp(b_->stub(), v1::SCHEME_SPRAY, 4);
    ConnectPair(a_->stub(), va_, b_->stub(), vb_);
    fresh_ = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 4);  // never connected
    ra_ = Register(a_->stub(), 4 * kMiB, "a", {va_.vqp_id()});
    rb_ = Register(b_->stub(), 4 * kMiB, "b", {vb_.vqp_id()});
  }

  v1::TransferOp GoodWrite(uint64_t op_id) const {
    v1::TransferOp r;
    r.set_op_id(op_id);
    r.set_vqp_id(va_.vqp_id());
    r.set_op(v1::OP_WRITE);
    r.set_local_region_id(ra_.region_id());
    *r.mutable_remote() = GrantOf(rb_);
    r.set_length(kMiB);
    return r;
  }

  // What the agent holds, as text: VQPs (ids, connection, QP health) and regions.
  std::string Holdings(AgentProcess& agent) {
    std::string out;
    grpc::ClientContext c1, c2;
    v1::ListVirtualQpsResponse vqps;
    v1::ListRegionsResponse regions;
    EXPECT_TRUE(agent.stub().ListVirtualQps(&c1, {}, &vqps).ok());
    EXPECT_TRUE(agent.stub().ListRegions(&c2, {}, &regions).ok());
    for (const auto& v : vqps.vqps()) {
      out += "vqp " + std::to_string(v.vqp_id()) + (v.connected() ? " connected" : "") +
             " healthy=" + std::to_string(v.healthy_data_qps()) + "\n";
    }
    for (const auto& r : regions.regions()) {
      out += "region " + std::to_string(r.region_id()) + " " + std::to_string(r.length()) + " " +
             r.path() + "\n";
    }
    return out;
  }

  std::unique_ptr<AgentProcess> a_, b_;
  v1::VirtualQpInfo va_, vb_, fresh_;
  v1::RegionInfo ra_, rb_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_AGENT_CONNECTED_PAIR_FIXTURE_H_
