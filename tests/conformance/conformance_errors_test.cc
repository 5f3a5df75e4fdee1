// Provider conformance: error completions, RNR, transport failure, flush, CQ overflow, post rules.
#include <arpa/inet.h>

#include <chrono>
#include <cstring>

#include "tests/conformance/conformance_fixture.h"

namespace braid::testing {
namespace {

// Expects one error completion `status` for `wr_id`, then the QP in ERR.
void ExpectFailed(const std::vector<ibv_wc>& wcs, uint64_t wr_id, ibv_wc_status status) {
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, wr_id);
  EXPECT_EQ(wcs[0].status, status) << ibv_wc_status_str(wcs[0].status);
}

class ConformanceErrorTest : public ConformanceTest {
 protected:
  // Posts a WRITE of `len` bytes from A to `remote_addr`/`rkey` and returns A's completions.
  std::vector<ibv_wc> WriteExpectingError(QpPair& p, uint64_t remote_addr, uint32_t rkey,
                                          uint32_t len, ibv_wr_opcode op = IBV_WR_RDMA_WRITE) {
    ibv_sge sge = p.ea->Sge(0, len);
    EXPECT_TRUE(PostSend(*p.a, op, &sge, 1, remote_addr, rkey, 99).ok());
    auto wcs = Poll(*p.ea->send_cq, 1);
    for (const ibv_wc& wc : wcs) {
      if (wc.status != IBV_WC_SUCCESS) ExpectUndefinedFieldsPoisoned(wc);
    }
    return wcs;
  }
  void ExpectQpDead(QpPair& p) {
    EXPECT_EQ(p.a->state(), verbs::QpState::kError);
    // Later work on a dead QP is flushed, never executed.
    ibv_sge sge = p.ea->Sge(0, 8);
    ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 1234));
    auto wcs = Poll(*p.ea->send_cq, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].wr_id, 1234u);
    EXPECT_EQ(wcs[0].status, IBV_WC_WR_FLUSH_ERR);
    ExpectUndefinedFieldsPoisoned(wcs[0]);
  }
};

TEST_P(ConformanceErrorTest, BadRkeyIsRemoteAccessError) {
  QpPair& p = Connect(0, 1);
  // An lkey is never a valid rkey on the soft provider; any unknown key works on hardware.
  const uint32_t bad = p.eb->mr->rkey() ^ 0x00ABC000;
  ExpectFailed(WriteExpectingError(p, p.eb->addr(0), bad, 64), 99, IBV_WC_REM_ACCESS_ERR);
  ExpectQpDead(p);
}

TEST_P(ConformanceErrorTest, OutOfBoundsIsRemoteAccessError) {
  QpPair& p = Connect(0, 1);
  ExpectFailed(WriteExpectingError(p, p.eb->addr(kBufferBytes - 32), p.eb->mr->rkey(), 64), 99,
               IBV_WC_REM_ACCESS_ERR);
  ExpectQpDead(p);
}

