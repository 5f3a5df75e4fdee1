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

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

constexpr uint32_t kLen = 64 << 20;  // many progress passes to move over loopback
constexpr uint8_t kCanary = 0xCC;

class TcpMemoryRelease : public ::testing::Test {
 protected:
  void SetUp() override {
    d0_ = std::move(provider_.OpenDevice("soft0")).value();
    d1_ = std::move(provider_.OpenDevice("soft1")).value();
    pd0_ = std::move(d0_->AllocPd()).value();
    pd1_ = std::move(d1_->AllocPd()).value();
    cq0_ = std::move(d0_->CreateCq(64)).value();
    cq1_ = std::move(d1_->CreateCq(64)).value();
    // 1..199: never 0 (not yet placed) nor the canary.
    for (size_t i = 0; i < buf0_.size(); ++i) buf0_[i] = static_cast<uint8_t>(1 + i % 199);
    mr0_ = std::move(pd0_->RegisterMemory(buf0_.data(), buf0_.size(), 0xF)).value();
    mr1_ = std::move(pd1_->RegisterMemory(buf1_.data(), buf1_.size(), 0xF)).value();
    q0_ = std::move(pd0_->CreateQp({cq0_.get(), cq0_.get(), {}, false})).value();
    q1_ = std::move(pd1_->CreateQp({cq1_.get(), cq1_.get(), {}, false})).value();
    ASSERT_TRUE(testing::ConnectRc(*q0_, d0_->info(), *q1_, d1_->info(), rc_).ok());
  }

  // q0 reads buf1 into buf0 (READ) or writes buf0 into buf1 (WRITE).
  void Post(ibv_wr_opcode opcode) {
    ASSERT_TRUE(testing::PostRdma(*q0_, opcode, reinterpret_cast<uint64_t>(buf0_.data()), kLen,
                                  mr0_->lkey(), reinterpret_cast<uint64_t>(buf1_.data()),
                                  mr1_->rkey(), 1)
                    .ok());
  }

  // Drives both ends until q0's WR completes; its status.
  ibv_wc_status Finish() {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 4000000; ++round) {
      auto n = cq0_->Poll(wcs);
      if (!n.ok()) return IBV_WC_GENERAL_ERR;
      if (*n > 0) return wcs[0].status;
      (void)cq1_->Poll(wcs);
    }
    return IBV_WC_GENERAL_ERR;
  }

  // Drives both ends until `dst` holds part of the payload (its first byte arrived, not its last).
  bool UntilHalfPlaced(const std::vector<uint8_t>& dst) {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 4000000; ++round) {
      if (dst.front() != 0 && dst.back() == 0) return true;
      if (dst.back() != 0) return false;
      (void)cq0_->Poll(wcs);
      (void)cq1_->Poll(wcs);
    }
    return false;
  }

  // A few more passes, for anything the link still holds.
  void Drain() {
    std::vector<ibv_wc> wcs(4);
    for (int round = 0; round < 2000; ++round) {
      (void)cq0_->Poll(wcs);
      (void)cq1_->Poll(wcs);
    }
  }

  testing::RcOptions rc_;
  TcpFabric fabric_{TcpFabricOptions{.port = testing::TestPort(9)}};
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::unique_ptr<verbs::Device> d0_, d1_;
  std::unique_ptr<verbs::ProtectionDomain> pd0_, pd1_;
  std::unique_ptr<verbs::Cq> cq0_, cq1_;
  std::vector<uint8_t> buf0_ = std::vector<uint8_t>(kLen);
  std::vector<uint8_t> buf1_ = std::vector<uint8_t>(kLen, 0);
  std::unique_ptr<verbs::MemoryRegion> mr0_, mr1_;
  std::unique_ptr<verbs::Qp> q0_, q1_;
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
  ASSERT_TRUE(fabric_.HoldQp(*q0_, true).ok());  // as a link that is down: the WRITE waits
  Post(IBV_WR_RDMA_WRITE);
  Drain();
  ASSERT_TRUE(q0_->ToError().ok());
  EXPECT_EQ(Finish(), IBV_WC_WR_FLUSH_ERR);
  std::fill(buf0_.begin(), buf0_.end(), kCanary);  // flushed: the application's again
  ASSERT_TRUE(fabric_.HoldQp(*q0_, false).ok());
  Drain();
  EXPECT_GE(fabric_.stats().frames_quiesced, 1u);
  EXPECT_TRUE(All(buf1_, 0)) << "the WRITE went out after its WR was flushed";
}

