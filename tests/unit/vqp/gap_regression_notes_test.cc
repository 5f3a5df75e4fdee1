// Regression tests for the seed's open items and the weaknesses found in the original library,
// named for the behaviour each guards (the invariants they check are named in doc/vqp.md).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>

#include "dataplane/soft/soft_device.h"
#include "tests/testutil/null_vqp_bed.h"
#include "tests/testutil/small_vqp_config.h"
#include "tests/testutil/vqp_testbed.h"

namespace braid::vqp {
namespace {

using testing::NullVqpBed;
using testing::VqpTestbed;

constexpr size_t kBytes = 4 << 20;

VirtualQpConfig Config(Scheme scheme, uint32_t qps, bool failover = true) {
  return testing::SmallVqpConfig(scheme, qps, failover);
}

// SEND is not fragmented: one physical WR whatever its length, at most 1 GiB.
TEST(GapRegressionNotesTest, SendIsNotFragmented) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  const uint64_t before = nb.qp(2).sends();
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 3 * 16384, IBV_WR_SEND)).ok());
  EXPECT_EQ(nb.qp(2).sends(), before + 1) << "one WR on the message QP";
  EXPECT_EQ(nb.qp(2).last_send().sg_list->length, 3u * 16384);
  EXPECT_EQ(nb.vqp().PostSend(nb.Write(2, (1ull << 30) + 1, IBV_WR_SEND)).code(),
            common::StatusCode::kInvalidArgument);
}

// Zero-length WRITE_WITH_IMM (a doorbell) and SEND_WITH_IMM work on every shape.
TEST(GapRegressionNotesTest, ZeroLengthWriteWithImmAndSendWithImm) {
  for (auto [scheme, qps] : {std::pair{Scheme::kSpray, 1u}, std::pair{Scheme::kSpray, 4u},
                             std::pair{Scheme::kDqplb, 4u}}) {
    VqpTestbed tb(2, Config(scheme, qps), kBytes);
    tb.Fill(0, 0, kBytes, 1);
    ASSERT_TRUE(tb.status().ok());
    ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = 1}).ok());
    ASSERT_TRUE(tb.b()
                    .vqp
                    ->PostRecv({.wr_id = 2,
                                .local_addr = tb.b().addr(0),
                                .length = 64,
                                .local_keys = tb.b().local_keys})
                    .ok());
    ASSERT_TRUE(
        tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, 0, 0, 0, 1, htonl(7))).ok());
    ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_SEND_WITH_IMM, 0, 0, 0, 2, htonl(8))).ok());
    auto r = tb.Poll(1, 2);
    ASSERT_EQ(r.size(), 2u) << SchemeName(scheme) << qps;
    EXPECT_EQ(r[0].imm_data, htonl(7));
    EXPECT_EQ(r[0].byte_len, 0u);
    EXPECT_EQ(r[1].imm_data, htonl(8));
    EXPECT_EQ(r[1].opcode, IBV_WC_RECV);
    EXPECT_EQ(tb.Poll(0, 2).size(), 2u);
  }
}

// A 100-byte WRITE on `v` (null devices: it completes at once).
bool PostWrite(VirtualQp& v, uint64_t wr_id) {
  const uint32_t keys[] = {1};
  const uint32_t lk = *v.AddLocalKeys(keys);
  const uint32_t rk = *v.AddRemoteKeys(keys);
  VirtualSendWr wr{.wr_id = wr_id,
                   .local_addr = 0x1000,
                   .length = 100,
                   .local_keys = lk,
                   .remote_addr = 0x2000,
                   .remote_keys = rk};
  return v.PostSend(wr).ok();
}

// One poll of `cq` finds exactly one completion: `wr_id`, successful.
void ExpectOneSuccess(VirtualCq& cq, uint64_t wr_id) {
  VirtualWc out[4];
  auto n = cq.Poll(out);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(out[0].wr_id, wr_id);
  EXPECT_EQ(out[0].status, IBV_WC_SUCCESS);
}