TEST_P(ConformanceErrorTest, MissingRemoteWriteAccessIsRemoteAccessError) {
  QpPair& p = Connect(0, 1);
  std::vector<uint8_t> private_buf(4096);
  auto mr = p.eb->pd->RegisterMemory(private_buf.data(), private_buf.size(),
                                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
  ASSERT_TRUE(mr.ok());
  ExpectFailed(
      WriteExpectingError(p, reinterpret_cast<uint64_t>(private_buf.data()), (*mr)->rkey(), 64), 99,
      IBV_WC_REM_ACCESS_ERR);
  for (uint8_t b : private_buf) ASSERT_EQ(b, 0) << "nothing may be written";
  ExpectQpDead(p);
  pairs_.clear();  // QPs before the MR they might touch
}

TEST_P(ConformanceErrorTest, MissingRemoteReadAccessIsRemoteAccessError) {
  QpPair& p = Connect(0, 1);
  std::vector<uint8_t> private_buf(4096);
  auto mr = p.eb->pd->RegisterMemory(private_buf.data(), private_buf.size(),
                                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ASSERT_TRUE(mr.ok());
  ExpectFailed(WriteExpectingError(p, reinterpret_cast<uint64_t>(private_buf.data()), (*mr)->rkey(),
                                   64, IBV_WR_RDMA_READ),
               99, IBV_WC_REM_ACCESS_ERR);
  ExpectQpDead(p);
  pairs_.clear();
}

// Memory registered in another protection domain of the same device is out of reach of this QP,
// whatever access it grants: what isolates one owner's memory from another's VQPs.
TEST_P(ConformanceErrorTest, AnRkeyOfAnotherProtectionDomainIsRemoteAccessError) {
  QpPair& p = Connect(0, 1);
  auto other_pd = p.eb->device->AllocPd();
  ASSERT_TRUE(other_pd.ok()) << other_pd.status().ToString();
  std::vector<uint8_t> foreign(4096);
  auto mr = (*other_pd)->RegisterMemory(foreign.data(), foreign.size(), kAllAccess);
  ASSERT_TRUE(mr.ok());
  ExpectFailed(
      WriteExpectingError(p, reinterpret_cast<uint64_t>(foreign.data()), (*mr)->rkey(), 64), 99,
      IBV_WC_REM_ACCESS_ERR);
  for (uint8_t b : foreign) ASSERT_EQ(b, 0) << "nothing may be written";
  ExpectQpDead(p);
  pairs_.clear();  // QPs before the MR and PD
  mr->reset();
}

// Revoking a peer's access is deregistering the memory region it targets: the peer's next access
// with the old rkey is a remote access error, and nothing of it lands.
TEST_P(ConformanceErrorTest, ADeregisteredRegionsRkeyIsRemoteAccessErrorAtOnce) {
  QpPair& p = Connect(0, 1);
  uint8_t* granted = p.eb->data() + 8192;  // a second registration of part of B's buffer
  auto mr = p.eb->pd->RegisterMemory(granted, 4096, kAllAccess);
  ASSERT_TRUE(mr.ok());
  const uint32_t rkey = (*mr)->rkey();
  const uint64_t addr = reinterpret_cast<uint64_t>(granted);
  for (int i = 0; i < 64; ++i) p.ea->data()[i] = static_cast<uint8_t>(i + 1);
  auto ok = WriteExpectingError(p, addr, rkey, 64);
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(granted[63], 64);
  mr->reset();  // revoked
  std::fill(granted, granted + 4096, 0);
  ExpectFailed(WriteExpectingError(p, addr, rkey, 64), 99, IBV_WC_REM_ACCESS_ERR);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(granted[i], 0) << "written after the revocation";
  ExpectQpDead(p);
}

TEST_P(ConformanceErrorTest, BadLkeyIsLocalProtectionError) {
  QpPair& p = Connect(0, 1);
  ibv_sge sge = p.ea->Sge(0, 64);
  sge.lkey ^= 0x00ABC000;
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 7));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ExpectFailed(wcs, 7, IBV_WC_LOC_PROT_ERR);
  if (!wcs.empty()) ExpectUndefinedFieldsPoisoned(wcs[0]);
  ExpectQpDead(p);
}

TEST_P(ConformanceErrorTest, ReadIntoRegionWithoutLocalWriteIsLocalProtectionError) {
  QpPair& p = Connect(0, 1);
  std::vector<uint8_t> ro(4096);
  auto mr = p.ea->pd->RegisterMemory(ro.data(), ro.size(), 0);
  ASSERT_TRUE(mr.ok());
  ibv_sge sge{reinterpret_cast<uint64_t>(ro.data()), 64, (*mr)->lkey()};
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_READ, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 8));
  ExpectFailed(Poll(*p.ea->send_cq, 1), 8, IBV_WC_LOC_PROT_ERR);
  pairs_.clear();
}

TEST_P(ConformanceErrorTest, ReceiveTooSmallFailsBothSides) {
  QpPair& p = Connect(0, 1);
  ibv_sge r = p.eb->Sge(0, 16);
  ASSERT_OK(PostRecv(*p.b, &r, 1, 5));
  ibv_sge s = p.ea->Sge(0, 64);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s, 1, 0, 0, 6));
  auto recv = Poll(*p.eb->recv_cq, 1);
  ExpectFailed(recv, 5, IBV_WC_LOC_LEN_ERR);
  ExpectFailed(Poll(*p.ea->send_cq, 1), 6, IBV_WC_REM_INV_REQ_ERR);
}

