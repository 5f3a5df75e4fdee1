// Provider conformance: operations, completion fields, ordering and placement.
#include <arpa/inet.h>
#include <poll.h>

#include <chrono>
#include <cstring>
#include <map>
#include <numeric>
#include <random>

#include "tests/conformance/conformance_fixture.h"

namespace braid::testing {
namespace {

// Whether `at` holds the n bytes of `want`, each byte of `at` read once: fit for memory another
// process may still be writing. memcmp is not: having found a differing block, it may read the
// differing byte again to compute its result, and returns 0 if the writer got there in between,
// while later bytes are still unwritten.
bool HoldsBytes(const volatile uint8_t* at, const uint8_t* want, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (at[i] != want[i]) return false;
  }
  return true;
}

void Fill(uint8_t* p, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

TEST_P(ConformanceTest, RdmaWritePlacesBytesAndCompletes) {
  QpPair& p = Connect(0, 1);
  Fill(p.ea->data(), 5000, 1);
  ibv_sge sge = p.ea->Sge(0, 5000);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(4096), p.eb->mr->rkey(), 77));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(wcs[0].wr_id, 77u);
  EXPECT_EQ(wcs[0].opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(wcs[0].qp_num, p.a->qp_num());
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data() + 4096, 5000), 0);
  EXPECT_TRUE(Drain(*p.eb->recv_cq, 50).empty()) << "a plain write consumes no receive";
}

TEST_P(ConformanceTest, RdmaWriteWithImmDeliversImmAndLength) {
  QpPair& p = Connect(0, 1);
  ibv_sge rsge = p.eb->Sge(0, 0);
  ASSERT_OK(PostRecv(*p.b, &rsge, 0, 500));
  Fill(p.ea->data(), 3000, 2);
  ibv_sge sge = p.ea->Sge(0, 3000);
  const uint32_t imm = htonl(0x12345678);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE_WITH_IMM, &sge, 1, p.eb->addr(100),
                     p.eb->mr->rkey(), 9, IBV_SEND_SIGNALED, imm));
  auto r = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(r[0].wr_id, 500u);
  EXPECT_EQ(r[0].opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_EQ(r[0].byte_len, 3000u);
  EXPECT_EQ(r[0].imm_data, imm);
  EXPECT_TRUE(r[0].wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(r[0].qp_num, p.b->qp_num());
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data() + 100, 3000), 0);
  auto s = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(s[0].opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(s[0].wr_id, 9u);
}

TEST_P(ConformanceTest, ZeroLengthWriteWithImm) {
  QpPair& p = Connect(0, 1);
  ASSERT_OK(PostRecv(*p.b, nullptr, 0, 1));
  const uint32_t imm = htonl(42);
  // No SGE and not even a valid rkey: a zero-length write touches no memory.
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE_WITH_IMM, nullptr, 0, 0, 0, 2, IBV_SEND_SIGNALED,
                     imm));
  auto r = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(r[0].byte_len, 0u);
  EXPECT_EQ(r[0].imm_data, imm);
  EXPECT_EQ(r[0].opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  auto s = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, IBV_WC_SUCCESS);
}

TEST_P(ConformanceTest, RdmaReadFetchesRemoteBytes) {
  QpPair& p = Connect(0, 1);
  Fill(p.eb->data() + 8192, 70000, 3);
  ibv_sge sge = p.ea->Sge(1000, 70000);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_READ, &sge, 1, p.eb->addr(8192), p.eb->mr->rkey(), 5));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(wcs[0].opcode, IBV_WC_RDMA_READ);
  EXPECT_EQ(wcs[0].byte_len, 70000u);
  EXPECT_EQ(std::memcmp(p.ea->data() + 1000, p.eb->data() + 8192, 70000), 0);
}

TEST_P(ConformanceTest, SendScattersIntoReceiveSges) {
  QpPair& p = Connect(0, 1);
  ibv_sge rsge[3] = {p.eb->Sge(0, 100), p.eb->Sge(5000, 100), p.eb->Sge(9000, 1000)};
  ASSERT_OK(PostRecv(*p.b, rsge, 3, 31));
  Fill(p.ea->data(), 700, 4);
  ibv_sge ssge[2] = {p.ea->Sge(0, 300), p.ea->Sge(300, 400)};
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, ssge, 2, 0, 0, 32));
  auto r = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(r[0].opcode, IBV_WC_RECV);
  EXPECT_EQ(r[0].byte_len, 700u);
  EXPECT_EQ(r[0].wr_id, 31u);
  EXPECT_FALSE(r[0].wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data(), 100), 0);
  EXPECT_EQ(std::memcmp(p.ea->data() + 100, p.eb->data() + 5000, 100), 0);
  EXPECT_EQ(std::memcmp(p.ea->data() + 200, p.eb->data() + 9000, 500), 0);
  auto s = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(s[0].opcode, IBV_WC_SEND);
  EXPECT_EQ(s[0].wr_id, 32u);
}