// One null device, its PD, a virtual CQ of `entries` for the VQPs under test and one for their
// peer.
class SharedCqBed {
 public:
  struct Parts {
    common::Result<std::unique_ptr<VirtualCq>> cq;
    common::Result<std::unique_ptr<VirtualCq>> peer_cq;
    std::span<verbs::ProtectionDomain* const> pds;
  };
  explicit SharedCqBed(int entries)
      : pd_(d0_.AllocPd()),
        pds_{pd_->get()},
        parts_{VirtualCq::Create(devs_, entries), VirtualCq::Create(devs_, 1 << 14), pds_} {}
  Parts& parts() { return parts_; }

 private:
  testing::NullDevice d0_{0};
  decltype(d0_.AllocPd()) pd_;
  verbs::Device* devs_[1] = {&d0_};
  verbs::ProtectionDomain* pds_[1];
  Parts parts_;
};

// VQPs come and go on a shared virtual CQ; the routes of the others stay valid and a
// destroyed VQP leaves nothing registered.
TEST(GapRegressionNotesTest, VqpsComeAndGoOnASharedCq) {
  SharedCqBed bed(1 << 14);
  auto& [cq, peer_cq, pds] = bed.parts();
  ASSERT_TRUE(cq.ok() && peer_cq.ok());
  auto x = VirtualQp::Create(**cq, pds, Config(Scheme::kSpray, 2));
  auto y = VirtualQp::Create(**cq, pds, Config(Scheme::kSpray, 2));
  auto peer = VirtualQp::Create(**peer_cq, pds, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(x.ok() && y.ok() && peer.ok());
  ASSERT_TRUE((*x)->Connect((*peer)->LocalCard()).ok());
  ASSERT_TRUE((*y)->Connect((*peer)->LocalCard()).ok());
  EXPECT_EQ((*cq)->registered_qps(), 6u);
  ASSERT_TRUE(PostWrite(**y, 9));
  x->reset();  // destroyed while y has work in flight
  EXPECT_EQ((*cq)->registered_qps(), 3u);
  ExpectOneSuccess(**cq, 9);
  y->reset();
  peer->reset();
  EXPECT_EQ((*cq)->registered_qps(), 0u);
  EXPECT_EQ((*cq)->unrouted_completions(), 0u);
}

// The route table follows the QPs down as well as up: an agent that had 1,000 VQPs and destroyed
// them kept a table sized for 9,000 QPs (1.5 MiB) until it exited.
TEST(GapRegressionNotesTest, RouteTableShrinksWhenVqpsGo) {
  SharedCqBed bed(1 << 16);
  auto& [cq, peer_cq, pds] = bed.parts();
  ASSERT_TRUE(cq.ok() && peer_cq.ok());
  const size_t empty = (*cq)->route_table_slots();
  // One connected VQP stays throughout: its routes must survive every rebuild of the table.
  auto y = VirtualQp::Create(**cq, pds, Config(Scheme::kSpray, 2));
  auto peer = VirtualQp::Create(**peer_cq, pds, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(y.ok() && peer.ok());
  ASSERT_TRUE((*y)->Connect((*peer)->LocalCard()).ok());
  std::vector<std::unique_ptr<VirtualQp>> vqps;
  for (int i = 0; i < 100; ++i) {
    auto v = VirtualQp::Create(**cq, pds, Config(Scheme::kSpray, 2));
    ASSERT_TRUE(v.ok()) << v.status().message();
    vqps.push_back(std::move(v).value());
  }
  EXPECT_EQ((*cq)->registered_qps(), 303u);
  const size_t full = (*cq)->route_table_slots();
  EXPECT_GE(full, 606u);
  vqps.clear();
  EXPECT_EQ((*cq)->registered_qps(), 3u);
  EXPECT_LT((*cq)->route_table_slots(), full / 8);
  ASSERT_TRUE(PostWrite(**y, 7));
  ExpectOneSuccess(**cq, 7);
  EXPECT_EQ((*cq)->unrouted_completions(), 0u);
  y->reset();
  peer->reset();
  EXPECT_EQ((*cq)->registered_qps(), 0u);
  EXPECT_EQ((*cq)->route_table_slots(), empty);
}

// A WR is one contiguous range; a gathered transfer is several WRs, completing in order.
TEST(GapRegressionNotesTest, OneRangePerWrSeveralWrsCompleteInOrder) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 4), kBytes);
  tb.Fill(0, 0, kBytes, 1);
  ASSERT_TRUE(tb.status().ok());
  const uint64_t pieces[][2] = {{0, 5000}, {900'000, 70'000}, {2'000'000, 1}};
  uint64_t dst = 0;
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, pieces[i][0], pieces[i][1], dst, i)).ok());
    dst += pieces[i][1];
  }
  auto s = tb.Poll(0, 3);
  ASSERT_EQ(s.size(), 3u);
  dst = 0;
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(s[i].wr_id, i);
    EXPECT_EQ(std::memcmp(tb.data(0) + pieces[i][0], tb.data(1) + dst, pieces[i][1]), 0);
    dst += pieces[i][1];
  }
}