TEST_P(ConformanceErrorTest, RnrWaitsForLateReceiveWhenRetryingForever) {
  QpOptions o;
  o.rnr_retry = 7;  // forever
  QpPair& p = Connect(0, 1, o);
  for (int i = 0; i < 64; ++i) p.ea->data()[i] = static_cast<uint8_t>(i * 3);
  ibv_sge s = p.ea->Sge(0, 64);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s, 1, 0, 0, 1));
  // Many RNR back-offs pass (virtual time on the sim link); the send neither completes nor fails.
  EXPECT_TRUE(Drain(*p.ea->send_cq, 3000).empty());
  ibv_sge r = p.eb->Sge(0, 64);
  ASSERT_OK(PostRecv(*p.b, &r, 1, 2));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  auto recv = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(recv.size(), 1u);
  EXPECT_EQ(recv[0].byte_len, 64u);
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data(), 64), 0);
}

TEST_P(ConformanceErrorTest, RnrRetryExhaustedFails) {
  QpOptions o;
  o.rnr_retry = 2;
  QpPair& p = Connect(0, 1, o);
  ibv_sge s = p.ea->Sge(0, 64);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s, 1, 0, 0, 3));
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s, 1, 0, 0, 4));
  auto wcs = Poll(*p.ea->send_cq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 3u);
  EXPECT_EQ(wcs[0].status, IBV_WC_RNR_RETRY_EXC_ERR);
  EXPECT_EQ(wcs[1].wr_id, 4u);
  EXPECT_EQ(wcs[1].status, IBV_WC_WR_FLUSH_ERR);
  for (const ibv_wc& wc : wcs) ExpectUndefinedFieldsPoisoned(wc);
  ExpectQpDead(p);
}

// Transport failure: the oldest outstanding WR fails with RETRY_EXC_ERR after
// timeout × (retry_cnt + 1); everything else, and everything posted later, is flushed.
TEST_P(ConformanceErrorTest, BrokenLinkRetryExceededThenFlush) {
  REQUIRE_LINK_CONTROL();
  QpOptions o;
  o.timeout = 10;  // 4.19 ms
  o.retry_cnt = 3;
  QpPair& p = Connect(0, 1, o);
  ASSERT_OK(link->Break(*p.a));
  const uint64_t start = link->NowNs();
  for (uint64_t i = 0; i < 5; ++i) {
    ibv_sge s = p.ea->Sge(i * 64, 64);
    ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &s, 1, p.eb->addr(i * 64), p.eb->mr->rkey(), i));
  }
  auto wcs = Poll(*p.ea->send_cq, 5);
  ASSERT_EQ(wcs.size(), 5u);
  EXPECT_EQ(wcs[0].wr_id, 0u);
  EXPECT_EQ(wcs[0].status, IBV_WC_RETRY_EXC_ERR);
  for (size_t i = 1; i < 5; ++i) {
    EXPECT_EQ(wcs[i].wr_id, i);
    EXPECT_EQ(wcs[i].status, IBV_WC_WR_FLUSH_ERR);
  }
  for (const ibv_wc& wc : wcs) ExpectUndefinedFieldsPoisoned(wc);
  const uint64_t elapsed = link->NowNs() - start;
  const uint64_t expected = 4 * verbs::AckTimeoutNs(o.timeout);
  EXPECT_GE(elapsed, expected);
  // Exact on a virtual clock; on a wall-clock link allow for scheduling.
  const uint64_t slack = link->virtual_time() ? verbs::AckTimeoutNs(o.timeout) : 200'000'000;
  EXPECT_LT(elapsed, expected + slack);
  // A repaired link does not revive a QP in ERR.
  ASSERT_OK(link->Repair(*p.a));
  ExpectQpDead(p);
  EXPECT_TRUE(Drain(*p.ea->send_cq, 200).empty()) << "no success after ERR";
}

TEST_P(ConformanceErrorTest, ToErrorFlushesSendAndReceiveQueues) {
  QpPair& p = Connect(0, 1);
  ibv_sge r = p.eb->Sge(0, 64);
  ASSERT_OK(PostRecv(*p.b, &r, 1, 1));
  ASSERT_OK(PostRecv(*p.b, &r, 1, 2));
  ASSERT_OK(p.b->ToError());
  auto recv = Poll(*p.eb->recv_cq, 2);
  ASSERT_EQ(recv.size(), 2u);
  EXPECT_EQ(recv[0].wr_id, 1u);
  EXPECT_EQ(recv[1].wr_id, 2u);
  for (const ibv_wc& wc : recv) {
    EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
    ExpectUndefinedFieldsPoisoned(wc);
  }
  ASSERT_OK(PostRecv(*p.b, &r, 1, 3));  // posted to a QP in ERR: flushed at once
  recv = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(recv.size(), 1u);
  EXPECT_EQ(recv[0].status, IBV_WC_WR_FLUSH_ERR);
}