TEST_P(ConformanceTest, SendWithImm) {
  QpPair& p = Connect(0, 1);
  ibv_sge rsge = p.eb->Sge(0, 4096);
  ASSERT_OK(PostRecv(*p.b, &rsge, 1, 1));
  Fill(p.ea->data(), 64, 5);
  ibv_sge sge = p.ea->Sge(0, 64);
  const uint32_t imm = htonl(0xCAFE);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND_WITH_IMM, &sge, 1, 0, 0, 2, IBV_SEND_SIGNALED, imm));
  auto r = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(r[0].opcode, IBV_WC_RECV);
  EXPECT_TRUE(r[0].wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(r[0].imm_data, imm);
  EXPECT_EQ(r[0].byte_len, 64u);
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data(), 64), 0);
  EXPECT_EQ(Poll(*p.ea->send_cq, 1).size(), 1u);
}

TEST_P(ConformanceTest, FetchAddAndCompareSwap) {
  QpPair& p = Connect(0, 1);
  uint64_t* remote = reinterpret_cast<uint64_t*>(p.eb->data() + 64);
  uint64_t* local = reinterpret_cast<uint64_t*>(p.ea->data() + 128);
  *remote = 100;
  ibv_sge sge = p.ea->Sge(128, 8);
  ASSERT_OK(PostAtomic(*p.a, IBV_WR_ATOMIC_FETCH_AND_ADD, &sge, p.eb->addr(64),
                       p.eb->mr->rkey(), 5, 0, 1));
  auto w = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(w[0].opcode, IBV_WC_FETCH_ADD);
  EXPECT_EQ(w[0].byte_len, 8u);
  EXPECT_EQ(*local, 100u);
  EXPECT_EQ(*remote, 105u);

  ASSERT_OK(PostAtomic(*p.a, IBV_WR_ATOMIC_CMP_AND_SWP, &sge, p.eb->addr(64), p.eb->mr->rkey(),
                       105, 7, 2));
  w = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].opcode, IBV_WC_COMP_SWAP);
  EXPECT_EQ(*local, 105u);
  EXPECT_EQ(*remote, 7u);

  ASSERT_OK(PostAtomic(*p.a, IBV_WR_ATOMIC_CMP_AND_SWP, &sge, p.eb->addr(64), p.eb->mr->rkey(),
                       999, 1, 3));  // compare fails: no swap
  w = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(*local, 7u);
  EXPECT_EQ(*remote, 7u);
}

TEST_P(ConformanceTest, InlineSendCopiesAtPostTime) {
  QpPair& p = Connect(0, 1);
  ibv_sge rsge = p.eb->Sge(0, 256);
  ASSERT_OK(PostRecv(*p.b, &rsge, 1, 1));
  uint8_t stack[128];
  Fill(stack, sizeof(stack), 6);
  uint8_t expected[128];
  std::memcpy(expected, stack, sizeof(stack));
  // Inline data comes from unregistered memory: the lkey is ignored.
  ibv_sge sge{reinterpret_cast<uint64_t>(stack), sizeof(stack), 0};
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &sge, 1, 0, 0, 2, IBV_SEND_SIGNALED | IBV_SEND_INLINE));
  std::memset(stack, 0, sizeof(stack));  // the buffer may be reused as soon as post returns
  auto r = Poll(*p.eb->recv_cq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(r[0].byte_len, 128u);
  EXPECT_EQ(std::memcmp(p.eb->data(), expected, 128), 0);

  // Inline RDMA WRITE as well.
  Fill(stack, 64, 7);
  std::memcpy(expected, stack, 64);
  ibv_sge wsge{reinterpret_cast<uint64_t>(stack), 64, 0};
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &wsge, 1, p.eb->addr(1024), p.eb->mr->rkey(), 3,
                     IBV_SEND_SIGNALED | IBV_SEND_INLINE));
  std::memset(stack, 0, 64);
  auto s = Poll(*p.ea->send_cq, 2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(p.eb->data() + 1024, expected, 64), 0);
}

