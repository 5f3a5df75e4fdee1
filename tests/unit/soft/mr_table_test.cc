#include "dataplane/soft/mr_table.h"

#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <set>

namespace braid::soft {
namespace {

constexpr unsigned kRw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
constexpr uint32_t kQp = 0x100;  // the QP a request arrives on

TEST(MrTableTest, KeysAreDistinctAndChecked) {
  MrTable t(1);
  const MrEntry e = *t.Add(0x10000, 4096, kRw, 1);
  EXPECT_NE(e.lkey, e.rkey);
  EXPECT_NE(e.lkey, 0u);
  EXPECT_NE(t.CheckLocal(e.lkey, 1, 0x10000, 4096, 0), nullptr);
  EXPECT_NE(t.CheckRemote(e.rkey, 1, kQp, 0x10100, 16, IBV_ACCESS_REMOTE_WRITE), nullptr);
  EXPECT_EQ(t.CheckRemote(e.lkey, 1, kQp, 0x10000, 16, 0), nullptr) << "an lkey is no rkey";
  EXPECT_EQ(t.CheckLocal(e.rkey, 1, 0x10000, 16, 0), nullptr) << "an rkey is no lkey";
  EXPECT_EQ(t.CheckRemote(e.rkey, 2, kQp, 0x10000, 16, 0), nullptr) << "other PD";
  EXPECT_EQ(t.CheckRemote(e.rkey, 1, kQp, 0x10000, 16, IBV_ACCESS_REMOTE_READ), nullptr)
      << "access not granted";
  EXPECT_EQ(t.CheckLocal(0, 1, 0x10000, 1, 0), nullptr);
  EXPECT_EQ(t.CheckLocal(0xFFFFFF00u, 1, 0x10000, 1, 0), nullptr);
}

TEST(MrTableTest, BoundsIncludingArithmeticOverflow) {
  MrTable t(1);
  const MrEntry e = *t.Add(0x10000, 4096, kRw, 1);
  EXPECT_NE(t.CheckLocal(e.lkey, 1, 0x10000 + 4095, 1, 0), nullptr);
  EXPECT_EQ(t.CheckLocal(e.lkey, 1, 0x10000 + 4095, 2, 0), nullptr);
  EXPECT_EQ(t.CheckLocal(e.lkey, 1, 0xFFFF, 2, 0), nullptr);
  EXPECT_EQ(t.CheckLocal(e.lkey, 1, 0x10010, UINT64_MAX - 8, 0), nullptr);
  EXPECT_EQ(t.CheckLocal(e.lkey, 1, UINT64_MAX, 2, 0), nullptr);
}

TEST(MrTableTest, StaleKeysNeverMatchAReusedSlot) {
  MrTable t(1);
  const MrEntry first = *t.Add(0x10000, 4096, kRw, 1);
  t.Remove(first.lkey);
  EXPECT_EQ(t.CheckLocal(first.lkey, 1, 0x10000, 1, 0), nullptr);
  const MrEntry second = *t.Add(0x20000, 4096, kRw, 1);
  EXPECT_EQ(second.lkey >> MrTable::kTagBits, first.lkey >> MrTable::kTagBits) << "slot reused";
  EXPECT_NE(second.lkey, first.lkey);
  EXPECT_EQ(t.CheckRemote(first.rkey, 1, kQp, 0x20000, 1, 0), nullptr);
  EXPECT_NE(t.CheckRemote(second.rkey, 1, kQp, 0x20000, 1, 0), nullptr);
}

// An rkey says nothing about the next one: the tags of 1,000 consecutive regions are spread over
// the tag space (a counter would give 1,000 in a row), and another device's table draws others.
TEST(MrTableTest, RkeysAreNotPredictableFromTheOnesBefore) {
  MrTable t(7), u(8);
  std::set<uint32_t> tags;
  int steps_of_one = 0, same_as_other_device = 0;
  uint32_t previous = 0;
  for (int i = 0; i < 1000; ++i) {
    const MrEntry* e = t.Add(0x10000, 4096, kRw, 1);
    const MrEntry* f = u.Add(0x10000, 4096, kRw, 1);
    ASSERT_TRUE(e != nullptr && f != nullptr);
    const uint32_t tag = e->rkey & ((1u << MrTable::kTagBits) - 1);
    tags.insert(tag);
    steps_of_one += i > 0 && tag == previous + 1;
    same_as_other_device += e->rkey == f->rkey;
    previous = tag;
  }
  EXPECT_GT(tags.size(), 800u);
  EXPECT_LT(steps_of_one, 10);
  EXPECT_LT(same_as_other_device, 10);
}

// A window over [0x10000, 0x11000) of a region registered for binding only.
class MrTableWindowTest : public ::testing::Test {
 protected:
  MrTable t{3};
  const MrEntry region = *t.Add(0x10000, 0x4000, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND, 1);
  const MrEntry window = *t.AddWindow(1);
  const uint32_t key = (window.rkey & ~0xFFu) | ((window.rkey + 1) & 0xFFu);  // ibv_inc_rkey
  WindowBind Bind(uint32_t new_rkey = 0) const {
    return {window.rkey, new_rkey != 0 ? new_rkey : key, region.lkey, 0x10000,
            0x1000,      IBV_ACCESS_REMOTE_WRITE};
  }
};

TEST_F(MrTableWindowTest, ABoundWindowAnswersOnlyItsQpItsRangeAndItsRights) {
  EXPECT_EQ(t.CheckRemote(window.rkey, 1, kQp, 0x10000, 8, 0), nullptr) << "unbound";
  ASSERT_TRUE(t.BindWindow(Bind(), 1, kQp));
  EXPECT_NE(t.CheckRemote(key, 1, kQp, 0x10000, 0x1000, IBV_ACCESS_REMOTE_WRITE), nullptr);
  EXPECT_EQ(t.CheckRemote(key, 1, kQp + 1, 0x10000, 8, 0), nullptr) << "another QP";
  EXPECT_EQ(t.CheckRemote(key, 2, kQp, 0x10000, 8, 0), nullptr) << "another PD";
  EXPECT_EQ(t.CheckRemote(key, 1, kQp, 0x10FF8, 16, 0), nullptr) << "past the window";
  EXPECT_EQ(t.CheckRemote(key, 1, kQp, 0x10000, 8, IBV_ACCESS_REMOTE_READ), nullptr);
  EXPECT_EQ(t.CheckRemote(window.rkey, 1, kQp, 0x10000, 8, 0), nullptr) << "the unbound key";
  EXPECT_EQ(t.CheckRemote(region.rkey, 1, kQp, 0x10000, 8, IBV_ACCESS_REMOTE_WRITE), nullptr)
      << "the region grants no remote access of its own";
  EXPECT_EQ(t.CheckLocal(key, 1, 0x10000, 8, 0), nullptr) << "a window is never local memory";
}

TEST_F(MrTableWindowTest, ABindIsRefusedUnlessTheRegionAndWindowAllowIt) {
  WindowBind b = Bind();
  b.new_rkey = key ^ 0x100;  // more than the consumer key
  EXPECT_FALSE(t.BindWindow(b, 1, kQp));
  EXPECT_FALSE(t.BindWindow(Bind(), 2, kQp)) << "the QP's PD is not the window's";
  b = Bind();
  b.length = 0x4001;
  EXPECT_FALSE(t.BindWindow(b, 1, kQp)) << "beyond the region";
  b = Bind();
  b.access |= IBV_ACCESS_ZERO_BASED;
  EXPECT_FALSE(t.BindWindow(b, 1, kQp));
  const MrEntry plain = *t.Add(0x20000, 0x1000, kRw, 1);
  b = Bind();
  b.region_lkey = plain.lkey;
  b.addr = 0x20000;
  EXPECT_FALSE(t.BindWindow(b, 1, kQp)) << "the region lacks MW_BIND";
  const MrEntry read_only = *t.Add(0x30000, 0x1000, IBV_ACCESS_MW_BIND, 1);
  b.region_lkey = read_only.lkey;
  b.addr = 0x30000;
  EXPECT_FALSE(t.BindWindow(b, 1, kQp)) << "remote write over memory without local write";
  ASSERT_TRUE(t.BindWindow(Bind(), 1, kQp));
  EXPECT_FALSE(t.BindWindow(Bind(), 1, kQp)) << "bound already: invalidate first";
}

TEST_F(MrTableWindowTest, InvalidationResetAndDeregistrationEndAccess) {
  ASSERT_TRUE(t.BindWindow(Bind(), 1, kQp));
  EXPECT_FALSE(t.InvalidateWindow(key, kQp + 1)) << "only through the QP it is bound through";
  EXPECT_FALSE(t.InvalidateWindow(window.rkey, kQp)) << "not its bound key";
  ASSERT_TRUE(t.InvalidateWindow(key, kQp));
  EXPECT_EQ(t.CheckRemote(key, 1, kQp, 0x10000, 8, 0), nullptr);
  const uint32_t key2 = (key & ~0xFFu) | ((key + 1) & 0xFFu);
  ASSERT_TRUE(t.BindWindow(Bind(key2), 1, kQp));
  EXPECT_EQ(t.CheckRemote(key, 1, kQp, 0x10000, 8, 0), nullptr) << "the old key";
  EXPECT_NE(t.CheckRemote(key2, 1, kQp, 0x10000, 8, IBV_ACCESS_REMOTE_WRITE), nullptr);
  t.UnbindWindowsOf(kQp);
  EXPECT_EQ(t.CheckRemote(key2, 1, kQp, 0x10000, 8, 0), nullptr) << "its QP was reset";
  ASSERT_TRUE(t.BindWindow(Bind(key2), 1, kQp));
  t.Remove(region.lkey);
  EXPECT_EQ(t.CheckRemote(key2, 1, kQp, 0x10000, 8, 0), nullptr) << "its region is gone";
  t.RemoveWindow(key2);
  EXPECT_FALSE(t.BindWindow(Bind(key2), 1, kQp)) << "deallocated";
}

}  // namespace
}  // namespace braid::soft
