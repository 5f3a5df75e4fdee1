// Regression tests for the gaps of the seed's TODO table, named for the behaviour each guards
// (the invariants they check are named in doc/vqp.md).
// Sim-link tests move real bytes; null-provider tests control physical completions exactly.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <type_traits>

#include "tests/testutil/null_vqp_bed.h"
#include "tests/testutil/small_vqp_config.h"
#include "tests/testutil/vqp_testbed.h"
#include "tests/unit/vqp/alloc_counter.h"

namespace braid::vqp {
namespace {

using testing::NullQp;
using testing::NullVqpBed;
using testing::VqpTestbed;

constexpr size_t kBytes = 4 << 20;

VirtualQpConfig Config(Scheme scheme, uint32_t qps, bool failover = true) {
  return testing::SmallVqpConfig(scheme, qps, failover);
}

// Error completions (whose opcode the soft provider poisons) are routed by tag and status; a
// completion without Braid's tag is never turned into a user completion.
TEST(GapRegressionTest, ErrorCompletionRoutedByTagNotOpcode) {
  VqpTestbed tb(1, Config(Scheme::kSpray, 1, /*failover=*/false), kBytes);
  ASSERT_TRUE(tb.status().ok()) << tb.status().ToString();
  ASSERT_TRUE(tb.fabric().BreakQp(tb.a().vqp->physical_qp(0)).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 100, 0, 7)).ok());
  auto wc = tb.Poll(0, 2, 20000);
  ASSERT_EQ(wc.size(), 1u) << "exactly one completion";
  EXPECT_EQ(wc[0].wr_id, 7u);
  EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(wc[0].opcode, IBV_WC_RDMA_WRITE) << "taken from the virtual WR, not the physical WC";

  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  ibv_wc foreign{};
  foreign.wr_id = 42;  // a user-looking id on a physical QP: not ours
  foreign.status = IBV_WC_SUCCESS;
  foreign.opcode = IBV_WC_SEND;
  foreign.qp_num = nb.vqp().physical_qp(0).qp_num();
  nb.physical_cq(0).Push(foreign);
  VirtualWc out[4];
  auto n = nb.cq().Poll(out);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(nb.vqp().counters().protocol_errors, 1u);
}

// A QP is Dead after its first error completion and never scheduled again; with no healthy
// data QP left, posts fail at once.
TEST(GapRegressionTest, DeadQpIsNeverScheduledAgain) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  nb.qp(0).FailNextSends(1, IBV_WC_RETRY_EXC_ERR);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(nb.vqp().PostSend(nb.Write(i, 100)).ok());
  VirtualWc out[8];
  int got = 0;
  for (int r = 0; r < 10 && got < 4; ++r) got += *nb.cq().Poll(std::span(out + got, 8 - got));
  ASSERT_EQ(got, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i].status, IBV_WC_SUCCESS) << "failed over";
  EXPECT_EQ(nb.vqp().health(0), QpHealth::kDead);
  const uint64_t sends_on_dead = nb.qp(0).sends();
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_TRUE(nb.vqp().PostSend(nb.Write(10 + i, 100)).ok());
    (void)nb.cq().Poll(out);
  }
  EXPECT_EQ(nb.qp(0).sends(), sends_on_dead) << "nothing more was posted on the dead QP";
  nb.qp(1).FailNextSends(1, IBV_WC_RETRY_EXC_ERR);
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(99, 100)).ok());
  auto n = nb.cq().Poll(out);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(out[0].status, IBV_WC_RETRY_EXC_ERR);
  const common::Status s = nb.vqp().PostSend(nb.Write(100, 100));
  EXPECT_EQ(s.code(), common::StatusCode::kQpError);
  EXPECT_NE(s.message().find("no healthy data QP"), std::string_view::npos);
}

// A WR whose dispatch is cut short by a dead QP completes exactly once, with the error, after
// its posted fragments drained; it never hangs and never completes twice.
TEST(GapRegressionTest, PartialDispatchCompletesOnceWithError) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 4, /*failover=*/false), kBytes);
  ASSERT_TRUE(tb.status().ok());
  ASSERT_TRUE(tb.fabric().BreakQp(tb.a().vqp->physical_qp(2)).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 3'000'000, 0, 1)).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 1000, 0, 2)).ok());
  auto wc = tb.Poll(0, 3, 50000);
  ASSERT_EQ(wc.size(), 2u);
  EXPECT_EQ(wc[0].wr_id, 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(wc[1].wr_id, 2u);
  EXPECT_EQ(wc[1].status, IBV_WC_SUCCESS) << "the next WR avoids the dead QP";
}