TEST_P(ConformanceTest, UnsignaledSuccessHasNoCompletion) {
  QpPair& p = Connect(0, 1);
  ibv_sge sge = p.ea->Sge(0, 16);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 1, 0));
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 2));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, 2u);
  EXPECT_TRUE(Drain(*p.ea->send_cq, 2000).empty()) << "the unsignaled write never completes";
}

// Per-QP order of execution and completion, with several QPs on several NICs whose packets the
// link interleaves.
TEST_P(ConformanceTest, PerQpCompletionOrderAcrossQpsAndNics) {
  const int n = harness_->num_devices();
  std::vector<QpPair*> pairs;
  for (int i = 0; i < 4; ++i) pairs.push_back(&Connect(i % n, (i + 1) % n));
  constexpr int kOps = 60;
  std::mt19937 rng(11);
  for (int q = 0; q < 4; ++q) {
    QpPair& p = *pairs[q];
    for (int i = 0; i < kOps; ++i) {
      ibv_sge r = p.eb->Sge(q * 65536 + 32768 + (i % 8) * 64, 64);
      ASSERT_OK(PostRecv(*p.b, &r, 1, i));
    }
  }
  for (int i = 0; i < kOps; ++i) {
    for (int q = 0; q < 4; ++q) {
      QpPair& p = *pairs[q];
      const size_t off = static_cast<size_t>(q) * 65536 + static_cast<size_t>(i % 16) * 1024;
      ibv_sge s = p.ea->Sge(off, 1024);
      const ibv_wr_opcode ops[] = {IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ, IBV_WR_SEND,
                                   IBV_WR_RDMA_WRITE_WITH_IMM};
      const ibv_wr_opcode op = ops[rng() % 4];
      if (op == IBV_WR_SEND) s.length = 64;
      ASSERT_OK(PostSend(*p.a, op, &s, 1, p.eb->addr(off), p.eb->mr->rkey(), i,
                         IBV_SEND_SIGNALED, htonl(i)));
    }
  }
  // Send CQs are per device and shared by that device's QPs: group completions by (CQ, qpn).
  std::map<std::pair<int, uint32_t>, std::vector<uint64_t>> sends;
  std::map<std::pair<int, uint32_t>, std::vector<uint64_t>> recvs;
  size_t total_sends = 0;
  ibv_wc wc[16];
  for (int round = 0; round < 200000 && total_sends < 4u * kOps; ++round) {
    for (int d = 0; d < n; ++d) {
      auto got = ep(d).send_cq->Poll(wc);
      ASSERT_TRUE(got.ok());
      for (int k = 0; k < *got; ++k) {
        EXPECT_EQ(wc[k].status, IBV_WC_SUCCESS);
        sends[{d, wc[k].qp_num}].push_back(wc[k].wr_id);
        ++total_sends;
      }
      got = ep(d).recv_cq->Poll(wc);
      ASSERT_TRUE(got.ok());
      for (int k = 0; k < *got; ++k) {
        EXPECT_EQ(wc[k].status, IBV_WC_SUCCESS);
        recvs[{d, wc[k].qp_num}].push_back(wc[k].wr_id);
      }
    }
  }
  ASSERT_EQ(total_sends, 4u * kOps);
  ASSERT_EQ(sends.size(), 4u);
  for (auto& [key, ids] : sends) {
    std::vector<uint64_t> expected(kOps);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(ids, expected) << "send completions of QP " << key.second << " out of order";
  }
  for (auto& [key, ids] : recvs) {
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i) << "receives consumed in order";
  }
}

