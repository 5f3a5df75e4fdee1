// Receiving over the TCP link: a bulk payload is read from the socket straight into the memory it
// lands in, not into the connection's buffer and copied from there (a second copy of every byte
// on the receiving host). Only the bytes that share a read with headers go through the buffer.
// Small payloads are read many frames at a time; a connection that switches between the two
// places every byte where it belongs.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

constexpr size_t kBuffer = 16 << 20;

class TcpDirectPlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (size_t side = 0; side < 2; ++side) {
      const char* name = side == 0 ? "soft0" : "soft1";
      devices_.push_back(std::move(provider_.OpenDevice(name)).value());
      pds_.push_back(std::move(devices_.back()->AllocPd()).value());
      cqs_.push_back(std::move(devices_.back()->CreateCq(1024)).value());
      memory_[side].resize(kBuffer);
      for (size_t i = 0; i < kBuffer; ++i) {
        memory_[side][i] = static_cast<uint8_t>((i * 131 + side * 7 + i / 4093) & 0xFF);
      }
      mrs_.push_back(
          std::move(pds_.back()->RegisterMemory(memory_[side].data(), kBuffer, 0xF)).value());
    }
    for (int q = 0; q < 2; ++q) {  // two QP pairs: they share one connection
      for (size_t side = 0; side < 2; ++side) {
        verbs::QpCaps caps;
        caps.max_send_wr = 256;
        qps_[side].push_back(
            std::move(pds_[side]->CreateQp({cqs_[side].get(), cqs_[side].get(), caps, false}))
                .value());
      }
      ASSERT_TRUE(testing::ConnectRc(*qps_[0].back(), devices_[0]->info(), *qps_[1].back(),
                                     devices_[1]->info(), {})
                      .ok());
    }
  }

  // Soft0 writes [offset, offset + length) of its memory to the same place in soft1's, on QP `q`.
  void Write(int q, uint64_t offset, uint32_t length, uint64_t id) {
    ASSERT_TRUE(testing::PostRdma(*qps_[0][static_cast<size_t>(q)], IBV_WR_RDMA_WRITE,
                                  Address(0, offset), length, mrs_[0]->lkey(), Address(1, offset),
                                  mrs_[1]->rkey(), id)
                    .ok());
    ++posted_;
  }
  uint64_t Address(size_t side, uint64_t offset) {
    return reinterpret_cast<uint64_t>(memory_[side].data()) + offset;
  }
  // Polls both sides until every posted WRITE has completed successfully at soft0.
  bool AwaitAll() {
    ibv_wc wc[32];
    for (int i = 0; i < 20000000 && done_ < posted_; ++i) {
      (void)cqs_[1]->Poll(wc);  // the target makes progress too
      auto n = cqs_[0]->Poll(wc);
      if (!n.ok()) return false;
      for (int k = 0; k < *n; ++k) {
        EXPECT_EQ(wc[k].status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc[k].status);
        ++done_;
      }
    }
    return done_ == posted_;
  }
  bool Same(uint64_t offset, uint64_t length) {
    return std::memcmp(memory_[0].data() + offset, memory_[1].data() + offset, length) == 0;
  }

  TcpFabric fabric_{TcpFabricOptions{.port = testing::TestPort(10)}};
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<uint8_t> memory_[2];
  std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs_;
  std::vector<std::unique_ptr<verbs::Qp>> qps_[2];
  uint64_t posted_ = 0, done_ = 0;
};

TEST_F(TcpDirectPlacementTest, BulkWritesAreReadIntoPlaceNotCopiedThroughTheBuffer) {
  constexpr uint32_t kMiB = 1 << 20;
  for (int round = 0; round < 4; ++round) {  // 64 MiB, 16 in flight on one QP
    for (uint64_t i = 0; i < 16; ++i) Write(0, i * kMiB, kMiB, i);
    ASSERT_TRUE(AwaitAll()) << done_ << " of " << posted_ << " completed";
  }
  EXPECT_TRUE(Same(0, kBuffer));
  const TcpFabricStats& s = fabric_.stats();
  std::printf("64 MiB of 1 MiB WRITEs: %lu payload bytes placed, %lu through the buffer\n",
              static_cast<unsigned long>(s.payload_bytes_placed),
              static_cast<unsigned long>(s.payload_bytes_buffered));
  EXPECT_EQ(s.payload_bytes_placed + s.payload_bytes_buffered, uint64_t{64} * kMiB);
  // Through the buffer: only the bytes read with the headers (and a segment's end too short to be
  // worth a read of its own): 0.25 % here, 6.4 % when a read after the headers filled the buffer.
  EXPECT_LT(s.payload_bytes_buffered, s.payload_bytes_placed / 100)
      << "bulk payloads were read into the connection's buffer and copied from it";
}

TEST_F(TcpDirectPlacementTest, AConnectionSwitchingBetweenSmallAndBulkPayloadsPlacesEveryByte) {
  // Two QPs on one connection, small and bulk WRITEs mixed, odd lengths and offsets: each write
  // lands in its own slice of a 16 MiB buffer.
  const uint32_t lengths[] = {100, 4096, 1 << 20, 9000, 1, 300000, 8191, 8192, 65537, 2 << 20};
  std::vector<std::pair<uint64_t, uint32_t>> writes;
  uint64_t at = 0, total = 0;
  for (int round = 0; round < 3; ++round) {
    for (uint32_t length : lengths) {
      const uint32_t len = length + static_cast<uint32_t>(round) * 3;
      Write(static_cast<int>(writes.size() % 2), at, len, writes.size());
      writes.emplace_back(at, len);
      total += len;
      at += len + 13;  // a gap nothing writes
    }
  }
  ASSERT_LE(at, kBuffer);
  const std::vector<uint8_t> before = memory_[1];
  ASSERT_TRUE(AwaitAll()) << done_ << " of " << posted_ << " completed";
  for (const auto& [offset, length] : writes) {
    EXPECT_TRUE(Same(offset, length)) << length << " bytes at " << offset;
    EXPECT_EQ(std::memcmp(memory_[1].data() + offset + length, before.data() + offset + length, 13),
              0)
        << "the gap after " << length << " bytes at " << offset << " was written";
  }
  const TcpFabricStats& s = fabric_.stats();
  EXPECT_EQ(s.payload_bytes_placed + s.payload_bytes_buffered, total);
}

}  // namespace
}  // namespace braid::soft
