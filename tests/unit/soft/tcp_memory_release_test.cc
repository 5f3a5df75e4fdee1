// Over TCP the link sends from and receives into the application's memory directly, and a
// message can take many progress passes. Once memory goes back to the application (its WRs were
// flushed by the error state, or its region was deregistered) the link must not touch it again,
// whatever it still holds queued or half-received: an agent unmaps a region right after
// deregistering it. (Found as engine-thread segfaults in memcpy during link flaps and
// cancellations: a link finishing a segment from, or placing a payload into, unmapped memory.)
// Each test overwrites the memory with a canary after it goes back and checks that the link
// neither sent the canary nor wrote over it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/soft_pair.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

constexpr uint32_t kLen = 64 << 20;  // many progress passes to move over loopback
constexpr uint8_t kCanary = 0xCC;

class TcpMemoryRelease : public ::testing::Test {
 protected:
  void SetUp() override {
    const common::Status s = p_.Open(rc_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // q0 reads buf1 into buf0 (READ) or writes buf0 into buf1 (WRITE).
  void Post(ibv_wr_opcode opcode) {
    ASSERT_TRUE(testing::PostRdma(*p_.q0, opcode, reinterpret_cast<uint64_t>(p_.buf0.data()), kLen,
                                  p_.mr0->lkey(), reinterpret_cast<uint64_t>(p_.buf1.data()),
                                  p_.mr1->rkey(), 1)
                    .ok());
  }

  // Drives both ends until q0's WR completes; its status.
  ibv_wc_status Finish() {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 4000000; ++round) {
      auto n = p_.cq0->Poll(wcs);
      if (!n.ok()) return IBV_WC_GENERAL_ERR;
      if (*n > 0) return wcs[0].status;
      (void)p_.cq1->Poll(wcs);
    }
    return IBV_WC_GENERAL_ERR;
  }

  // Drives both ends until `dst` holds part of the payload (its first byte arrived, not its last).
  bool UntilHalfPlaced(const std::vector<uint8_t>& dst) {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 4000000; ++round) {
      if (dst.front() != 0 && dst.back() == 0) return true;
      if (dst.back() != 0) return false;
      (void)p_.cq0->Poll(wcs);
      (void)p_.cq1->Poll(wcs);
    }
    return false;
  }

  // A few more passes, for anything the link still holds.
  void Drain() {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 2000; ++round) {
      (void)p_.cq0->Poll(wcs);
      (void)p_.cq1->Poll(wcs);
    }
  }

  testing::RcOptions rc_;
  TcpFabric fabric_{TcpFabricOptions{.port = testing::TestPort(9)}};
  testing::SoftPair p_{&fabric_, kLen};
};

// ACK timeout 0.5 ms: a held frame is retransmitted within a few passes.
class TcpMemoryReleaseFastRetry : public TcpMemoryRelease {
 protected:
  TcpMemoryReleaseFastRetry() { rc_.timeout = 7; }
};

bool All(const std::vector<uint8_t>& v, uint8_t value) {
  return std::all_of(v.begin(), v.end(), [value](uint8_t b) { return b == value; });
}

TEST_F(TcpMemoryRelease, FramesOfAQpInErrorNeverLeaveAfterItsWrsAreFlushed) {
  ASSERT_TRUE(fabric_.HoldQp(*p_.q0, true).ok());  // as a link that is down: the WRITE waits
  Post(IBV_WR_RDMA_WRITE);
  Drain();
  ASSERT_TRUE(p_.q0->ToError().ok());
  EXPECT_EQ(Finish(), IBV_WC_WR_FLUSH_ERR);
  std::fill(p_.buf0.begin(), p_.buf0.end(), kCanary);  // flushed: the application's again
  ASSERT_TRUE(fabric_.HoldQp(*p_.q0, false).ok());
  Drain();
  EXPECT_GE(fabric_.stats().frames_quiesced, 1u);
  EXPECT_TRUE(All(p_.buf1, 0)) << "the WRITE went out after its WR was flushed";
}