// The responder ACKs only after placing the data: while the ACK path is held the data is
// already there and no send completion exists; releasing it completes the WR.
TEST_P(ConformanceTest, SendCompletionNeverPrecedesPlacement) {
  REQUIRE_LINK_CONTROL();
  QpPair& p = Connect(0, 1);
  ASSERT_OK(link->Hold(*p.b, true));  // everything B sends (its ACKs) is held
  Fill(p.ea->data(), 20000, 8);
  ibv_sge sge = p.ea->Sge(0, 20000);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 1));
  // Until the data is placed at the responder (bounded in wall time), and a while after, no send
  // completion may appear: the ACK is held.
  std::vector<ibv_wc> early = Drain(*p.ea->send_cq, 500);
  for (auto start = std::chrono::steady_clock::now();
       !HoldsBytes(p.eb->data(), p.ea->data(), 20000) &&
       std::chrono::steady_clock::now() - start < std::chrono::seconds(5);) {
    const auto more = Drain(*p.ea->send_cq, 10);
    early.insert(early.end(), more.begin(), more.end());
  }
  EXPECT_TRUE(early.empty());
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data(), 20000), 0) << "request was delivered";
  ASSERT_OK(link->Hold(*p.b, false));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);

  // And under random interleaving: whenever a write completes, its bytes are at the target.
  constexpr int kWrites = 64;
  for (int i = 0; i < kWrites; ++i) {
    Fill(p.ea->data() + 100000 + i * 4096, 4096, 100 + i);
    ibv_sge s = p.ea->Sge(100000 + i * 4096, 4096);
    ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &s, 1, p.eb->addr(100000 + i * 4096),
                       p.eb->mr->rkey(), i));
  }
  int seen = 0;
  ibv_wc wc[4];
  for (int round = 0; round < 100000 && seen < kWrites; ++round) {
    auto got = p.ea->send_cq->Poll(wc);
    ASSERT_TRUE(got.ok());
    for (int k = 0; k < *got; ++k, ++seen) {
      const size_t off = 100000 + wc[k].wr_id * 4096;
      EXPECT_EQ(std::memcmp(p.ea->data() + off, p.eb->data() + off, 4096), 0)
          << "completion of write " << wc[k].wr_id << " before its data was placed";
    }
  }
  EXPECT_EQ(seen, kWrites);
}

// RC retransmission: a lost request and a lost ACK are both recovered, and a retransmitted
// SEND never consumes a second receive.
TEST_P(ConformanceTest, LostPacketsAreRetransmittedExactlyOnce) {
  REQUIRE_LINK_CONTROL();
  QpOptions o;
  o.timeout = 12;  // 16.8 ms: generous for a wall-clock link on a loaded machine (free when virtual)
  QpPair& p = Connect(0, 1, o);
  ibv_sge r1 = p.eb->Sge(0, 64), r2 = p.eb->Sge(64, 64);
  ASSERT_OK(PostRecv(*p.b, &r1, 1, 1));
  ASSERT_OK(PostRecv(*p.b, &r2, 1, 2));
  Fill(p.ea->data(), 128, 9);
  ASSERT_OK(link->DropNext(*p.a, 1));  // the request is lost
  ibv_sge s1 = p.ea->Sge(0, 64);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s1, 1, 0, 0, 10));
  auto wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  ASSERT_OK(link->DropNext(*p.b, 1));  // the ACK is lost: the SEND arrives twice
  ibv_sge s2 = p.ea->Sge(64, 64);
  ASSERT_OK(PostSend(*p.a, IBV_WR_SEND, &s2, 1, 0, 0, 11));
  wcs = Poll(*p.ea->send_cq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  auto recv = Drain(*p.eb->recv_cq, 2000);
  ASSERT_EQ(recv.size(), 2u) << "each SEND consumed exactly one receive";
  EXPECT_EQ(recv[0].wr_id, 1u);
  EXPECT_EQ(recv[1].wr_id, 2u);
  EXPECT_EQ(std::memcmp(p.ea->data(), p.eb->data(), 128), 0);
}

TEST_P(ConformanceTest, WakeupFdFiresAfterRequestNotify) {
  QpPair& p = Connect(0, 1);
  verbs::Cq& cq = *p.ea->send_cq;
  if (cq.wakeup_fd() < 0) GTEST_SKIP() << "no wakeup fd";
  ASSERT_OK(cq.RequestNotify());
  pollfd pfd{cq.wakeup_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "nothing to report yet";
  ibv_sge sge = p.ea->Sge(0, 8);
  ASSERT_OK(PostSend(*p.a, IBV_WR_RDMA_WRITE, &sge, 1, p.eb->addr(0), p.eb->mr->rkey(), 1));
  // Keep the link moving (on a real HCA this is the hardware) until the fd fires, at most 2 s.
  int ready = 0;
  for (auto start = std::chrono::steady_clock::now();
       ready == 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(2);) {
    ProgressRounds(10);
    ready = ::poll(&pfd, 1, 0);
  }
  EXPECT_EQ(ready, 1);
  ASSERT_OK(cq.ConsumeWakeup());
  EXPECT_EQ(Poll(cq, 1).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Providers, ConformanceTest, ::testing::ValuesIn(AllHarnesses()),
                         HarnessName);

}  // namespace
}  // namespace braid::testing
