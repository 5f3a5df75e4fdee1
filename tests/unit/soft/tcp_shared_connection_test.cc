// All QP pairs between two soft NICs share one TCP connection, as QPs share a port: the number of
// descriptors does not grow with QPs, and idle QPs cost a progress pass nothing; the QPs take turns in segments (a bulk transfer does not hold
// another QP's message behind it); breaking or destroying one QP, even mid-segment, leaves the
// others on the connection serving; and the connection closes with its last QP.
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

class TcpSharedConnectionTest : public ::testing::Test {
 protected:
  struct Pair {
    std::unique_ptr<verbs::Qp> a, b;  // a on soft0 (or soft1 when flipped), b on the other
    int side_a = 0;
  };

  void SetUp() override {
    for (const char* name : {"soft0", "soft1"}) {
      devices_.push_back(std::move(provider_.OpenDevice(name)).value());
      pds_.push_back(std::move(devices_.back()->AllocPd()).value());
      cqs_.push_back(std::move(devices_.back()->CreateCq(4096)).value());
    }
    src_.resize(kBytes);
    dst_.assign(kBytes, 0);
    for (size_t i = 0; i < src_.size(); ++i) src_[i] = static_cast<uint8_t>(i * 13 + i / 4093);
    mrs_.push_back(std::move(pds_[0]->RegisterMemory(src_.data(), src_.size(), 0xF)).value());
    mrs_.push_back(std::move(pds_[1]->RegisterMemory(dst_.data(), dst_.size(), 0xF)).value());
    mrs_.push_back(std::move(pds_[1]->RegisterMemory(src_.data(), src_.size(), 0xF)).value());
    mrs_.push_back(std::move(pds_[0]->RegisterMemory(dst_.data(), dst_.size(), 0xF)).value());
  }

  // A connected pair; `flip`: its first QP is on soft1, writing to soft0.
  Pair Connect(bool flip = false, const testing::RcOptions& rc = {}) {
    Pair p;
    p.side_a = flip ? 1 : 0;
    const int side_b = 1 - p.side_a;
    p.a = std::move(pds_[p.side_a]->CreateQp({cqs_[p.side_a].get(), cqs_[p.side_a].get(), {}, false}))
              .value();
    p.b = std::move(pds_[side_b]->CreateQp({cqs_[side_b].get(), cqs_[side_b].get(), {}, false}))
              .value();
    EXPECT_TRUE(testing::ConnectRc(*p.a, devices_[p.side_a]->info(), *p.b,
                                   devices_[side_b]->info(), rc)
                    .ok());
    return p;
  }
  // Posts a WRITE of src_[offset, offset + len) to the same range of dst_ from `p.a`.
  void Write(const Pair& p, uint64_t offset, uint32_t len, uint64_t wr_id) {
    const uint32_t lkey = mrs_[p.side_a == 0 ? 0 : 2]->lkey();
    const uint32_t rkey = mrs_[p.side_a == 0 ? 1 : 3]->rkey();
    ASSERT_TRUE(testing::PostRdma(*p.a, IBV_WR_RDMA_WRITE,
                                  reinterpret_cast<uint64_t>(src_.data()) + offset, len, lkey,
                                  reinterpret_cast<uint64_t>(dst_.data()) + offset, rkey, wr_id)
                    .ok());
  }
  // Polls both CQs until `want` send completions arrived (in the order they came).
  std::vector<ibv_wc> Await(size_t want) {
    std::vector<ibv_wc> got;
    std::vector<ibv_wc> wcs(64);
    for (int round = 0; round < 5000000 && got.size() < want; ++round) {
      for (auto& cq : cqs_) {
        auto n = cq->Poll(wcs);
        EXPECT_TRUE(n.ok());
        for (int i = 0; i < *n; ++i) got.push_back(wcs[i]);
      }
    }
    return got;
  }
  void Pump(int rounds = 2000) {
    std::vector<ibv_wc> wcs(16);
    for (int i = 0; i < rounds; ++i) {
      for (auto& cq : cqs_) (void)cq->Poll(wcs);
    }
  }

  static constexpr size_t kBytes = 64 << 20;
  TcpFabric fabric_{TcpFabricOptions{.port = testing::TestPort(8)}};
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<uint8_t> src_, dst_;
  std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs_;
};