// A WR whose first fragments went out and whose rest finds no data QP in service (the operator
// drained both devices meanwhile) completes once, with an error: the rest of its bytes never moved.
TEST(GapRegressionTest, AWrWhoseRestFindsNoQpInServiceCompletesWithAnError) {
  VirtualQpConfig c = Config(Scheme::kSpray, 2);
  c.fragment_size = 4096;
  c.qp_capacity = 2;
  NullVqpBed nb(2, c);
  ASSERT_TRUE(nb.status().ok());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 16 * 4096)).ok());
  const uint64_t posted_first = nb.qp(0).sends() + nb.qp(1).sends();
  ASSERT_GT(posted_first, 0u);
  ASSERT_LT(posted_first, 16u) << "the WR must wait for room part way";
  ASSERT_TRUE(nb.vqp().DrainDevice(0).ok());
  ASSERT_TRUE(nb.vqp().DrainDevice(1).ok());
  VirtualWc out[4];
  int got = 0;
  for (int r = 0; r < 20 && got == 0; ++r) got = *nb.cq().Poll(out);
  ASSERT_EQ(got, 1);
  EXPECT_EQ(out[0].wr_id, 1u);
  EXPECT_NE(out[0].status, IBV_WC_SUCCESS) << "only " << posted_first << " of 16 fragments moved";
  EXPECT_EQ(nb.qp(0).sends() + nb.qp(1).sends(), posted_first);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(*nb.cq().Poll(out), 0) << "completed once";
}

// The failed WR is reported only once none of its fragments is still in flight: the client may
// reuse or free the buffer as soon as it sees the completion, so no physical WR may still read it.
TEST(GapRegressionTest, AFailedWrIsReportedOnlyOnceNothingOfItIsInFlight) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 4, /*failover=*/false), kBytes);
  ASSERT_TRUE(tb.status().ok());
  ASSERT_TRUE(tb.fabric().BreakQp(tb.a().vqp->physical_qp(2)).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 3'000'000, 0, 1)).ok());
  const auto wc = tb.Poll(0, 1, 50000);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, IBV_WC_RETRY_EXC_ERR);
  uint32_t in_flight = 0;
  for (int i = 0; i < tb.a().vqp->num_physical_qps(); ++i) in_flight += tb.a().vqp->outstanding(i);
  EXPECT_EQ(in_flight, 0u) << "reported while fragments of it were still posted";
}

// Errors are returned with their own message, never a stale errno.
TEST(GapRegressionTest, PostErrorsCarryTheirOwnMessage) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  errno = EBUSY;
  VirtualSendWr wr = nb.Write(1, 100);
  wr.opcode = IBV_WR_BIND_MW;
  const common::Status s = nb.vqp().PostSend(wr);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not supported"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(s.message().find("busy"), std::string_view::npos) << "no stale errno text";
}

// Lengths and fragmentation are 64-bit: a 6 GiB write (source and target are 64 MiB of
// real memory mapped 96 times) is cut into 6 GiB / fragment_size fragments and completes once.
class RepeatedMapping {
 public:
  // `copies` contiguous views of one `bytes`-long memfd.
  RepeatedMapping(size_t bytes, int copies) : bytes_(bytes), total_(bytes * copies) {
    fd_ = memfd_create("braid-t5", 0);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(bytes)) != 0) return;
    void* base =
        mmap(nullptr, total_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return;
    base_ = static_cast<uint8_t*>(base);
    for (int i = 0; i < copies; ++i) {
      if (mmap(base_ + i * bytes, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_, 0) ==
          MAP_FAILED) {
        base_ = nullptr;
        return;
      }
    }
  }
  ~RepeatedMapping() {
    if (base_ != nullptr) munmap(base_, total_);
    if (fd_ >= 0) close(fd_);
  }
  uint8_t* data() const { return base_; }

 private:
  size_t bytes_;
  size_t total_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
};

