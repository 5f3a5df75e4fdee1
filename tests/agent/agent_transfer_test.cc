// Two braidd processes on loopback, two soft NICs each: an 8-QP VQP across both NICs moves
// 256 MiB of 1 MiB writes-with-immediate through Transfer, reads it back the other way, and the
// receiver's WatchNotifications shows every immediate and byte count in order. Then /metrics
// holds the series of DESIGN.md with the values this traffic implies, and promtool accepts it.
// A NIC taken down mid-transfer: its QPs fail over and every byte arrives. Each runs with both
// schemes, on the soft provider and on the rdma-core provider (`--provider ibverbs` over
// libbraid_verbs.so, where it is built).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/agent/agent_harness.h"

namespace braid::testing {
namespace {

constexpr uint64_t kTotal = 256 * kMiB;
constexpr uint32_t kQps = 8;

struct Pair {
  std::unique_ptr<AgentProcess> a;
  std::unique_ptr<AgentProcess> b;
};

struct Param {
  v1::Scheme scheme;
  bool soft_verbs;  // braidd --provider ibverbs over libbraid_verbs.so
};

Pair StartPair(const Param& param, bool fault_injection = false) {
  Pair p;
  AgentSpec a{"agent-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, fault_injection};
  AgentSpec b{"agent-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2, fault_injection};
  a.soft_verbs = b.soft_verbs = param.soft_verbs;
  p.a = AgentProcess::Spawn(a);
  p.b = AgentProcess::Spawn(b);
  return p;
}

std::vector<v1::TransferOp> Ops(v1::Op op, uint64_t vqp, const v1::RegionInfo& local,
                                const v1::RegionInfo& remote, uint32_t imm_base) {
  std::vector<v1::TransferOp> ops;
  for (uint64_t i = 0; i < kTotal / kMiB; ++i) {
    v1::TransferOp r;
    r.set_op_id(i);
    r.set_vqp_id(vqp);
    r.set_op(op);
    r.set_local_region_id(local.region_id());
    r.set_local_offset(i * kMiB);
    *r.mutable_remote() = GrantOf(remote);
    r.set_remote_offset(i * kMiB);
    r.set_length(kMiB);
    r.set_imm(imm_base + static_cast<uint32_t>(i));
    ops.push_back(r);
  }
  return ops;
}

void ExpectAllSucceeded(const TransferRun& run, size_t count) {
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), count);
  for (const auto& c : run.completions) {
    ASSERT_EQ(c.code(), 0) << "op " << c.op_id() << ": " << c.message();
    ASSERT_EQ(c.wc_status(), "success");
    ASSERT_EQ(c.bytes(), kMiB);
  }
}

class AgentTransferTest : public ::testing::TestWithParam<Param> {};

TEST_P(AgentTransferTest, TwoAgentsMove256MiBAndReadItBack) {
  Pair p = StartPair(GetParam());
  ASSERT_TRUE(p.a && p.b);
  v1::VirtualQpInfo va = CreateVqp(p.a->stub(), GetParam().scheme, kQps);
  v1::VirtualQpInfo vb = CreateVqp(p.b->stub(), GetParam().scheme, kQps);
  // The QPs are spread over both NICs on each side.
  std::map<std::string, int> per_device;
  for (const auto& q : va.qps()) ++per_device[q.device()];
  EXPECT_EQ(per_device.size(), 2u);
  ConnectPair(p.a->stub(), va, p.b->stub(), vb);

  v1::RegionInfo src = Register(p.a->stub(), kTotal, "src");
  v1::RegionInfo back = Register(p.a->stub(), kTotal, "back");
  v1::RegionInfo dst = Register(p.b->stub(), kTotal, "dst", {vb.vqp_id()});
  MappedRegion src_map(src.path(), kTotal), back_map(back.path(), kTotal),
      dst_map(dst.path(), kTotal);
  ASSERT_TRUE(src_map.data() && back_map.data() && dst_map.data());
  FillPattern(src_map.data(), kTotal, 42 + GetParam().scheme);
  const uint64_t want = Checksum(src_map.data(), kTotal);

  NotificationCollector notes(p.b->stub(), vb.vqp_id());
  ASSERT_TRUE(notes.subscribed());
  auto t0 = std::chrono::steady_clock::now();
  TransferRun writes =
      RunTransfers(p.a->stub(), Ops(v1::OP_WRITE_WITH_IMM, va.vqp_id(), src, dst, 0x5000));
  auto t1 = std::chrono::steady_clock::now();
  std::printf("256 MiB of writes in %.3f s\n", std::chrono::duration<double>(t1 - t0).count());
  ExpectAllSucceeded(writes, kTotal / kMiB);
  EXPECT_EQ(writes.window, 1024u);
  EXPECT_EQ(Checksum(dst_map.data(), kTotal), want);

  // Back the other way: A reads B's copy into a second region.
  TransferRun reads = RunTransfers(p.a->stub(), Ops(v1::OP_READ, va.vqp_id(), back, dst, 0));
  ExpectAllSucceeded(reads, kTotal / kMiB);
  std::printf("256 MiB of reads in %.3f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
  EXPECT_EQ(Checksum(back_map.data(), kTotal), want);

  auto got = notes.WaitFor(kTotal / kMiB, 10000);
  ASSERT_EQ(got.size(), kTotal / kMiB);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq(), i);
    EXPECT_EQ(got[i].imm(), 0x5000 + i);
    EXPECT_EQ(got[i].byte_len(), kMiB);
    EXPECT_EQ(got[i].wc_status(), "success");
  }