TEST_F(TcpSharedConnectionTest, QpPairsBetweenTwoNicsShareOneConnection) {
  const int fds_before = OpenFds();
  std::vector<Pair> pairs;
  constexpr int kPairs = 64;
  for (int i = 0; i < kPairs; ++i) pairs.push_back(Connect(/*flip=*/i % 2 == 1));
  constexpr uint32_t kLen = 64 << 10;
  for (int i = 0; i < kPairs; ++i) Write(pairs[i], uint64_t{kLen} * i, kLen, i);
  const std::vector<ibv_wc> wcs = Await(kPairs);
  ASSERT_EQ(wcs.size(), size_t{kPairs});
  for (const ibv_wc& wc : wcs) EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc.wr_id;
  EXPECT_EQ(std::memcmp(src_.data(), dst_.data(), size_t{kLen} * kPairs), 0);
  // soft0 (127.0.0.1) calls soft1 whichever QP of a pair was created first: one connection, two
  // descriptors (its two ends in this process).
  EXPECT_EQ(fabric_.stats().connections_made, 1u);
  EXPECT_EQ(fabric_.stats().connections_accepted, 1u);
  EXPECT_EQ(fabric_.stats().attaches_accepted, uint64_t{kPairs});
  EXPECT_EQ(OpenFds(), fds_before + 2);
  // Acknowledged, the QPs leave their devices' timer lists at the next pass: an idle QP costs a
  // progress pass nothing.
  Pump(1);
  for (const auto& d : devices_) EXPECT_EQ(static_cast<SoftDevice&>(*d).armed_timers(), 0u);
  // It closes with the last QP pair.
  pairs.clear();
  Pump();
  EXPECT_EQ(OpenFds(), fds_before);
}

// A QP's 32 MiB write is cut into segments; another QP's small write, posted after it, goes
// between two of them and completes first. Sent frame by frame, it would wait for all 32 MiB.
TEST_F(TcpSharedConnectionTest, AnotherQpsSmallMessageIsNotHeldBehindABulkTransfer) {
  Pair bulk = Connect();
  Pair small = Connect();
  Write(small, 0, 64, 3);  // both pairs attached and idle first
  Write(bulk, 0, 64, 4);
  ASSERT_EQ(Await(2).size(), 2u);
  Write(bulk, 0, 32 << 20, 1);
  Write(small, 48 << 20, 4096, 2);
  const std::vector<ibv_wc> wcs = Await(2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 2u);
  EXPECT_EQ(wcs[1].wr_id, 1u);
  for (const ibv_wc& wc : wcs) EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(src_.data(), dst_.data(), 32 << 20), 0);
  EXPECT_EQ(std::memcmp(src_.data() + (48 << 20), dst_.data() + (48 << 20), 4096), 0);
}

TEST_F(TcpSharedConnectionTest, BreakingOneQpLeavesTheOthersOnItsConnectionServing) {
  testing::RcOptions rc;
  rc.timeout = 8;  // 1 ms
  rc.retry_cnt = 2;
  std::vector<Pair> pairs;
  for (int i = 0; i < 4; ++i) pairs.push_back(Connect(false, rc));
  ASSERT_TRUE(fabric_.BreakQp(*pairs[0].a).ok());
  for (int i = 0; i < 4; ++i) Write(pairs[i], uint64_t{4096} * i, 4096, i);
  const std::vector<ibv_wc> wcs = Await(4);
  ASSERT_EQ(wcs.size(), 4u);
  for (const ibv_wc& wc : wcs) {
    EXPECT_EQ(wc.status, wc.wr_id == 0 ? IBV_WC_RETRY_EXC_ERR : IBV_WC_SUCCESS) << wc.wr_id;
  }
  EXPECT_EQ(std::memcmp(src_.data() + 4096, dst_.data() + 4096, 3 * 4096), 0);
  // The peer of the broken QP learnt it too: what it sends fails the same way.
  ASSERT_TRUE(testing::PostRdma(*pairs[0].b, IBV_WR_RDMA_WRITE,
                                reinterpret_cast<uint64_t>(dst_.data()), 64, mrs_[1]->lkey(),
                                reinterpret_cast<uint64_t>(src_.data()), mrs_[0]->rkey(), 9)
                  .ok());
  const std::vector<ibv_wc> peer = Await(1);
  ASSERT_EQ(peer.size(), 1u);
  EXPECT_EQ(peer[0].wr_id, 9u);
  EXPECT_EQ(peer[0].status, IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(fabric_.stats().connections_made, 1u);
}

// A QP destroyed while a segment of its bulk write is half sent: the connection finishes that
// segment (the peer drops it with the pair), so the byte stream stays whole for the others.
TEST_F(TcpSharedConnectionTest, AQpDestroyedMidSegmentLeavesTheStreamWholeForTheOthers) {
  Pair bulk = Connect();
  Pair other = Connect();
  Write(bulk, 0, 32 << 20, 1);
  Pump(3);  // part of it is on its way
  bulk.a.reset();
  ASSERT_EQ(fabric_.stats().segments_orphaned, 1u);  // the test's premise: it left mid-segment
  for (int i = 0; i < 16; ++i) Write(other, (40 << 20) + uint64_t{65536} * i, 65536, 100 + i);
  const std::vector<ibv_wc> wcs = Await(16);
  ASSERT_EQ(wcs.size(), 16u);
  for (size_t i = 0; i < wcs.size(); ++i) {
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS);
    EXPECT_EQ(wcs[i].wr_id, 100 + i);
  }
  EXPECT_EQ(std::memcmp(src_.data() + (40 << 20), dst_.data() + (40 << 20), 16 * 65536), 0);
  EXPECT_EQ(fabric_.stats().frames_refused, 0u);
}

}  // namespace
}  // namespace braid::soft