// A zero-length WR still points at an SGE (some drivers dereference sg_list).
TEST(GapRegressionNotesTest, ZeroLengthPostStillPointsAtAnSge) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 1));
  ASSERT_TRUE(nb.status().ok());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 0, IBV_WR_RDMA_WRITE_WITH_IMM)).ok());
  EXPECT_EQ(nb.qp(0).last_send().num_sge, 0);
  EXPECT_NE(nb.qp(0).last_send().sg_list, nullptr);
}

// The receive pools are posted at Connect, on every data QP, before any user receive.
TEST(GapRegressionNotesTest, ReceivePoolPrePostedAtConnect) {
  NullVqpBed nb(2, Config(Scheme::kDqplb, 4));
  ASSERT_TRUE(nb.status().ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(nb.qp(i).posted_recvs(), 16u) << "data QP " << i;
  EXPECT_EQ(nb.qp(4).posted_recvs(), 0u) << "the message QP only takes user receives";
}

// A physical poll error loses nothing: harvested completions come first, the error after,
// and every WR is still reported. Device 1 is drained, so all eight WRs complete on device 0's CQ
// in the poll where device 1's CQ fails; two are taken per call, so six are still harvested and
// waiting when the error is pending.
TEST(GapRegressionNotesTest, PollErrorKeepsHarvestedCompletions) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  ASSERT_TRUE(nb.vqp().DrainDevice(1).ok());
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(nb.vqp().PostSend(nb.Write(i, 100)).ok());
  nb.physical_cq(1).FailNextPoll();
  VirtualWc out[2];
  std::vector<uint64_t> ids;
  int errors = 0;
  for (int r = 0; r < 20; ++r) {
    auto n = nb.cq().Poll(out);
    if (!n.ok()) {
      ++errors;
      EXPECT_EQ(n.status().code(), common::StatusCode::kCqOverflow);
      continue;
    }
    for (int k = 0; k < *n; ++k) ids.push_back(out[k].wr_id);
  }
  EXPECT_EQ(errors, 1);
  ASSERT_EQ(ids.size(), 8u);
  for (uint64_t i = 0; i < 8; ++i) EXPECT_EQ(ids[i], i);
}

// Messages that complete before the receiver asked for them are buffered, not fatal.
TEST(GapRegressionNotesTest, MessageBeforeReceiveIsBuffered) {
  for (Scheme scheme : {Scheme::kSpray, Scheme::kDqplb}) {
    VqpTestbed tb(2, Config(scheme, 4), kBytes);
    tb.Fill(0, 0, kBytes, 1);
    ASSERT_TRUE(tb.status().ok());
    for (uint64_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(tb.a()
                      .vqp
                      ->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, i * 100'000, 50'000,
                                       i * 100'000, i, htonl(i)))
                      .ok());
    }
    ASSERT_EQ(tb.Poll(0, 3).size(), 3u);
    EXPECT_EQ(tb.b().vqp->counters().buffered_messages, 3u);
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = 10 + i}).ok());
    auto r = tb.Poll(1, 3);
    ASSERT_EQ(r.size(), 3u);
    for (uint32_t i = 0; i < 3; ++i) {
      EXPECT_EQ(r[i].wr_id, 10u + i);
      EXPECT_EQ(r[i].imm_data, htonl(i));
      EXPECT_EQ(r[i].byte_len, 50'000u);
    }
  }
}