// A QP of endpoint 0 whose send completions go to `cq` alone, connected to one of endpoint 1.
struct OwnCqQp {
  std::unique_ptr<verbs::Qp> qp, peer;
};

// A 4-entry send CQ (or the provider's smallest above) and a connected QP completing into it;
// the QP goes first (members are destroyed in reverse order).
struct SmallCq {
  std::unique_ptr<verbs::Cq> cq;
  OwnCqQp q;
};

class ConformanceCqTest : public ConformanceErrorTest {
 protected:
  SmallCq SmallCqWithQp() {
    SmallCq out;
    auto cq = ep(0).device->CreateCq(4);
    EXPECT_TRUE(cq.ok()) << cq.status().ToString();
    if (!cq.ok()) return out;
    out.cq = std::move(cq).value();
    out.q = ConnectWithSendCq(*out.cq);
    return out;
  }
  OwnCqQp ConnectWithSendCq(verbs::Cq& cq) {
    Endpoint& e = ep(0);
    OwnCqQp out;
    auto qp = e.pd->CreateQp({&cq, e.recv_cq.get(), {}, false});
    auto peer = ep(1).pd->CreateQp({ep(1).send_cq.get(), ep(1).recv_cq.get(), {}, false});
    EXPECT_TRUE(qp.ok() && peer.ok());
    if (!qp.ok() || !peer.ok()) return out;
    out.qp = std::move(qp).value();
    out.peer = std::move(peer).value();
    EXPECT_OK(out.qp->ToInit({}));
    EXPECT_OK(out.peer->ToInit({}));
    verbs::QpRtrParams rtr;
    rtr.remote = {ep(1).device->info().gid, ep(1).device->info().lid, out.peer->qp_num(), 0};
    rtr.path_mtu = e.device->info().active_mtu;
    EXPECT_OK(out.qp->ToRtr(rtr));
    rtr.remote = {e.device->info().gid, e.device->info().lid, out.qp->qp_num(), 0};
    EXPECT_OK(out.peer->ToRtr(rtr));
    EXPECT_OK(out.qp->ToRts({}));
    EXPECT_OK(out.peer->ToRts({}));
    return out;
  }
  // Posts `count` signalled 8-byte WRITEs with wr_ids first, first + 1, …
  void Writes(verbs::Qp& qp, int first, int count) {
    for (int i = first; i < first + count; ++i) {
      ibv_sge s = ep(0).Sge(0, 8);
      ASSERT_OK(PostSend(qp, IBV_WR_RDMA_WRITE, &s, 1, ep(1).addr(0), ep(1).mr->rkey(),
                         static_cast<uint64_t>(i)));
      ProgressRounds(20);
    }
  }
  // Lets every ACK come back without polling the CQ: 2000 rounds on the virtual clock, and on a
  // wall-clock link at least 500 ms as well.
  void SettleWithoutPolling() {
    const bool virtual_clock = harness_->link() != nullptr && harness_->link()->virtual_time();
    const auto start = std::chrono::steady_clock::now();
    do {
      ProgressRounds(2000);
    } while (!virtual_clock &&
             std::chrono::steady_clock::now() - start < std::chrono::milliseconds(500));
  }
  // Polls `cq` until it is empty or fails; the completions, and the error if one came.
  std::vector<ibv_wc> PollAll(verbs::Cq& cq, common::Status& error) {
    std::vector<ibv_wc> out;
    ibv_wc wc[64];
    for (int i = 0; i < 1000; ++i) {
      auto n = cq.Poll(wc);
      if (!n.ok()) {
        error = n.status();
        break;
      }
      if (*n == 0) break;
      out.insert(out.end(), wc, wc + *n);
    }
    return out;
  }
};