TEST(GapRegressionTest, SixGiBWriteFragmentsAndCompletes) {
  constexpr size_t kView = 64ull << 20;
  constexpr uint64_t kTotal = 6ull << 30;
  RepeatedMapping src(kView, 96), dst(kView, 96);
  ASSERT_NE(src.data(), nullptr);
  ASSERT_NE(dst.data(), nullptr);
  std::mt19937_64 rng(5);
  for (size_t i = 0; i < kView; i += 8) {
    const uint64_t v = rng();
    std::memcpy(src.data() + i, &v, 8);
  }
  VirtualQpConfig c = Config(Scheme::kSpray, 2);
  c.fragment_size = kView;
  c.qp_capacity = 2;
  VqpTestbed tb(1, c, src.data(), dst.data(), kTotal, {}, 1024);
  ASSERT_TRUE(tb.status().ok()) << tb.status().ToString();
  ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = 1}).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, 0, kTotal, 0, 6)).ok());
  auto s = tb.Poll(0, 1, 100000);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(s[0].byte_len, kTotal);
  auto r = tb.Poll(1, 1, 100000);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].byte_len, kTotal) << "the 64-bit byte count reaches the receiver";
  EXPECT_EQ(tb.a().vqp->counters().bytes_posted, kTotal) << "one NIC: no fence; data bytes only";
  EXPECT_EQ(tb.a().vqp->counters().fragments_posted, 96u + 1) << "96 fragments + the notify";
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), kView), 0);
}

// A notify that cannot be delivered is not swallowed: the WR fails rather than succeeding
// or hanging.
TEST(GapRegressionTest, NotifyFailureIsNotSwallowed) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  nb.qp(0).FailNextSends(1, IBV_WC_RETRY_EXC_ERR);  // the data fragment, then
  nb.qp(1).FailNextSends(1, IBV_WC_RETRY_EXC_ERR);  // the re-post: no data QP is left
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(5, 100, IBV_WR_RDMA_WRITE_WITH_IMM)).ok());
  VirtualWc out[4];
  int got = 0;
  for (int r = 0; r < 10 && got == 0; ++r) got = *nb.cq().Poll(out);
  ASSERT_EQ(got, 1);
  EXPECT_EQ(out[0].wr_id, 5u);
  EXPECT_EQ(out[0].status, IBV_WC_RETRY_EXC_ERR);
}