// On a multi-QP VQP the receiver gets the sender's immediate and the byte count of a
// fragmented message, under both schemes.
TEST(GapRegressionNotesTest, ReceiverGetsImmediateAndByteCount) {
  for (Scheme scheme : {Scheme::kSpray, Scheme::kDqplb}) {
    VqpTestbed tb(2, Config(scheme, 8), kBytes);
    tb.Fill(0, 0, kBytes, 1);
    ASSERT_TRUE(tb.status().ok());
    ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = 1}).ok());
    ASSERT_TRUE(
        tb.a()
            .vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, 0, 1'234'567, 0, 1, htonl(0xFEED)))
            .ok());
    auto r = tb.Poll(1, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].imm_data, htonl(0xFEED)) << SchemeName(scheme);
    EXPECT_EQ(r[0].byte_len, 1'234'567u) << SchemeName(scheme);
    EXPECT_EQ(std::memcmp(tb.data(0), tb.data(1), 1'234'567), 0);
  }
}

// SPRAY notifies are pipelined: message k+1's notify does not wait for k's to complete.
TEST(GapRegressionNotesTest, NotifiesArePipelined) {
  VqpTestbed tb(1, Config(Scheme::kSpray, 4), kBytes);
  tb.Fill(0, 0, kBytes, 1);
  ASSERT_TRUE(tb.status().ok());
  // B acknowledges nothing on QP 0, where notifies go: none of them can complete.
  ASSERT_TRUE(tb.fabric().HoldQp(tb.b().vqp->physical_qp(0), true).ok());
  for (uint64_t i = 0; i < 6; ++i) {
    ASSERT_TRUE(
        tb.a()
            .vqp
            ->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, i * 1000, 1000, i * 1000, i, htonl(i)))
            .ok());
  }
  std::vector<VirtualWc> sa, rb;
  tb.PollBoth(2000, &sa, &rb);
  EXPECT_TRUE(sa.empty());
  EXPECT_GE(tb.a().vqp->counters().notifies_posted, 2u) << "several notifies in flight at once";
  ASSERT_TRUE(tb.fabric().HoldQp(tb.b().vqp->physical_qp(0), false).ok());
  tb.PollBoth(2000, &sa, &rb);
  EXPECT_EQ(sa.size(), 6u);
}

// Send flags the virtual layer does not honour are refused, never silently dropped.
TEST(GapRegressionNotesTest, UnsupportedSendFlagsAreRefused) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  for (unsigned flag :
       {unsigned{IBV_SEND_FENCE}, unsigned{IBV_SEND_INLINE}, unsigned{IBV_SEND_SOLICITED}}) {
    VirtualSendWr wr = nb.Write(1, 100);
    wr.send_flags |= flag;
    const common::Status s = nb.vqp().PostSend(wr);
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << flag;
    EXPECT_NE(s.message().find("not supported"), std::string_view::npos);
  }
  EXPECT_EQ(nb.vqp().pending_sends(), 0u);
}

// A destroyed VQP destroys each of its physical QPs exactly once (nothing leaks).
TEST(GapRegressionNotesTest, DestroyReleasesEveryPhysicalQp) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 4), kBytes);
  tb.Fill(0, 0, kBytes, 1);
  ASSERT_TRUE(tb.status().ok());
  std::vector<std::pair<int, uint32_t>> qps;
  for (int i = 0; i < tb.a().vqp->num_physical_qps(); ++i) {
    qps.push_back({tb.a().vqp->physical_device(i), tb.a().vqp->physical_qp(i).qp_num()});
  }
  tb.a().vqp.reset();
  for (auto [device, qpn] : qps) {
    auto* soft = dynamic_cast<soft::SoftDevice*>(tb.a().devices[static_cast<size_t>(device)].get());
    ASSERT_NE(soft, nullptr);
    EXPECT_EQ(soft->FindQp(qpn), nullptr);
  }
}

