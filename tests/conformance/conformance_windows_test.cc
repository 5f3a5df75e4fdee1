// Provider conformance: type-2 memory windows, the per-peer grant of remote access. B's memory is
// registered for local access and window binding only, so its region's own rkey reaches nothing;
// a window bound through one of B's QPs opens a range of it to the peer of that QP alone, with
// the rights of the bind, until it is invalidated.
#include <algorithm>
#include <cstring>

#include "tests/conformance/conformance_fixture.h"

namespace braid::testing {
namespace {

constexpr size_t kRegionOffset = 64
                                 << 10;  // B's window-only region: [64 KiB, 128 KiB) of its buffer
constexpr size_t kRegionBytes = 64 << 10;
constexpr unsigned int kRemoteRw = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;

class ConformanceWindowTest : public ConformanceTest {
 protected:
  void SetUp() override {
    ConformanceTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    if (!ep(1).device->info().memory_windows) GTEST_SKIP() << "the device has no memory windows";
    auto mr = ep(1).pd->RegisterMemory(ep(1).data() + kRegionOffset, kRegionBytes,
                                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
    ASSERT_TRUE(mr.ok()) << mr.status().ToString();
    region_ = std::move(mr).value();
  }
  void TearDown() override {
    pairs_.clear();  // QPs before the windows and the region
    windows_.clear();
    region_.reset();
    ConformanceTest::TearDown();
  }

  uint64_t RegionAddr(size_t offset) { return ep(1).addr(kRegionOffset + offset); }
  uint8_t* RegionBytes(size_t offset) { return ep(1).data() + kRegionOffset + offset; }

  verbs::MemoryWindow& NewWindow() {
    auto mw = ep(1).pd->AllocMw();
    EXPECT_TRUE(mw.ok()) << mw.status().ToString();
    windows_.push_back(std::move(mw).value());
    return *windows_.back();
  }

  // Posts a bind of `mw` over [offset, offset + length) of the region through B's QP of `p` with
  // key `rkey` and returns its completion.
  ibv_wc Bind(QpPair& p, verbs::MemoryWindow& mw, uint32_t rkey, size_t offset, size_t length,
              unsigned int access, uint64_t wr_id = 500) {
    ibv_send_wr wr{};
    wr.wr_id = wr_id;
    wr.opcode = IBV_WR_BIND_MW;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.bind_mw.mw = mw.handle();
    wr.bind_mw.rkey = rkey;
    wr.bind_mw.bind_info.mr = region_->handle();
    wr.bind_mw.bind_info.addr = RegionAddr(offset);
    wr.bind_mw.bind_info.length = length;
    wr.bind_mw.bind_info.mw_access_flags = access;
    ibv_send_wr* bad = nullptr;
    const common::Status posted = p.b->PostSend(&wr, &bad);
    EXPECT_TRUE(posted.ok()) << posted.ToString();
    return OneCompletion(*p.eb->send_cq);
  }
  ibv_wc Invalidate(QpPair& p, uint32_t rkey, uint64_t wr_id = 600) {
    ibv_send_wr wr{};
    wr.wr_id = wr_id;
    wr.opcode = IBV_WR_LOCAL_INV;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.invalidate_rkey = rkey;
    ibv_send_wr* bad = nullptr;
    const common::Status posted = p.b->PostSend(&wr, &bad);
    EXPECT_TRUE(posted.ok()) << posted.ToString();
    return OneCompletion(*p.eb->send_cq);
  }
  // A's WRITE (or READ) of `length` bytes at `offset` of the region with `rkey`: its status.
  ibv_wc_status Access(QpPair& p, ibv_wr_opcode op, size_t offset, uint32_t length, uint32_t rkey,
                       size_t local_offset = 0) {
    ibv_sge sge = p.ea->Sge(local_offset, length);
    const common::Status posted = PostSend(*p.a, op, &sge, 1, RegionAddr(offset), rkey, 77);
    EXPECT_TRUE(posted.ok()) << posted.ToString();
    return OneCompletion(*p.ea->send_cq).status;
  }
  ibv_wc OneCompletion(verbs::Cq& cq) {
    const std::vector<ibv_wc> wcs = Poll(cq, 1);
    EXPECT_EQ(wcs.size(), 1u);
    if (wcs.empty()) return ibv_wc{.wr_id = 0, .status = IBV_WC_GENERAL_ERR};
    return wcs[0];
  }
  void FillSource(QpPair& p, uint8_t first, size_t count) {
    for (size_t i = 0; i < count; ++i) p.ea->data()[i] = static_cast<uint8_t>(first + i);
  }
  bool RegionUntouched(size_t offset, size_t length) {
    return std::all_of(RegionBytes(offset), RegionBytes(offset + length),
                       [](uint8_t b) { return b == 0; });
  }

  std::unique_ptr<verbs::MemoryRegion> region_;
  std::vector<std::unique_ptr<verbs::MemoryWindow>> windows_;
};

TEST_P(ConformanceWindowTest, AWindowAnswersOnlyThePeerOfTheQpItWasBoundThrough) {
  QpPair& granted = Connect(0, 1);
  QpPair& other = Connect(0, 1);  // another of B's QPs, same PD
  QpPair& direct = Connect(0, 1);
  verbs::MemoryWindow& mw = NewWindow();
  const uint32_t rkey = ibv_inc_rkey(mw.handle()->rkey);
  const ibv_wc bound = Bind(granted, mw, rkey, 0, 4096, kRemoteRw, 501);
  ASSERT_EQ(bound.status, IBV_WC_SUCCESS) << ibv_wc_status_str(bound.status);
  EXPECT_EQ(bound.wr_id, 501u);
  EXPECT_EQ(bound.opcode, IBV_WC_BIND_MW);

  FillSource(granted, 1, 64);
  ASSERT_EQ(Access(granted, IBV_WR_RDMA_WRITE, 128, 64, rkey), IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(RegionBytes(128), granted.ea->data(), 64), 0);
  ASSERT_EQ(Access(granted, IBV_WR_RDMA_READ, 128, 64, rkey, 4096), IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(granted.ea->data() + 4096, granted.ea->data(), 64), 0);

  // The same key through another QP of B: refused, nothing written.
  EXPECT_EQ(Access(other, IBV_WR_RDMA_WRITE, 1024, 64, rkey), IBV_WC_REM_ACCESS_ERR);
  EXPECT_TRUE(RegionUntouched(1024, 64));
  // The region's own rkey: it grants no remote access at all.
  EXPECT_EQ(Access(direct, IBV_WR_RDMA_WRITE, 2048, 64, region_->rkey()), IBV_WC_REM_ACCESS_ERR);
  EXPECT_TRUE(RegionUntouched(2048, 64));
  // The granted peer is unaffected by the others' failures.
  FillSource(granted, 100, 64);
  EXPECT_EQ(Access(granted, IBV_WR_RDMA_WRITE, 256, 64, rkey), IBV_WC_SUCCESS);
  EXPECT_EQ(RegionBytes(256)[63], static_cast<uint8_t>(163));
}

TEST_P(ConformanceWindowTest, AWindowGrantsOnlyTheRightsOfItsBind) {
  QpPair& p = Connect(0, 1);
  verbs::MemoryWindow& mw = NewWindow();
  const uint32_t rkey = ibv_inc_rkey(mw.handle()->rkey);
  ASSERT_EQ(Bind(p, mw, rkey, 0, 4096, IBV_ACCESS_REMOTE_READ).status, IBV_WC_SUCCESS);
  RegionBytes(0)[0] = 42;
  ASSERT_EQ(Access(p, IBV_WR_RDMA_READ, 0, 64, rkey), IBV_WC_SUCCESS);
  EXPECT_EQ(p.ea->data()[0], 42);
  FillSource(p, 1, 64);
  EXPECT_EQ(Access(p, IBV_WR_RDMA_WRITE, 64, 64, rkey), IBV_WC_REM_ACCESS_ERR);
  EXPECT_TRUE(RegionUntouched(64, 64));
}

TEST_P(ConformanceWindowTest, AWindowGrantsOnlyItsRange) {
  QpPair& p = Connect(0, 1);
  verbs::MemoryWindow& mw = NewWindow();
  const uint32_t rkey = ibv_inc_rkey(mw.handle()->rkey);
  ASSERT_EQ(Bind(p, mw, rkey, 8192, 4096, kRemoteRw).status, IBV_WC_SUCCESS);
  FillSource(p, 1, 64);
  ASSERT_EQ(Access(p, IBV_WR_RDMA_WRITE, 8192 + 4096 - 64, 64, rkey), IBV_WC_SUCCESS);
  // 32 bytes inside the window, 32 past its end (the region goes on): refused whole.
  EXPECT_EQ(Access(p, IBV_WR_RDMA_WRITE, 8192 + 4096 - 32, 64, rkey), IBV_WC_REM_ACCESS_ERR);
  EXPECT_TRUE(RegionUntouched(8192 + 4096, 32));
}

// Revocation: once the invalidation completed, the peer's next access with the old key is a
// remote access error and nothing of it lands; a rebind with a new key opens the window again.
TEST_P(ConformanceWindowTest, AnInvalidatedWindowFailsThePeersNextAccessAtOnce) {
  QpPair& p = Connect(0, 1);
  verbs::MemoryWindow& mw = NewWindow();
  const uint32_t old_key = ibv_inc_rkey(mw.handle()->rkey);
  ASSERT_EQ(Bind(p, mw, old_key, 0, 4096, kRemoteRw).status, IBV_WC_SUCCESS);
  FillSource(p, 1, 64);
  ASSERT_EQ(Access(p, IBV_WR_RDMA_WRITE, 0, 64, old_key), IBV_WC_SUCCESS);

  const ibv_wc invalidated = Invalidate(p, old_key, 601);
  ASSERT_EQ(invalidated.status, IBV_WC_SUCCESS) << ibv_wc_status_str(invalidated.status);
  EXPECT_EQ(invalidated.wr_id, 601u);
  EXPECT_EQ(invalidated.opcode, IBV_WC_LOCAL_INV);

  const uint32_t new_key = ibv_inc_rkey(old_key);
  ASSERT_EQ(Bind(p, mw, new_key, 0, 4096, kRemoteRw).status, IBV_WC_SUCCESS);
  FillSource(p, 50, 64);
  ASSERT_EQ(Access(p, IBV_WR_RDMA_WRITE, 512, 64, new_key), IBV_WC_SUCCESS);
  EXPECT_EQ(RegionBytes(512)[0], 50);

  std::fill(RegionBytes(0), RegionBytes(4096), 0);
  EXPECT_EQ(Access(p, IBV_WR_RDMA_WRITE, 0, 64, old_key), IBV_WC_REM_ACCESS_ERR);
  EXPECT_TRUE(RegionUntouched(0, 4096)) << "written with a revoked key";
  EXPECT_EQ(p.a->state(), verbs::QpState::kError);
}

TEST_P(ConformanceWindowTest, ABindOverARegionWithoutBindRightsFails) {
  QpPair& p = Connect(0, 1);
  verbs::MemoryWindow& mw = NewWindow();
  ibv_send_wr wr{};
  wr.wr_id = 502;
  wr.opcode = IBV_WR_BIND_MW;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.bind_mw.mw = mw.handle();
  wr.bind_mw.rkey = ibv_inc_rkey(mw.handle()->rkey);
  wr.bind_mw.bind_info.mr = p.eb->mr->handle();  // the fixture's region: no IBV_ACCESS_MW_BIND
  wr.bind_mw.bind_info.addr = p.eb->addr(0);
  wr.bind_mw.bind_info.length = 4096;
  wr.bind_mw.bind_info.mw_access_flags = kRemoteRw;
  ibv_send_wr* bad = nullptr;
  ASSERT_OK(p.b->PostSend(&wr, &bad));
  const ibv_wc wc = OneCompletion(*p.eb->send_cq);
  EXPECT_EQ(wc.wr_id, 502u);
  EXPECT_EQ(wc.status, IBV_WC_MW_BIND_ERR) << ibv_wc_status_str(wc.status);
  // A bind error is a local error: the QP is in ERR and flushes what follows.
  const ibv_wc next = Invalidate(p, wr.bind_mw.rkey, 603);
  EXPECT_EQ(next.wr_id, 603u);
  EXPECT_EQ(next.status, IBV_WC_WR_FLUSH_ERR) << ibv_wc_status_str(next.status);
}

INSTANTIATE_TEST_SUITE_P(Providers, ConformanceWindowTest, ::testing::ValuesIn(AllHarnesses()),
                         HarnessName);

}  // namespace
}  // namespace braid::testing