TEST_F(TcpMemoryRelease, InboundPayloadStopsWhenItsQpEntersError) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_TRUE(UntilHalfPlaced(p_.buf1));
  ASSERT_TRUE(p_.q1->ToError().ok());
  std::fill(p_.buf1.begin(), p_.buf1.end(), kCanary);
  Drain();
  EXPECT_TRUE(All(p_.buf1, kCanary)) << "payload placed after the QP entered the error state";
}

TEST_F(TcpMemoryRelease, ReadResponseFromADeregisteredRegionSendsTheBytesItHadThen) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_EQ(Finish(), IBV_WC_SUCCESS);  // buf1 = the pattern
  std::fill(p_.buf0.begin(), p_.buf0.end(), 0);
  ASSERT_TRUE(fabric_.HoldQp(*p_.q1, true).ok());  // the response waits in q1's queue
  Post(IBV_WR_RDMA_READ);
  Drain();
  p_.mr1.reset();
  std::fill(p_.buf1.begin(), p_.buf1.end(), kCanary);
  ASSERT_TRUE(fabric_.HoldQp(*p_.q1, false).ok());
  EXPECT_EQ(Finish(), IBV_WC_SUCCESS);
  EXPECT_GE(fabric_.stats().frames_copied, 1u);
  EXPECT_EQ(std::count(p_.buf0.begin(), p_.buf0.end(), kCanary), 0)
      << "the response carried bytes written after the region was deregistered";
  EXPECT_EQ(p_.buf0[kLen - 1], static_cast<uint8_t>(1 + (kLen - 1) % 199));
}

TEST_F(TcpMemoryRelease, WriteIntoADeregisteredRegionIsCutOffAndFails) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_TRUE(UntilHalfPlaced(p_.buf1));
  p_.mr1.reset();
  std::fill(p_.buf1.begin(), p_.buf1.end(), kCanary);
  EXPECT_EQ(Finish(), IBV_WC_REM_ACCESS_ERR);
  EXPECT_EQ(fabric_.stats().payloads_cut, 1u);
  Drain();
  EXPECT_TRUE(All(p_.buf1, kCanary)) << "payload placed after its region was deregistered";
}

TEST_F(TcpMemoryRelease, ReadResponseIntoADeregisteredRegionFailsTheRead) {
  std::fill(p_.buf1.begin(), p_.buf1.end(), 0x5A);
  std::fill(p_.buf0.begin(), p_.buf0.end(), 0);
  Post(IBV_WR_RDMA_READ);
  ASSERT_TRUE(UntilHalfPlaced(p_.buf0));
  p_.mr0.reset();
  std::fill(p_.buf0.begin(), p_.buf0.end(), kCanary);
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR);
  Drain();
  EXPECT_TRUE(All(p_.buf0, kCanary)) << "response placed after its region was deregistered";
}

TEST_F(TcpMemoryRelease, ReadResponseArrivingAfterItsRegionWasDeregisteredFailsTheRead) {
  std::fill(p_.buf1.begin(), p_.buf1.end(), 0x5A);
  std::fill(p_.buf0.begin(), p_.buf0.end(), 0);
  ASSERT_TRUE(fabric_.HoldQp(*p_.q1, true).ok());  // the response waits in q1's queue
  Post(IBV_WR_RDMA_READ);
  Drain();
  p_.mr0.reset();
  std::fill(p_.buf0.begin(), p_.buf0.end(), kCanary);
  ASSERT_TRUE(fabric_.HoldQp(*p_.q1, false).ok());
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR);
  Drain();
  EXPECT_TRUE(All(p_.buf0, kCanary)) << "response placed into a region deregistered before it came";
}

TEST_F(TcpMemoryReleaseFastRetry, RetransmissionFromADeregisteredRegionFailsTheWr) {
  ASSERT_TRUE(fabric_.HoldQp(*p_.q0, true).ok());  // no ACK comes: the WRITE is sent again
  Post(IBV_WR_RDMA_WRITE);
  p_.mr0.reset();
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR) << "a retransmission read a region that is gone";
}

}  // namespace
}  // namespace braid::soft