// The card carries version, scheme, sizes and per-QP addresses; bad or mismatched cards are
// clear errors, never aborts.
TEST(GapRegressionNotesTest, CardValidationAndMismatch) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  const BusinessCard good = nb.vqp().LocalCard(3);
  ASSERT_TRUE(good.Validate().ok());
  EXPECT_EQ(good.epoch, 3u);
  EXPECT_EQ(good.data_qps.size(), 4u);
  EXPECT_TRUE(good.message_qp.has_value());
  EXPECT_EQ(good.devices.size(), 2u);
  struct Case {
    const char* what;
    void (*mutate)(BusinessCard&);
  };
  const Case cases[] = {
      {"version", [](BusinessCard& c) { c.version = 2; }},
      {"fragment", [](BusinessCard& c) { c.fragment_size = 100; }},
      {"no qps", [](BusinessCard& c) { c.data_qps.clear(); }},
      {"device index", [](BusinessCard& c) { c.data_qps[1].device_index = 9; }},
      {"qpn", [](BusinessCard& c) { c.data_qps[0].qp_num = 1u << 24; }},
      {"psn", [](BusinessCard& c) { c.data_qps[0].psn = 1u << 24; }},
      {"no message qp", [](BusinessCard& c) { c.message_qp.reset(); }},
      {"no devices", [](BusinessCard& c) { c.devices.clear(); }},
      {"no address", [](BusinessCard& c) { c.devices[0].gid = verbs::Gid(); }},
      {"mtu", [](BusinessCard& c) { c.data_qps[0].mtu = 9; }},
      {"mtu zero", [](BusinessCard& c) { c.data_qps[0].mtu = 0; }},
  };
  for (const Case& k : cases) {
    BusinessCard c = good;
    k.mutate(c);
    const common::Status s = c.Validate();
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << k.what;
    EXPECT_FALSE(s.message().empty()) << k.what;
  }
  BusinessCard other = good;
  other.scheme = Scheme::kDqplb;
  EXPECT_EQ(CheckPeerCards(good, other).code(), common::StatusCode::kFailedPrecondition);
  other = good;
  other.data_qps.pop_back();
  EXPECT_NE(CheckPeerCards(good, other).message().find("data QP count"), std::string_view::npos);
  // A VQP refuses to connect to a mismatched peer and stays unconnected.
  NullVqpBed fresh(2, Config(Scheme::kSpray, 4));
  testing::NullDevice d(0);
  auto pd = d.AllocPd();
  verbs::Device* devs[] = {&d};
  verbs::ProtectionDomain* pds[] = {pd->get()};
  auto cq = VirtualCq::Create(devs, 1 << 14);
  auto lone = VirtualQp::Create(**cq, pds, Config(Scheme::kDqplb, 4));
  ASSERT_TRUE(lone.ok());
  EXPECT_EQ((*lone)->Connect(good).code(), common::StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*lone)->connected());
}

// A card is a peer's (or a hostile client's) input: its strings are bounded, and a refusal quotes
// at most 100 characters of them. (A message carrying a whole 8,000-character device name
// overflowed gRPC's metadata limit: the caller saw RESOURCE_EXHAUSTED, not why.)
TEST(GapRegressionNotesTest, ACardsRefusalsQuoteItsStringsAtMostAHundredCharacters) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  const BusinessCard good = nb.vqp().LocalCard(1);
  BusinessCard c = good;
  c.devices[0].gid = verbs::Gid();
  c.devices[0].name = std::string(60, 'n');
  common::Status s = c.Validate();
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'" + c.devices[0].name + "' has neither GID nor LID"),
            std::string_view::npos)
      << s.message();
  for (size_t bytes : {size_t{0}, kMaxDeviceNameBytes + 1, size_t{8000}}) {
    c = good;
    c.devices[1].name = std::string(bytes, 'n');
    s = c.Validate();
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument) << bytes;
    EXPECT_EQ(s.message(), "device 1 of the card has a name of " + std::to_string(bytes) +
                               " bytes; a device name has 1 to 64");
  }
  c = good;
  c.control_endpoint = std::string(5000, 'e');
  s = c.Validate();
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 200u) << s.message();
  c = good;
  c.agent_identity = std::string(kMaxIdentityBytes, 'i');  // as long as an identity may be
  EXPECT_TRUE(c.Validate().ok());
}

// Fragments spread over QPs and interleave devices.
TEST(GapRegressionNotesTest, SchedulerInterleavesDevices) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  std::vector<uint64_t> before;
  for (int i = 0; i < 4; ++i) before.push_back(nb.qp(i).sends());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 8 * 16384)).ok());  // 8 fragments
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(nb.qp(i).sends() - before[i], 2u) << "QP " << i;
    EXPECT_EQ(nb.vqp().physical_device(i), i % 2) << "QPs alternate devices";
  }
}