// A receive that cannot be posted is an error to the caller, not a silent success.
TEST(GapRegressionTest, ReceivePostFailureIsReturned) {
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  VirtualRecvWr bad{.wr_id = 1, .local_addr = 0x1000, .length = 64, .local_keys = 77};
  EXPECT_EQ(nb.vqp().PostRecv(bad).code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(nb.vqp().pending_recvs(), 0u) << "nothing changed";
  for (uint32_t i = 0; i < 64; ++i) ASSERT_TRUE(nb.vqp().PostRecv({.wr_id = i}).ok());
  EXPECT_EQ(nb.vqp().PostRecv({.wr_id = 99}).code(), common::StatusCode::kNoResource);
}

// Sequence numbers wrap on the full 24-bit ring (mask, not modulo 2^24-1), and an
// arrival beyond the window is refused without touching the window (the VQP parks it).
TEST(GapRegressionTest, SequenceWrapAndWindow) {
  ReorderWindow w(8, 24, 0xFFFFFE);
  ReorderWindow::Entry e;
  const uint32_t arrivals[] = {0x000001, 0xFFFFFF, 0x000000, 0xFFFFFE};
  for (uint32_t s : arrivals) {
    EXPECT_EQ(w.Insert(s, {true, false, s, 0}), ReorderWindow::Arrival::kAccepted) << s;
  }
  std::vector<uint32_t> popped;
  while (w.PopNext(&e)) popped.push_back(e.imm);
  EXPECT_EQ(popped, (std::vector<uint32_t>{0xFFFFFE, 0xFFFFFF, 0, 1}));
  EXPECT_EQ(w.next(), 2u);
  EXPECT_EQ(w.Insert(0xFFFFFF, {true, false, 0, 0}), ReorderWindow::Arrival::kDuplicate);
  EXPECT_EQ(w.Insert(2 + 8, {true, false, 0, 0}), ReorderWindow::Arrival::kOutOfWindow);
  EXPECT_EQ(w.Insert(2 + 7, {true, false, 9, 0}), ReorderWindow::Arrival::kAccepted);
  EXPECT_EQ(w.Insert(2 + 7, {true, false, 0, 0}), ReorderWindow::Arrival::kDuplicate)
      << "a second arrival never overwrites the first";
  EXPECT_FALSE(w.PopNext(&e)) << "2 has not arrived";
}

// DQPLB end to end with a tiny window (2 QPs x capacity 2) and skewed NIC delays: arrivals come
// out of order and are delivered in order; nothing is lost. (The sender's side of the window is
// DqplbSenderStopsAtAFullWindowWhileAQpIsHeld.)
TEST(GapRegressionTest, DqplbWindowBackPressureLosesNothing) {
  VirtualQpConfig c = Config(Scheme::kDqplb, 2);
  c.qp_capacity = 2;
  c.max_virtual_wrs = 4;
  c.fragment_size = 4096;
  VqpTestbed tb(2, c, kBytes, {.seed = 8, .reorder = true});
  ASSERT_TRUE(tb.status().ok());
  ASSERT_TRUE(tb.fabric().SetNicDelay("soft1", 300'000).ok());
  tb.Fill(0, 0, kBytes, 8);
  constexpr int kMsgs = 60;
  int posted = 0, recvs = 0;
  std::vector<VirtualWc> sa, rb;
  for (int r = 0; r < 400000 && (sa.size() < kMsgs || rb.size() < kMsgs); ++r) {
    while (recvs < kMsgs && tb.b().vqp->PostRecv({.wr_id = uint64_t(recvs)}).ok()) ++recvs;
    while (posted < kMsgs &&
           tb.a()
               .vqp
               ->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, posted * 40'000ull, 30'000,
                                posted * 40'000ull, posted, htonl(posted)))
               .ok()) {
      ++posted;
    }
    tb.PollBoth(1, &sa, &rb);
  }
  ASSERT_EQ(rb.size(), size_t{kMsgs});
  std::printf("DQPLB window test: %llu arrivals parked\n",
              static_cast<unsigned long long>(tb.b().vqp->counters().parked_arrivals));
  for (int i = 0; i < kMsgs; ++i) {
    EXPECT_EQ(rb[i].status, IBV_WC_SUCCESS);
    EXPECT_EQ(rb[i].imm_data, htonl(i));
    EXPECT_EQ(rb[i].byte_len, 30'000u);
    EXPECT_EQ(std::memcmp(tb.data(0) + i * 40'000, tb.data(1) + i * 40'000, 30'000), 0);
  }
}

// DQPLB with one QP's completions held: the pieces stuck on it keep the window's start, so the
// sender stops once the window (16 numbers here) is taken, however fast the other QP completes,
// also within one message (30 fragments each); when the hold ends every message completes.
TEST(GapRegressionTest, DqplbSenderStopsAtAFullWindowWhileAQpIsHeld) {
  VirtualQpConfig c = Config(Scheme::kDqplb, 2);
  c.qp_capacity = 2;
  c.max_virtual_wrs = 4;
  c.fragment_size = 4096;
  const uint32_t window = VqpProtocol::ReorderWindowSize(c);
  ASSERT_EQ(window, 16u);
  NullVqpBed nb(2, c);
  ASSERT_TRUE(nb.status().ok());
  nb.qp(0).Record(true);
  nb.qp(1).Record(true);
  nb.qp(1).Hold(true);
  constexpr uint64_t kMsgs = 4;
  uint64_t posted = 0;
  std::vector<uint64_t> done;
  VirtualWc out[8];
  auto pump = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      while (posted < kMsgs &&
             nb.vqp().PostSend(nb.Write(posted, 120'000, IBV_WR_RDMA_WRITE_WITH_IMM)).ok()) {
        ++posted;
      }
      auto n = nb.cq().Poll(out);
      ASSERT_TRUE(n.ok());
      for (int k = 0; k < *n; ++k) {
        EXPECT_EQ(out[k].status, IBV_WC_SUCCESS);
        done.push_back(out[k].wr_id);
      }
    }
  };
  pump(200);
  // Sequence numbers taken: every one from the first held to the last posted lies in the window.
  auto seq = [](const NullQp::SentWr& w) { return ntohl(w.imm_data) & wire::kSeqMask; };
  ASSERT_FALSE(nb.qp(1).sent().empty()) << "nothing is stuck on the held QP";
  uint32_t first_held = UINT32_MAX, last = 0;
  for (const auto& w : nb.qp(1).sent()) first_held = std::min(first_held, seq(w));
  for (int q = 0; q < 2; ++q) {
    for (const auto& w : nb.qp(q).sent()) last = std::max(last, seq(w));
  }
  EXPECT_EQ(last - first_held + 1, window)
      << "the sender must take its whole window, and no more, while the window's start is held";
  nb.qp(1).Hold(false);
  pump(200);
  ASSERT_EQ(done.size(), kMsgs);
  for (uint64_t i = 0; i < kMsgs; ++i) EXPECT_EQ(done[i], i);
}

// SPRAY across NICs. The notify's NIC is fast, the data NICs slow: the receiver never sees a
// message complete before all of its bytes are in place.
TEST(GapRegressionTest, NotifyNeverOvertakesDataAcrossNics) {
  VirtualQpConfig c = Config(Scheme::kSpray, 4);
  VqpTestbed tb(4, c, kBytes, {.seed = 10, .reorder = true});
  ASSERT_TRUE(tb.status().ok()) << tb.status().ToString();
  // A's data QPs 1-3 sit on soft1..soft3 (slow); the notify goes on data QP 0 (soft0, fast).
  for (int n = 1; n < 4; ++n) {
    ASSERT_TRUE(tb.fabric().SetNicDelay("soft" + std::to_string(n), 400'000).ok());
  }
  tb.Fill(0, 0, kBytes, 10);
  constexpr int kMsgs = 12;
  for (int i = 0; i < kMsgs; ++i) ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = uint64_t(i)}).ok());
  for (int i = 0; i < kMsgs; ++i) {
    ASSERT_TRUE(tb.a()
                    .vqp
                    ->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, i * 200'000ull, 150'000,
                                     i * 200'000ull, i, htonl(i)))
                    .ok());
  }
  int seen = 0;
  std::vector<VirtualWc> sa, rb;
  for (int r = 0; r < 200000 && seen < kMsgs; ++r) {
    rb.clear();
    tb.PollBoth(1, &sa, &rb);
    for (const VirtualWc& wc : rb) {
      ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
      const size_t off = wc.wr_id * 200'000;
      ASSERT_EQ(std::memcmp(tb.data(0) + off, tb.data(1) + off, 150'000), 0)
          << "message " << wc.wr_id << " reported before its data was placed";
      ++seen;
    }
  }
  EXPECT_EQ(seen, kMsgs);
}

// Destroying a VQP with work in flight flushes every virtual WR exactly once.
TEST(GapRegressionTest, DestroyWithWorkInFlightFlushesEachOnce) {
  VqpTestbed tb(2, Config(Scheme::kDqplb, 4), kBytes);
  ASSERT_TRUE(tb.status().ok());
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(tb.fabric().HoldQp(tb.a().vqp->physical_qp(i), true).ok());
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 100'000, 0, i)).ok());
  }
  ASSERT_TRUE(tb.a().vqp->PostRecv({.wr_id = 77}).ok());
  tb.a().vqp.reset();
  VirtualWc out[32];
  auto n = tb.a().cq->Poll(out);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 11);
  for (uint64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(out[i].wr_id, i);
    EXPECT_EQ(out[i].status, IBV_WC_WR_FLUSH_ERR);
  }
  EXPECT_EQ(out[10].wr_id, 77u);
  EXPECT_EQ(out[10].status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(*tb.a().cq->Poll(out), 0) << "nothing twice";
  EXPECT_EQ(tb.a().cq->registered_qps(), 0u);
}

// SEND and atomics go to the message QP with capacity accounting, and send-side completions
// come back in posting order, mixed with fragmented writes.
TEST(GapRegressionTest, SendsUseMessageQpInPostingOrder) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 4), kBytes);
  ASSERT_TRUE(tb.status().ok());
  const int kSends = 40;  // > qp_capacity: the rest waits for room
  for (int i = 0; i < kSends; ++i) {
    ASSERT_TRUE(tb.b()
                    .vqp
                    ->PostRecv({.wr_id = uint64_t(i),
                                .local_addr = tb.b().addr(i * 1024),
                                .length = 1024,
                                .local_keys = tb.b().local_keys})
                    .ok());
  }
  tb.Fill(0, 0, kBytes, 12);
  std::vector<VirtualWc> s, r;
  auto post = [&](const VirtualSendWr& wr) {
    for (int tries = 0; tries < 100000; ++tries) {
      const common::Status st = tb.a().vqp->PostSend(wr);
      if (st.code() != common::StatusCode::kNoResource) return st;
      tb.PollBoth(1, &s, &r);
    }
    return common::Status::Internal("ring stayed full");
  };
  for (int i = 0; i < kSends; ++i) {
    ASSERT_TRUE(post(tb.Wr(0, IBV_WR_SEND, i * 1024, 1024, 0, 2 * i)).ok());
    ASSERT_TRUE(post(tb.Wr(0, IBV_WR_RDMA_WRITE, 100'000, 50'000, 100'000, 2 * i + 1)).ok());
    EXPECT_LE(tb.a().vqp->outstanding(4), 16u) << "the message QP's capacity is respected";
  }
  for (int k = 0; k < 100000 && (s.size() < 2 * kSends || r.size() < kSends); ++k) {
    tb.PollBoth(1, &s, &r);
  }
  ASSERT_EQ(s.size(), size_t{2 * kSends});
  for (int i = 0; i < 2 * kSends; ++i) {
    EXPECT_EQ(s[i].wr_id, uint64_t(i));
    EXPECT_EQ(s[i].status, IBV_WC_SUCCESS);
  }
  ASSERT_EQ(r.size(), size_t{kSends});
  EXPECT_EQ(std::memcmp(tb.data(0), tb.data(1), kSends * 1024), 0);
}

// Under DQPLB only write-with-imm fragments take sequence numbers; plain writes and
// reads before a write-with-imm do not leave gaps that would stall the receiver.
TEST(GapRegressionTest, DqplbPlainWriteAndReadTakeNoSequenceNumber) {
  VqpTestbed tb(2, Config(Scheme::kDqplb, 4), kBytes);
  ASSERT_TRUE(tb.status().ok());
  tb.Fill(0, 0, kBytes, 15);
  ASSERT_TRUE(tb.b().vqp->PostRecv({.wr_id = 1}).ok());
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 100'000, 0, 1)).ok());
  for (size_t i = 0; i < 100'000; ++i) tb.data(1)[400'000 + i] = static_cast<uint8_t>(i * 7 + 1);
  ASSERT_TRUE(tb.a().vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_READ, 200'000, 100'000, 400'000, 2)).ok());
  ASSERT_TRUE(
      tb.a()
          .vqp->PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE_WITH_IMM, 0, 100'000, 300'000, 3, htonl(3)))
          .ok());
  auto r = tb.Poll(1, 1, 50000);
  ASSERT_EQ(r.size(), 1u) << "the receiver would stall on a sequence gap";
  EXPECT_EQ(r[0].imm_data, htonl(3));
  EXPECT_EQ(r[0].byte_len, 100'000u);
  const auto s = tb.Poll(0, 3, 50000);
  ASSERT_EQ(s.size(), 3u);
  for (const auto& wc : s) EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  // Each moved its bytes its own way: the writes to B, the read from B to A.
  EXPECT_EQ(std::memcmp(tb.data(0), tb.data(1), 100'000), 0);
  EXPECT_EQ(std::memcmp(tb.data(0), tb.data(1) + 300'000, 100'000), 0);
  EXPECT_EQ(std::memcmp(tb.data(0) + 200'000, tb.data(1) + 400'000, 100'000), 0)
      << "the READ did not bring B's bytes";
  EXPECT_EQ(tb.b().vqp->counters().protocol_errors, 0u);
  // As posted: the plain write's and the read's fragments carry no immediate (no number).
  NullVqpBed nb(1, Config(Scheme::kDqplb, 2));
  ASSERT_TRUE(nb.status().ok());
  nb.qp(0).Record(true);
  nb.qp(1).Record(true);
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(1, 100'000)).ok());
  ASSERT_TRUE(nb.vqp().PostSend(nb.Write(2, 100'000, IBV_WR_RDMA_READ)).ok());
  VirtualWc out[4];
  int got = 0;
  for (int i = 0; i < 20 && got < 2; ++i) got += *nb.cq().Poll(std::span(out + got, 4 - got));
  ASSERT_EQ(got, 2);
  size_t posted = 0;
  for (int q = 0; q < 2; ++q) {
    for (const auto& w : nb.qp(q).sent()) {
      ++posted;
      EXPECT_TRUE(w.opcode == IBV_WR_RDMA_WRITE || w.opcode == IBV_WR_RDMA_READ) << w.opcode;
    }
  }
  EXPECT_GT(posted, 2u);
}

// Physical QPs are keyed by (device, qpn): two devices with QPs of equal numbers.
TEST(GapRegressionTest, QpsKeyedByDeviceAndQpNum) {
  VqpTestbed tb(2, Config(Scheme::kSpray, 2), kBytes);
  ASSERT_TRUE(tb.status().ok());
  VirtualQp& v = *tb.a().vqp;
  ASSERT_NE(v.physical_device(0), v.physical_device(1));
  ASSERT_EQ(v.physical_qp(0).qp_num(), v.physical_qp(1).qp_num()) << "same number, two devices";
  tb.Fill(0, 0, kBytes, 14);
  ASSERT_TRUE(v.PostSend(tb.Wr(0, IBV_WR_RDMA_WRITE, 0, 1'000'000, 0, 1)).ok());
  auto s = tb.Poll(0, 1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(tb.data(0), tb.data(1), 1'000'000), 0);
  // Each completion was charged to the QP it came from: nothing is left outstanding anywhere,
  // and every physical QP has its own route.
  for (int i = 0; i < v.num_physical_qps(); ++i) EXPECT_EQ(v.outstanding(i), 0u) << "QP " << i;
  EXPECT_EQ(tb.a().cq->registered_qps(), static_cast<size_t>(v.num_physical_qps()));
}

// An unsignaled operation on a multi-QP VQP is rejected, write-with-imm included; a single-QP
// VQP honours unsignaled success (no completion).
TEST(GapRegressionTest, UnsignaledMultiQpOperationRejected) {
  NullVqpBed multi(1, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(multi.status().ok());
  for (ibv_wr_opcode op : {IBV_WR_RDMA_WRITE, IBV_WR_RDMA_WRITE_WITH_IMM, IBV_WR_SEND}) {
    VirtualSendWr wr = multi.Write(1, 100, op);
    wr.send_flags = 0;
    const common::Status s = multi.vqp().PostSend(wr);
    EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("signaled"), std::string_view::npos);
  }
  NullVqpBed single(1, Config(Scheme::kSpray, 1));
  ASSERT_TRUE(single.status().ok());
  VirtualSendWr wr = single.Write(1, 100);
  wr.send_flags = 0;
  ASSERT_TRUE(single.vqp().PostSend(wr).ok());
  ASSERT_TRUE(single.vqp().PostSend(single.Write(2, 100)).ok());
  VirtualWc out[4];
  auto n = single.cq().Poll(out);
  ASSERT_EQ(*n, 1);
  EXPECT_EQ(out[0].wr_id, 2u);
}

// Steady-state post and poll allocate nothing (counting allocator).
TEST(GapRegressionTest, HotPathAllocatesNothing) {
  for (Scheme scheme : {Scheme::kSpray, Scheme::kDqplb}) {
    NullVqpBed nb(2, Config(scheme, 4));
    ASSERT_TRUE(nb.status().ok());
    VirtualWc out[16];
    auto round = [&](uint64_t base) {
      for (uint64_t i = 0; i < 8; ++i) {
        ASSERT_TRUE(nb.vqp().PostSend(nb.Write(base + i, 40'000)).ok());
      }
      ASSERT_TRUE(nb.vqp().PostSend(nb.Write(base + 8, 100, IBV_WR_RDMA_WRITE_WITH_IMM)).ok());
      int got = 0;
      for (int r = 0; r < 100 && got < 9; ++r) got += *nb.cq().Poll(std::span(out, 16 - got));
      ASSERT_EQ(got, 9);
    };
    round(0);  // warm-up
    const uint64_t before = testing::HeapAllocations();
    for (uint64_t k = 1; k <= 100; ++k) round(k * 100);
    EXPECT_EQ(testing::HeapAllocations() - before, 0u) << SchemeName(scheme);
  }
}

// A key entry that misses a device is an error at post time, naming the device.
TEST(GapRegressionTest, MissingDeviceKeyIsAnErrorNotAnException) {
  NullVqpBed nb(2, Config(Scheme::kSpray, 2));
  ASSERT_TRUE(nb.status().ok());
  const uint32_t partial[] = {0x55, 0};
  auto h = nb.vqp().AddLocalKeys(partial);
  ASSERT_TRUE(h.ok());
  VirtualSendWr wr = nb.Write(1, 100);
  wr.local_keys = *h;
  const common::Status s = nb.vqp().PostSend(wr);
  EXPECT_EQ(s.code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("null1"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(nb.vqp().pending_sends(), 0u);
  const uint32_t wrong_count[] = {1, 2, 3};
  EXPECT_FALSE(nb.vqp().AddLocalKeys(wrong_count).ok());
}

// Fragment_size defaults to 512 KiB and must lie in [4 KiB, 1 GiB].
TEST(GapRegressionTest, FragmentSizeDefaultAndRange) {
  EXPECT_EQ(VirtualQpConfig{}.fragment_size, 512u * 1024);
  for (uint64_t bad :
       {uint64_t{0}, uint64_t{100}, uint64_t{4095}, uint64_t{(1u << 30) + 1}, ~uint64_t{0}}) {
    VirtualQpConfig c;
    c.fragment_size = bad;
    EXPECT_EQ(ValidateConfig(c).code(), common::StatusCode::kInvalidArgument) << bad;
  }
  testing::NullDevice d(0);
  auto pd = d.AllocPd();
  verbs::Device* devs[] = {&d};
  auto cq = VirtualCq::Create(devs, 1024);
  ASSERT_TRUE(cq.ok());
  verbs::ProtectionDomain* pds[] = {pd->get()};
  VirtualQpConfig c;
  c.fragment_size = 100;
  EXPECT_EQ(VirtualQp::Create(**cq, pds, c).status().code(), common::StatusCode::kInvalidArgument);
}

// VQPs come only from the factory and are neither copied nor moved.
TEST(GapRegressionTest, CreatedOnlyByFactoryAndNotCopyable) {
  static_assert(!std::is_copy_constructible_v<VirtualQp>);
  static_assert(!std::is_copy_assignable_v<VirtualQp>);
  static_assert(!std::is_move_constructible_v<VirtualQp>);
  static_assert(!std::is_default_constructible_v<VirtualQp>);
  static_assert(!std::is_copy_constructible_v<VirtualCq>);
  NullVqpBed nb(1, Config(Scheme::kSpray, 2));
  EXPECT_TRUE(nb.status().ok());
}

// One data QP means one physical QP: no notify or message QP.
TEST(GapRegressionTest, SingleQpHasNoExtraQp) {
  NullVqpBed single(1, Config(Scheme::kSpray, 1));
  ASSERT_TRUE(single.status().ok());
  EXPECT_EQ(single.vqp().num_physical_qps(), 1);
  EXPECT_EQ(single.device(0).qps().size(), 2u) << "this VQP's one QP and its peer's";
  NullVqpBed multi(1, Config(Scheme::kDqplb, 4));
  ASSERT_TRUE(multi.status().ok());
  EXPECT_EQ(multi.vqp().num_physical_qps(), 5) << "4 data QPs + the message QP";
}

// Constants follow kName (compile-time check of the names the code uses).
TEST(GapRegressionTest, ConstantsAreNamedKName) {
  EXPECT_EQ(kMinFragmentSize, 4096u);
  EXPECT_EQ(kMaxFragmentSize, 1u << 30);
  EXPECT_EQ(kDefaultFragmentSize, 512u * 1024);
  EXPECT_EQ(kMaxDataQps, 128u);
}

}  // namespace
}  // namespace braid::vqp