  // No QP died on the way (failover would have hidden it from the data checks).
  for (auto* agent : {p.a.get(), p.b.get()}) {
    grpc::ClientContext ctx;
    v1::ListVirtualQpsResponse list;
    ASSERT_TRUE(agent->stub().ListVirtualQps(&ctx, {}, &list).ok());
    for (const auto& v : list.vqps()) {
      for (const auto& q : v.qps()) {
        EXPECT_EQ(q.health(), v1::QP_HEALTH_HEALTHY)
            << agent->id() << " QP " << q.index() << " on " << q.device() << ": " << q.death();
      }
    }
  }

  // Metrics, sender side.
  const std::string m = ScrapeMetrics(p.a->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_device_bytes_total", {{"op", "write"}}), double(kTotal));
  EXPECT_EQ(MetricSum(m, "braid_device_bytes_total", {{"op", "read"}}), double(kTotal));
  for (const char* dev : {"soft0", "soft1"}) {  // both NICs carried data
    EXPECT_GT(MetricSum(m, "braid_device_bytes_total", {{"op", "write"}, {"device", dev}}), 0)
        << dev;
    EXPECT_GT(MetricSum(m, "braid_device_fragments_total", {{"op", "read"}, {"device", dev}}), 0)
        << dev;
  }
  EXPECT_EQ(MetricSum(m, "braid_virtual_wr_completions_total",
                      {{"op", "write_with_imm"}, {"status", "success"}}),
            256);
  EXPECT_EQ(
      MetricSum(m, "braid_virtual_wr_completions_total", {{"op", "read"}, {"status", "success"}}),
      256);
  EXPECT_EQ(MetricSum(m, "braid_virtual_wr_completions_total"), 512);  // no error series
  EXPECT_EQ(MetricSum(m, "braid_physical_qps", {{"state", "healthy"}}), kQps + 1);  // + message QP
  EXPECT_EQ(MetricSum(m, "braid_physical_qps", {{"state", "dead"}}), 0);
  EXPECT_EQ(MetricSum(m, "braid_dead_qps"), 0);
  EXPECT_EQ(MetricSum(m, "braid_outstanding_wrs"), 0);
  EXPECT_EQ(MetricSum(m, "braid_pending_virtual_wrs", {{"direction", "send"}}), 0);
  EXPECT_EQ(MetricSum(m, "braid_virtual_wr_latency_seconds_count"), 512);
  EXPECT_EQ(MetricSum(m, "braid_registered_bytes"), double(2 * kTotal));
  // The region directory's room, as statfs says (other tests on this machine change it).
  const double dir_size = MetricSum(m, "braid_region_dir_size_bytes");
  const double dir_free = MetricSum(m, "braid_region_dir_free_bytes");
  EXPECT_GE(dir_size, double(2 * kTotal)) << "the directory holds these regions";
  EXPECT_GT(dir_free, 0);
  EXPECT_LE(dir_free, dir_size - double(2 * kTotal)) << "their pages are taken";
  EXPECT_EQ(MetricSum(m, "braid_virtual_qps"), 1);
  EXPECT_EQ(MetricSum(m, "braid_failovers_total"), 0);
  EXPECT_EQ(MetricSum(m, "braid_device_state", {{"state", "healthy"}}), 2);
  // Receiver side: every message noticed; its receives stay posted.
  const std::string mb = ScrapeMetrics(p.b->metrics_port());
  EXPECT_EQ(MetricSum(mb, "braid_notifications_total"), 256);
  EXPECT_GT(MetricSum(mb, "braid_pending_virtual_wrs", {{"direction", "recv"}}), 0);
  if (!GetParam().soft_verbs) {  // the soft link's own counters (an HCA's live in sysfs)
    EXPECT_GE(MetricSum(m, "braid_link_connections_made_total") +
                  MetricSum(m, "braid_link_connections_accepted_total"),
              2);  // one per pair of NICs that carry QPs
    EXPECT_GE(MetricSum(mb, "braid_link_attaches_accepted_total") +
                  MetricSum(m, "braid_link_attaches_accepted_total"),
              kQps);
    EXPECT_GT(MetricSum(mb, "braid_link_acks_deferred_total"), 0);  // the messages' receives
    for (const char* refused :
         {"braid_link_hellos_refused_total", "braid_link_hellos_unauthenticated_total",
          "braid_link_frames_refused_total"}) {
      EXPECT_EQ(MetricSum(m, refused) + MetricSum(mb, refused), 0) << refused;
    }
    EXPECT_NE(m.find("# TYPE braid_link_frames_joined_total counter"), std::string::npos);
  }

  // promtool's linter accepts the page.
  const std::string path = p.a->region_dir() + "/metrics.txt";
  std::ofstream(path) << m;
  const CommandResult lint = RunCommand("promtool check metrics < " + path);
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "");