TEST_F(TcpMemoryRelease, InboundPayloadStopsWhenItsQpEntersError) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_TRUE(UntilHalfPlaced(buf1_));
  ASSERT_TRUE(q1_->ToError().ok());
  std::fill(buf1_.begin(), buf1_.end(), kCanary);
  Drain();
  EXPECT_TRUE(All(buf1_, kCanary)) << "payload placed after the QP entered the error state";
}

TEST_F(TcpMemoryRelease, ReadResponseFromADeregisteredRegionSendsTheBytesItHadThen) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_EQ(Finish(), IBV_WC_SUCCESS);  // buf1 = the pattern
  std::fill(buf0_.begin(), buf0_.end(), 0);
  ASSERT_TRUE(fabric_.HoldQp(*q1_, true).ok());  // the response waits in q1's queue
  Post(IBV_WR_RDMA_READ);
  Drain();
  mr1_.reset();
  std::fill(buf1_.begin(), buf1_.end(), kCanary);
  ASSERT_TRUE(fabric_.HoldQp(*q1_, false).ok());
  EXPECT_EQ(Finish(), IBV_WC_SUCCESS);
  EXPECT_GE(fabric_.stats().frames_copied, 1u);
  EXPECT_EQ(std::count(buf0_.begin(), buf0_.end(), kCanary), 0)
      << "the response carried bytes written after the region was deregistered";
  EXPECT_EQ(buf0_[kLen - 1], static_cast<uint8_t>(1 + (kLen - 1) % 199));
}

TEST_F(TcpMemoryRelease, WriteIntoADeregisteredRegionIsCutOffAndFails) {
  Post(IBV_WR_RDMA_WRITE);
  ASSERT_TRUE(UntilHalfPlaced(buf1_));
  mr1_.reset();
  std::fill(buf1_.begin(), buf1_.end(), kCanary);
  EXPECT_EQ(Finish(), IBV_WC_REM_ACCESS_ERR);
  EXPECT_EQ(fabric_.stats().payloads_cut, 1u);
  Drain();
  EXPECT_TRUE(All(buf1_, kCanary)) << "payload placed after its region was deregistered";
}

TEST_F(TcpMemoryRelease, ReadResponseIntoADeregisteredRegionFailsTheRead) {
  std::fill(buf1_.begin(), buf1_.end(), 0x5A);
  std::fill(buf0_.begin(), buf0_.end(), 0);
  Post(IBV_WR_RDMA_READ);
  ASSERT_TRUE(UntilHalfPlaced(buf0_));
  mr0_.reset();
  std::fill(buf0_.begin(), buf0_.end(), kCanary);
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR);
  Drain();
  EXPECT_TRUE(All(buf0_, kCanary)) << "response placed after its region was deregistered";
}

TEST_F(TcpMemoryRelease, ReadResponseArrivingAfterItsRegionWasDeregisteredFailsTheRead) {
  std::fill(buf1_.begin(), buf1_.end(), 0x5A);
  std::fill(buf0_.begin(), buf0_.end(), 0);
  ASSERT_TRUE(fabric_.HoldQp(*q1_, true).ok());  // the response waits in q1's queue
  Post(IBV_WR_RDMA_READ);
  Drain();
  mr0_.reset();
  std::fill(buf0_.begin(), buf0_.end(), kCanary);
  ASSERT_TRUE(fabric_.HoldQp(*q1_, false).ok());
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR);
  Drain();
  EXPECT_TRUE(All(buf0_, kCanary)) << "response placed into a region deregistered before it came";
}

TEST_F(TcpMemoryReleaseFastRetry, RetransmissionFromADeregisteredRegionFailsTheWr) {
  ASSERT_TRUE(fabric_.HoldQp(*q0_, true).ok());  // no ACK comes: the WRITE is sent again
  Post(IBV_WR_RDMA_WRITE);
  mr0_.reset();
  EXPECT_EQ(Finish(), IBV_WC_LOC_PROT_ERR) << "a retransmission read a region that is gone";
}

}  // namespace
}  // namespace braid::soft