// Dead QPs come back (the part this layer owns): an operator drains a device, its QPs take no new
// work while the rest carry on; re-admitted, they are used again.
TEST(GapRegressionNotesTest, ADrainedDeviceGetsNoNewWorkUntilReadmitted) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok());
  ASSERT_TRUE(nb.vqp().DrainDevice(1).ok());
  EXPECT_EQ(nb.vqp().health(1), QpHealth::kDraining);
  EXPECT_EQ(nb.vqp().healthy_data_qps(), 2);
  std::vector<uint64_t> before;
  for (int i = 0; i < 4; ++i) before.push_back(nb.qp(i).sends());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 8 * 16384)).ok());
  VirtualWc out[4];
  ASSERT_EQ(*nb.cq().Poll(out), 1);
  EXPECT_EQ(out[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(nb.qp(1).sends(), before[1]) << "drained";
  EXPECT_EQ(nb.qp(3).sends(), before[3]) << "drained";
  EXPECT_EQ(nb.qp(0).sends() + nb.qp(2).sends() - before[0] - before[2], 8u);
  ASSERT_TRUE(nb.vqp().UndrainDevice(1).ok());
  EXPECT_EQ(nb.vqp().healthy_data_qps(), 4);
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(2, 8 * 16384)).ok());
  ASSERT_EQ(*nb.cq().Poll(out), 1);
  EXPECT_GT(nb.qp(1).sends(), before[1]) << "re-admitted";
  EXPECT_EQ(nb.vqp().DrainDevice(7).code(), common::StatusCode::kNotFound);
}

// SENDs and write-with-imm messages never share a receive queue with the pools.
TEST(GapRegressionNotesTest, SendAndWriteWithImmInterleaved) {
  VqpTestbed tb(2, Config(Scheme::kDqplb, 4), kBytes);
  tb.Fill(0, 0, kBytes, 1);
  ASSERT_TRUE(tb.status().ok());
  for (uint64_t i = 0; i < 10; ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(tb.b()
                      .vqp
                      ->PostRecv({.wr_id = i,
                                  .local_addr = tb.b().addr(3'000'000 + i * 1000),
                                  .length = 1000,
                                  .local_keys = tb.b().local_keys})
                      .ok());
      ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_SEND, i * 1000, 1000, 0, i)).ok());
    } else {
      ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = i}).ok());
      ASSERT_TRUE(tb.a()
                      .vqp
                      ->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, i * 1000, 1000, i * 1000, i,
                                       htonl(i)))
                      .ok());
    }
  }
  auto r = tb.Poll(1, 10);
  ASSERT_EQ(r.size(), 10u);
  for (uint64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(r[i].wr_id, i);
    EXPECT_EQ(r[i].status, IBV_WC_SUCCESS);
    EXPECT_EQ(r[i].opcode, i % 2 == 0 ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM);
    const uint8_t* got = tb.data(1) + (i % 2 == 0 ? 3'000'000 + i * 1000 : i * 1000);
    EXPECT_EQ(std::memcmp(tb.data(0) + i * 1000, got, 1000), 0) << i;
  }
}

// A user wr_id that looks exactly like an internal tag is still just a user id.
TEST(GapRegressionNotesTest, UserIdsNeverConfusedWithTags) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  const uint64_t lookalike = WrTag::Encode(WrKind::kFragment, 0);
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(lookalike, 100)).ok());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(0, 100)).ok());
  VirtualWc out[4];
  auto n = nb.cq().Poll(out);
  ASSERT_EQ(*n, 2);
  EXPECT_EQ(out[0].wr_id, lookalike);
  EXPECT_EQ(out[1].wr_id, 0u);
  EXPECT_EQ(nb.vqp().counters().protocol_errors, 0u);
}

// A VQP that could overflow a physical CQ is refused at creation: one that could never fit (even
// on an idle device) is a wrong request naming the parameters to lower; one that does not fit
// what other VQPs left is back-pressure saying how much is free.
TEST(GapRegressionNotesTest, AVqpThatCouldNeverFitItsCompletionQueueIsAnInvalidRequest) {
  testing::NullDevice d(0);
  auto pd = d.AllocPd();
  verbs::Device* devs[] = {&d};
  verbs::ProtectionDomain* pds[] = {pd->get()};
  auto cq = VirtualCq::Create(devs, 64);
  ASSERT_TRUE(cq.ok());
  auto v = VirtualQp::Create(**cq, pds, Config(Scheme::kSpray, 4));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(
      v.status().message().find("more than its completion queue can hold (64): lower num_qps, "
                                "qp_capacity or max_virtual_wrs"),
      std::string_view::npos)
      << v.status().ToString();
  EXPECT_EQ((*cq)->reserved(0), 0u) << "a refused VQP reserves nothing";
}