TEST_P(ConformanceCqTest, CqOverflowIsReportedNotLost) {
  SmallCq s = SmallCqWithQp();
  ASSERT_TRUE(s.q.qp);
  verbs::Cq& cq = *s.cq;
  const int capacity = cq.capacity();
  OwnCqQp& q = s.q;
  Writes(*q.qp, 0, capacity + 4);
  SettleWithoutPolling();
  common::Status error;
  EXPECT_EQ(PollAll(cq, error).size(), static_cast<size_t>(capacity));
  EXPECT_EQ(error.code(), common::StatusCode::kCqOverflow) << error.ToString();
}

// As ibv_resize_cq: a full CQ grows without losing or reordering what it holds, holds the new
// size without overflowing, and refuses to shrink below what it holds (staying as it was).
TEST_P(ConformanceCqTest, AResizedCqKeepsItsCompletionsInOrderAndHoldsItsNewSize) {
  SmallCq s = SmallCqWithQp();
  ASSERT_TRUE(s.q.qp);
  verbs::Cq& cq = *s.cq;
  const int capacity = cq.capacity();
  OwnCqQp& q = s.q;
  Writes(*q.qp, 0, capacity);
  SettleWithoutPolling();  // the CQ is now full
  EXPECT_FALSE(cq.Resize(capacity - 1).ok()) << "shrunk below the completions it holds";
  EXPECT_EQ(cq.capacity(), capacity);
  ASSERT_OK(cq.Resize(2 * capacity + 8));
  ASSERT_GE(cq.capacity(), 2 * capacity + 8);
  Writes(*q.qp, capacity, capacity + 8);
  SettleWithoutPolling();
  common::Status error;
  const std::vector<ibv_wc> wcs = PollAll(cq, error);
  EXPECT_OK(error);
  ASSERT_EQ(wcs.size(), static_cast<size_t>(2 * capacity + 8));
  for (size_t i = 0; i < wcs.size(); ++i) {
    EXPECT_EQ(wcs[i].wr_id, i);
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wcs[i].status);
  }
}

TEST_P(ConformanceErrorTest, PostSendOutsideRtsIsRejected) {
  auto qp = CreateQp(0);
  ibv_sge s = ep(0).Sge(0, 8);
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.sg_list = &s;
  wr.num_sge = 1;
  ibv_send_wr* bad = nullptr;
  const common::Status st = qp->PostSend(&wr, &bad);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(bad, &wr);
  ibv_recv_wr rwr{};
  ibv_recv_wr* rbad = nullptr;
  EXPECT_FALSE(qp->PostRecv(&rwr, &rbad).ok()) << "no receive in RESET";
  EXPECT_EQ(rbad, &rwr);
}

TEST_P(ConformanceErrorTest, FullSendQueueIsBackPressureAndNamesTheFirstUnpostedWr) {
  REQUIRE_LINK_CONTROL();
  QpOptions o;
  o.caps.max_send_wr = 4;
  QpPair& p = Connect(0, 1, o);
  ASSERT_OK(link->Hold(*p.a, true));
  ibv_sge s = p.ea->Sge(0, 8);
  ibv_send_wr wr[6]{};
  for (int i = 0; i < 6; ++i) {
    wr[i].wr_id = static_cast<uint64_t>(i);
    wr[i].opcode = IBV_WR_RDMA_WRITE;
    wr[i].sg_list = &s;
    wr[i].num_sge = 1;
    wr[i].send_flags = IBV_SEND_SIGNALED;
    wr[i].wr.rdma.remote_addr = p.eb->addr(0);
    wr[i].wr.rdma.rkey = p.eb->mr->rkey();
    wr[i].next = i < 5 ? &wr[i + 1] : nullptr;
  }
  ibv_send_wr* bad = nullptr;
  const common::Status st = p.a->PostSend(wr, &bad);
  EXPECT_EQ(st.code(), common::StatusCode::kNoResource);
  EXPECT_TRUE(st.message().empty()) << "back-pressure carries no message";
  EXPECT_EQ(bad, &wr[4]);
  ASSERT_OK(link->Hold(*p.a, false));
  auto wcs = Poll(*p.ea->send_cq, 4);
  ASSERT_EQ(wcs.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(wcs[i].wr_id, i);
}

INSTANTIATE_TEST_SUITE_P(Providers, ConformanceCqTest, ::testing::ValuesIn(AllHarnesses()),
                         HarnessName);
INSTANTIATE_TEST_SUITE_P(Providers, ConformanceErrorTest, ::testing::ValuesIn(AllHarnesses()),
                         HarnessName);

}  // namespace
}  // namespace braid::testing
