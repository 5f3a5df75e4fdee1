// The three message protocols, seen from the physical WRs they post over the null provider: what
// carries the immediate, which sequence numbers travel, and what follows the data.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dataplane/vqp/vqp_protocol.h"
#include "tests/testutil/null_vqp_bed.h"
#include "tests/testutil/small_vqp_config.h"

namespace braid::vqp {
namespace {

using testing::NullQp;
using testing::NullVqpBed;
using SentWr = NullQp::SentWr;

constexpr uint64_t kFragment = 16384;  // SmallVqpConfig's fragment size

// Records every physical send WR the bed's VQP posts from now on.
void Record(NullVqpBed& nb) {
  for (int i = 0; i < nb.vqp().num_physical_qps(); ++i) nb.qp(i).Record(true);
}

// Every recorded WR of the VQP, in posting order.
std::vector<SentWr> Sent(NullVqpBed& nb) {
  std::vector<SentWr> all;
  for (int i = 0; i < nb.vqp().num_physical_qps(); ++i) {
    all.insert(all.end(), nb.qp(i).sent().begin(), nb.qp(i).sent().end());
  }
  std::sort(all.begin(), all.end(),
            [](const SentWr& a, const SentWr& b) { return a.order < b.order; });
  return all;
}

wire::Payload PayloadOf(const SentWr& s) {
  wire::Payload p;
  std::memcpy(&p, s.payload, sizeof(p));
  return p;
}

// Polls until `want` virtual completions came back, each a success.
void ExpectSuccesses(NullVqpBed& nb, int want) {
  int got = 0;
  VirtualWc out[8];
  for (int round = 0; round < 1000 && got < want; ++round) {
    auto n = nb.cq().Poll(out);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    for (int i = 0; i < *n; ++i)
      EXPECT_EQ(out[i].status, IBV_WC_SUCCESS) << "wr_id " << out[i].wr_id;
    got += *n;
  }
  EXPECT_EQ(got, want);
}

VirtualSendWr WriteImm(NullVqpBed& nb, uint64_t wr_id, uint64_t length, uint32_t imm,
                       uint64_t remote_addr) {
  VirtualSendWr wr = nb.Write(wr_id, length, IBV_WR_RDMA_WRITE_WITH_IMM);
  wr.imm_data = htonl(imm);
  wr.remote_addr = remote_addr;
  return wr;
}

// Posts `wrs` on the bed's VQP, expects each to complete successfully, and returns the physical
// WRs the VQP posted for them, in posting order.
std::vector<SentWr> PostAndRecord(NullVqpBed& nb, const std::vector<VirtualSendWr>& wrs) {
  EXPECT_TRUE(nb.status().ok()) << nb.status().ToString();
  if (!nb.status().ok()) return {};
  Record(nb);
  for (const VirtualSendWr& wr : wrs) {
    const common::Status s = nb.vqp().PostSend(wr);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  ExpectSuccesses(nb, static_cast<int>(wrs.size()));
  return Sent(nb);
}

TEST(SingleQpProtocolTest, AWriteThatFitsOneFragmentCarriesTheImmediateItself) {
  NullVqpBed nb(1, testing::SmallVqpConfig(Scheme::kSpray, 1));
  const std::vector<SentWr> sent = PostAndRecord(nb, {WriteImm(nb, 1, 100, 7, 0x10000)});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].opcode, IBV_WR_RDMA_WRITE_WITH_IMM);
  EXPECT_EQ(sent[0].imm_data, htonl(7));
  EXPECT_EQ(sent[0].length, 100u);
}

TEST(SingleQpProtocolTest, ALongerWriteEndsWithANotifyOnTheSameQpAndAnEmptyOneIsOneWrite) {
  NullVqpBed nb(1, testing::SmallVqpConfig(Scheme::kSpray, 1));
  const uint64_t length = 2 * kFragment + 5;
  const std::vector<SentWr> sent =
      PostAndRecord(nb, {WriteImm(nb, 1, length, 7, 0x10000), WriteImm(nb, 2, 0, 8, 0x10000)});
  ASSERT_EQ(sent.size(), 5u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(sent[i].opcode, IBV_WR_RDMA_WRITE) << i;
  EXPECT_EQ(sent[3].opcode, IBV_WR_SEND_WITH_IMM);
  EXPECT_EQ(sent[3].imm_data, htonl(7));
  EXPECT_EQ(PayloadOf(sent[3]).bytes, length);
  EXPECT_EQ(sent[4].opcode, IBV_WR_RDMA_WRITE_WITH_IMM);
  EXPECT_EQ(sent[4].imm_data, htonl(8));
  EXPECT_EQ(sent[4].length, 0u);
}

// Each notify is posted after every data WR and fence of its message, carries the user's
// immediate, and numbers the messages in posting order.
TEST(SprayProtocolTest, ANotifyFollowsItsDataAndNumbersMessagesInPostingOrder) {
  NullVqpBed nb(2, testing::SmallVqpConfig(Scheme::kSpray, 4));
  constexpr int kMessages = 3;
  const uint64_t length = 2 * kFragment;
  auto base = [](int k) { return 0x100000ull * static_cast<uint64_t>(k + 1); };
  std::vector<VirtualSendWr> wrs;
  for (int k = 0; k < kMessages; ++k) wrs.push_back(WriteImm(nb, k, length, 100 + k, base(k)));
  const std::vector<SentWr> sent = PostAndRecord(nb, wrs);
  int notifies = 0;
  for (const SentWr& s : sent) {
    if (s.opcode == IBV_WR_RDMA_WRITE) continue;
    if (s.opcode == IBV_WR_RDMA_READ) continue;  // fences
    ASSERT_EQ(s.opcode, IBV_WR_SEND_WITH_IMM) << "SPRAY data travels as plain writes";
    ++notifies;
    const int k = static_cast<int>(ntohl(s.imm_data)) - 100;
    ASSERT_GE(k, 0);
    ASSERT_LT(k, kMessages);
    EXPECT_EQ(PayloadOf(s).value, static_cast<uint32_t>(k)) << "notify number = posting order";
    EXPECT_EQ(PayloadOf(s).bytes, length);
    for (const SentWr& d : sent) {
      if (d.opcode == IBV_WR_RDMA_WRITE && d.remote_addr >= base(k) &&
          d.remote_addr < base(k) + length) {
        EXPECT_LT(d.order, s.order) << "message " << k << ": a data WR after its notify";
      }
    }
  }
  EXPECT_EQ(notifies, kMessages);
}

// A message whose data is one fragment has its notify posted right behind the fragment on the
// same QP, before the fragment's acknowledgement is seen (RC order places the data first; no
// fence). A longer one still waits for its data's acknowledgements.
TEST(SprayProtocolTest, AOneFragmentMessageSendsItsNotifyRightBehindItsDataOnTheSameQp) {
  NullVqpBed nb(2, testing::SmallVqpConfig(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok()) << nb.status().ToString();
  Record(nb);
  ASSERT_TRUE(nb.vqp().PostSend(WriteImm(nb, 1, 100, 7, 0x10000)).ok());
  int carrier = -1;  // nothing polled yet: the QP that has both pieces
  for (int i = 0; i < 4; ++i) {
    if (!nb.qp(i).sent().empty()) carrier = i;
  }
  ASSERT_GE(carrier, 0);
  const std::vector<SentWr>& out = nb.qp(carrier).sent();
  ASSERT_EQ(out.size(), 2u) << "the notify waited for the fragment's acknowledgement";
  EXPECT_EQ(out[0].opcode, IBV_WR_RDMA_WRITE);
  EXPECT_EQ(out[0].length, 100u);
  EXPECT_EQ(out[1].opcode, IBV_WR_SEND_WITH_IMM);
  EXPECT_EQ(out[1].imm_data, htonl(7));
  EXPECT_EQ(PayloadOf(out[1]).bytes, 100u);
  EXPECT_EQ(PayloadOf(out[1]).value, 0u);
  EXPECT_EQ(Sent(nb).size(), 2u) << "a fence or another piece for a one-fragment message";
  ExpectSuccesses(nb, 1);

  Record(nb);  // a two-fragment message: no notify before its data is acknowledged
  for (int i = 0; i < 4; ++i) nb.qp(i).Hold(true);
  const size_t before = Sent(nb).size();
  ASSERT_TRUE(nb.vqp().PostSend(WriteImm(nb, 2, 2 * kFragment, 8, 0x100000)).ok());
  const std::vector<SentWr> held = Sent(nb);
  EXPECT_EQ(held.size() - before, 2u) << "expected its two fragments";
  for (size_t k = before; k < held.size(); ++k) {
    EXPECT_NE(held[k].opcode, IBV_WR_SEND_WITH_IMM) << "a notify before its data was acknowledged";
  }
  for (int i = 0; i < 4; ++i) nb.qp(i).Hold(false);
  ExpectSuccesses(nb, 1);
}

// When the QP carrying an express message fails both pieces, the notify is not replayed on its
// own: the fragment is replayed on another QP and the notify goes out only once that replay is
// acknowledged; the message then completes once, successfully, with its notify number unchanged.
TEST(SprayProtocolTest, AnExpressNotifyWhoseQpDiedWaitsForItsReplayedData) {
  NullVqpBed nb(2, testing::SmallVqpConfig(Scheme::kSpray, 4));
  ASSERT_TRUE(nb.status().ok()) << nb.status().ToString();
  for (int i = 0; i < 4; ++i) nb.qp(i).FailNextSends(2, IBV_WC_RETRY_EXC_ERR);
  Record(nb);
  ASSERT_TRUE(nb.vqp().PostSend(WriteImm(nb, 1, 100, 7, 0x10000)).ok());
  int carrier = -1;
  for (int i = 0; i < 4; ++i) {
    if (!nb.qp(i).sent().empty()) carrier = i;
  }
  ASSERT_GE(carrier, 0);
  ASSERT_EQ(nb.qp(carrier).sent().size(), 2u);
  for (int i = 0; i < 4; ++i) {  // the others deliver, but hold their completions
    if (i != carrier) {
      nb.qp(i).FailNextSends(0, IBV_WC_SUCCESS);
      nb.qp(i).Hold(true);
    }
  }
  VirtualWc wc[4];
  for (int round = 0; round < 20; ++round) {  // the carrier's two failures are seen
    auto n = nb.cq().Poll(wc);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(*n, 0) << "the message completed before its replayed data was acknowledged";
  }
  std::vector<SentWr> sent = Sent(nb);
  ASSERT_EQ(sent.size(), 3u) << "expected the fragment's replay and nothing else yet";
  EXPECT_EQ(sent[2].opcode, IBV_WR_RDMA_WRITE);
  EXPECT_EQ(sent[2].length, 100u);
  for (int i = 0; i < 4; ++i) nb.qp(i).Hold(false);
  ExpectSuccesses(nb, 1);
  sent = Sent(nb);
  ASSERT_GE(sent.size(), 4u);
  EXPECT_EQ(sent.back().opcode, IBV_WR_SEND_WITH_IMM);
  EXPECT_EQ(sent.back().imm_data, htonl(7));
  EXPECT_EQ(PayloadOf(sent.back()).value, 0u) << "the replayed notify changed its number";
}

// Fragments and tails take consecutive numbers in posting order; plain writes take none.
TEST(DqplbProtocolTest, FragmentsAndTailsTakeConsecutiveNumbersAndPlainWritesNone) {
  NullVqpBed nb(2, testing::SmallVqpConfig(Scheme::kDqplb, 2));
  const uint64_t length = 3 * kFragment;
  const std::vector<SentWr> sent = PostAndRecord(
      nb, {nb.Write(9, 2 * kFragment),  // a plain write first
           WriteImm(nb, 1, length, 200, 0x100000), WriteImm(nb, 2, length, 201, 0x200000)});
  uint32_t expected_seq = 0;
  int plain = 0;
  int tails = 0;
  for (const SentWr& s : sent) {
    if (s.opcode == IBV_WR_RDMA_WRITE) {
      ++plain;
      continue;
    }
    const uint32_t v = ntohl(s.imm_data);
    EXPECT_EQ(v & wire::kSeqMask, expected_seq);
    EXPECT_EQ(v & wire::kVoidBit, 0u);
    if (expected_seq % 4 == 3) {  // three fragments, then the tail
      ASSERT_EQ(s.opcode, IBV_WR_SEND_WITH_IMM);
      EXPECT_NE(v & wire::kTailBit, 0u);
      EXPECT_EQ(PayloadOf(s).bytes, length);
      EXPECT_EQ(PayloadOf(s).value, htonl(200 + static_cast<uint32_t>(expected_seq / 4)));
      ++tails;
    } else {
      ASSERT_EQ(s.opcode, IBV_WR_RDMA_WRITE_WITH_IMM);
      EXPECT_EQ(v & wire::kTailBit, 0u);
    }
    ++expected_seq;
  }
  EXPECT_EQ(plain, 2);
  EXPECT_EQ(tails, 2);
  EXPECT_EQ(expected_seq, 8u);
}

}  // namespace
}  // namespace braid::vqp