// One null device and its PD, and a 2-QP SPRAY config whose VQP reserves 112 completion entries
// (2 data QPs of 16 + 16 and the message QP of 16 + 32).
struct CqAdmissionBed {
  testing::NullDevice d{0};
  std::unique_ptr<verbs::ProtectionDomain> pd = std::move(d.AllocPd()).value();
  verbs::Device* devs[1] = {&d};
  verbs::ProtectionDomain* pds[1] = {pd.get()};
  VirtualQpConfig config = [] {
    VirtualQpConfig c = Config(Scheme::kSpray, 2);
    c.qp_capacity = 16;
    c.max_virtual_wrs = 32;
    return c;
  }();
};

TEST(GapRegressionNotesTest, AVqpThatDoesNotFitWhatIsLeftIsBackPressureSayingWhatIsFree) {
  CqAdmissionBed bed;
  auto& [d, pd, devs, pds, config] = bed;
  auto cq = VirtualCq::Create(devs, 200);
  ASSERT_TRUE(cq.ok());
  auto first = VirtualQp::Create(**cq, pds, config);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ((*cq)->reserved(0), 112u);
  auto second = VirtualQp::Create(**cq, pds, config);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), common::StatusCode::kNoResource);
  EXPECT_NE(second.status().message().find("has 88 of its 200 completion entries free"),
            std::string_view::npos)
      << second.status().ToString();
  EXPECT_EQ((*cq)->reserved(0), 112u) << "the refused VQP reserved nothing";
  first->reset();
  EXPECT_TRUE(VirtualQp::Create(**cq, pds, config).ok()) << "room comes back with the first";
}

// Admission is bounded by the limit a physical CQ may grow to, not by its first size: the CQ is
// resized as VQPs reserve room, refuses past its limit saying what is free, and shrinks back to
// its first size as the VQPs go.
TEST(GapRegressionNotesTest, ACompletionQueueGrowsToItsLimitAsVqpsReserveAndShrinksBack) {
  CqAdmissionBed bed;
  auto& [d, pd, devs, pds, config] = bed;
  auto cq = VirtualCq::Create(devs, 200, 1000);
  ASSERT_TRUE(cq.ok());
  EXPECT_EQ((*cq)->capacity(0), 200u);
  EXPECT_EQ((*cq)->limit(0), 1000u);
  std::vector<std::unique_ptr<VirtualQp>> vqps;
  for (int i = 0; i < 8; ++i) {
    auto v = VirtualQp::Create(**cq, pds, config);
    ASSERT_TRUE(v.ok()) << "VQP " << i << ": " << v.status().ToString();
    vqps.push_back(std::move(v).value());
    EXPECT_GE((*cq)->capacity(0), (*cq)->reserved(0)) << "reserved more than the CQ holds";
  }
  EXPECT_EQ((*cq)->reserved(0), 896u);
  EXPECT_EQ((*cq)->capacity(0), 1000u) << "grew 200, 400, 800, then to the limit";
  auto refused = VirtualQp::Create(**cq, pds, config);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), common::StatusCode::kNoResource);
  EXPECT_NE(refused.status().message().find("has 104 of its 1000 completion entries free"),
            std::string_view::npos)
      << refused.status().ToString();
  vqps.clear();
  EXPECT_EQ((*cq)->reserved(0), 0u);
  EXPECT_EQ((*cq)->capacity(0), 200u) << "did not shrink back to its first size";
}

// The fatal paths of the original (unknown QP in a completion, wr_id mismatch) are counted,
// never fatal: a completion for a QP nobody registered is dropped and counted.
TEST(GapRegressionNotesTest, UnknownCompletionIsCountedNotFatal) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  ibv_wc stray{};
  stray.wr_id = WrTag::Encode(WrKind::kFragment, 3);
  stray.status = IBV_WC_WR_FLUSH_ERR;
  stray.qp_num = 0xABCDE;
  nb.physical_cq(0).Push(stray);
  VirtualWc out[2];
  auto n = nb.cq().Poll(out);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(nb.cq().unrouted_completions(), 1u);
}

}  // namespace
}  // namespace braid::vqp
