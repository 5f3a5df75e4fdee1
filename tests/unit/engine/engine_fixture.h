// The engine tests' fixture: two engines in one process, each with a soft NIC on the TCP link,
// one connected 4-QP VQP pair and a 64 MiB region on each side, driven through the engine's
// thread-safe interface as the server drives it. Shared by engine_test.cc and
// engine_sessions_test.cc.
#ifndef BRAID_TESTS_UNIT_ENGINE_ENGINE_FIXTURE_H_
#define BRAID_TESTS_UNIT_ENGINE_ENGINE_FIXTURE_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/engine/engine.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/test_port.h"

namespace braid::engine {

constexpr uint64_t kMiB = 1 << 20;

inline std::string Ip(int side) {
  return "127.77." + std::to_string(static_cast<uint32_t>(getpid()) % 250) + "." +
         std::to_string(side + 1);
}

// An engine on soft NIC `side`, with `o` as its options but for its provider, id, region
// directory and fault injection (on: a test stalls the engine). Its soft link listens on
// TestPort(`port_slot`).
struct Side {
  explicit Side(int side, EngineOptions o = {}, int port_slot = 4)
      : fabric(soft::TcpFabricOptions{.port = testing::TestPort(port_slot)}),
        provider({{{"soft0", Ip(side)}}, &fabric}) {
    o.provider = &provider;
    o.agent_id = "engine" + std::to_string(side);
    o.region_dir = dir;
    o.fault_injection = true;
    std::filesystem::create_directories(dir);
    auto e = Engine::Start(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (e.ok()) engine = std::move(e).value();
  }
  ~Side() {
    engine.reset();
    std::filesystem::remove_all(dir);
  }
  soft::TcpFabric fabric;
  soft::SoftProvider provider;
  std::string dir = "/dev/shm/braid-engine-test-" + std::to_string(getpid()) + "-" +
                    std::to_string(reinterpret_cast<uintptr_t>(this) & 0xFFFF);
  std::unique_ptr<Engine> engine;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a_.engine && b_.engine);
    Connect(4, 1024);
  }
  void Connect(uint32_t qps, uint32_t max_virtual_wrs) {
    ConnectPair(a_, b_, qps, max_virtual_wrs, &vqp_, &peer_vqp_, &local_, &remote_);
  }
  // A VQP pair between `a` and `b` and a 64 MiB region on each side, each granted to its VQP (the
  // test reads the local addresses from the grants); on `a`, the VQP and region are `owner`'s.
  static void ConnectPair(Side& a, Side& b, uint32_t qps, uint32_t max_virtual_wrs, uint64_t* vqp,
                          uint64_t* peer_vqp, RegionStatus* local, RegionStatus* remote,
                          OwnerId owner = kAnyOwner) {
    CreateVqpRequest r;
    r.config.num_qps = qps;
    r.config.max_virtual_wrs = max_virtual_wrs;
    auto vb = b.engine->CreateVirtualQp(r);
    r.owner = owner;
    auto va = a.engine->CreateVirtualQp(r);
    ASSERT_TRUE(va.ok() && vb.ok());
    ASSERT_TRUE(a.engine->ConnectVirtualQp(va->id, vb->card).ok());
    ASSERT_TRUE(b.engine->ConnectVirtualQp(vb->id, va->card).ok());
    *vqp = va->id;
    *peer_vqp = vb->id;
    auto ra = a.engine->RegisterMemory(
        {.length = 64 * kMiB, .label = "a", .owner = owner, .grant_vqps = {*vqp}});
    auto rb =
        b.engine->RegisterMemory({.length = 64 * kMiB, .label = "b", .grant_vqps = {*peer_vqp}});
    ASSERT_TRUE(ra.ok() && rb.ok());
    ASSERT_EQ(ra->grants.size(), 1u);
    ASSERT_EQ(rb->grants.size(), 1u);
    *local = *ra;
    *remote = *rb;
  }
  TransferRequest Write(uint64_t op_id, uint64_t offset, uint64_t length) const {
    return WriteOn(vqp_, local_, remote_, op_id, offset, length);
  }
  static TransferRequest WriteOn(uint64_t vqp, const RegionStatus& local,
                                 const RegionStatus& remote, uint64_t op_id, uint64_t offset,
                                 uint64_t length) {
    TransferRequest t;
    t.op_id = op_id;
    t.vqp_id = vqp;
    t.op = TransferOp::kWriteWithImm;
    t.local_region = local.id;
    t.local_offset = offset;
    t.remote = remote.grants[0];
    t.remote_offset = offset;
    t.length = length;
    t.imm = static_cast<uint32_t>(op_id);
    return t;
  }
  // Waits for `count` results (at most 20 s).
  static std::vector<TransferResult> Collect(TransferSink& sink, size_t count) {
    std::vector<TransferResult> out;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (out.size() < count && std::chrono::steady_clock::now() < give_up) {
      while (auto r = sink.results.TryPop()) out.push_back(std::move(*r));
      if (out.size() < count) sink.results.Wait(10);
    }
    return out;
  }

  // Stalls engine A for 300 ms and submits 4 KiB writes (op ids 0, 1, ...) into `sink` until its
  // command queue refuses one; `bell`, if given, is then registered to ring once there is room.
  // Returns how many went in.
  uint64_t StallAndFillCommandQueue(const std::shared_ptr<TransferSink>& sink,
                                    const std::shared_ptr<common::Doorbell>& bell) {
    FaultRequest stall;
    stall.kind = FaultKind::kStallEngine;
    stall.duration_ms = 300;
    EXPECT_TRUE(a_.engine->InjectFault(stall).ok());
    uint64_t n = 0;
    common::Status s;
    while ((s = a_.engine->SubmitTransfer(Write(n, (n % 16384) * 4096, 4096), sink, bell)).ok()) {
      if (++n == 8000) {
        ADD_FAILURE() << "the command queue never filled";
        break;
      }
    }
    EXPECT_EQ(s.code(), common::StatusCode::kNoResource);
    return n;
  }

  Side a_{0};
  Side b_{1};
  uint64_t vqp_ = 0;
  uint64_t peer_vqp_ = 0;
  RegionStatus local_, remote_;
};

// Counts the rings of a producer's doorbell.
struct CountingBell final : common::Doorbell {
  void Ring() override { rings.fetch_add(1); }
  std::atomic<int> rings{0};
};

// Over half a second, the engine sleeps in epoll between its 100 ms heartbeats: a handful of
// turns, not millions.
inline void ExpectSleepsForHalfASecond(Engine& engine) {
  auto before = engine.Snapshot();
  ASSERT_TRUE(before.ok());
  usleep(500000);
  auto after = engine.Snapshot();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->sleeps - before->sleeps, 3u);
  EXPECT_LT(after->loop_iterations - before->loop_iterations, 1000u);
}

}  // namespace braid::engine

#endif  // BRAID_TESTS_UNIT_ENGINE_ENGINE_FIXTURE_H_