  // Clean up through the API: nothing left behind.
  for (auto* agent : {p.a.get(), p.b.get()}) ReleaseEverything(agent->stub());
}

TEST_P(AgentTransferTest, ANicTakenDownMidTransferFailsOverAndEveryByteArrives) {
  Pair p = StartPair(GetParam(), /*fault_injection=*/true);
  ASSERT_TRUE(p.a && p.b);
  v1::VirtualQpInfo va = CreateVqp(p.a->stub(), GetParam().scheme, kQps);
  v1::VirtualQpInfo vb = CreateVqp(p.b->stub(), GetParam().scheme, kQps);
  ConnectPair(p.a->stub(), va, p.b->stub(), vb);
  v1::RegionInfo src = Register(p.a->stub(), kTotal, "src");
  v1::RegionInfo dst = Register(p.b->stub(), kTotal, "dst", {vb.vqp_id()});
  MappedRegion src_map(src.path(), kTotal), dst_map(dst.path(), kTotal);
  ASSERT_TRUE(src_map.data() && dst_map.data());
  FillPattern(src_map.data(), kTotal, 7 + GetParam().scheme);
  const uint64_t want = Checksum(src_map.data(), kTotal);
  // soft1 of agent a goes down while the writes are in flight.
  std::thread fault([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    grpc::ClientContext ctx;
    v1::InjectFaultRequest request;
    request.set_kind(v1::FAULT_KIND_DEVICE_DOWN);
    request.set_device("soft1");
    v1::InjectFaultResponse out;
    const grpc::Status s = p.a->stub().InjectFault(&ctx, request, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
  });
  TransferRun writes =
      RunTransfers(p.a->stub(), Ops(v1::OP_WRITE_WITH_IMM, va.vqp_id(), src, dst, 0x7000));
  fault.join();
  ExpectAllSucceeded(writes, kTotal / kMiB);
  EXPECT_EQ(Checksum(dst_map.data(), kTotal), want);
  // QPs on soft1 died (the agent then recovers them: the fault breaks connections, it does not
  // keep the link down) and their work moved on: failovers.
  const v1::VirtualQpInfo after = GetVqp(*p.a, va.vqp_id());
  uint64_t recovered_on_soft1 = 0;
  for (const auto& q : after.qps()) {
    if (q.device() == "soft1") recovered_on_soft1 += q.recoveries();
  }
  std::printf("%s: %llu QP deaths, %llu recoveries on soft1, %llu failovers\n",
              GetParam().soft_verbs ? "ibverbs over libbraid_verbs" : "soft",
              static_cast<unsigned long long>(after.qps_died()),
              static_cast<unsigned long long>(recovered_on_soft1),
              static_cast<unsigned long long>(after.failovers()));
  EXPECT_GT(after.qps_died(), 0u);
  EXPECT_GT(after.failovers(), 0u);
  for (auto* agent : {p.a.get(), p.b.get()}) ReleaseEverything(agent->stub());
}

std::vector<Param> Params() {
  std::vector<Param> out;
  for (bool soft_verbs : {false, true}) {
    if (soft_verbs && !SoftVerbsAvailable()) continue;
    for (v1::Scheme scheme : {v1::SCHEME_SPRAY, v1::SCHEME_DQPLB})
      out.push_back({scheme, soft_verbs});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Providers, AgentTransferTest, ::testing::ValuesIn(Params()),
                         [](const auto& info) {
                           return std::string(info.param.scheme == v1::SCHEME_SPRAY ? "Spray"
                                                                                    : "Dqplb") +
                                  (info.param.soft_verbs ? "IbverbsOverSoftVerbs" : "Soft");
                         });

}  // namespace
}  // namespace braid::testing
