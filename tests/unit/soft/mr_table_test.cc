#include "dataplane/soft/mr_table.h"

#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <set>

namespace braid::soft {
namespace {

constexpr unsigned kRw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

TEST(MrTableTest, KeysAreDistinctAndChecked) {
  MrTable t(1);
  const MrEntry e = *t.Add(0x10000, 4096, kRw, 1);
  EXPECT_NE(e.lkey, e.rkey);
  EXPECT_NE(e.lkey, 0u);
  EXPECT_NE(t.CheckLocal(e.lkey, 1, 0x10000, 4096, 0), nullptr);
  EXPECT_NE(t.CheckRemote(e.rkey, 1, 0x10100, 16, IBV_ACCESS_REMOTE_WRITE), nullptr);
  EXPECT_EQ(t.CheckRemote(e.lkey, 1, 0x10000, 16, 0), nullptr) << "an lkey is no rkey";
  EXPECT_EQ(t.CheckLocal(e.rkey, 1, 0x10000, 16, 0), nullptr) << "an rkey is no lkey";
  EXPECT_EQ(t.CheckRemote(e.rkey, 2, 0x10000, 16, 0), nullptr) << "other PD";
  EXPECT_EQ(t.CheckRemote(e.rkey, 1, 0x10000, 16, IBV_ACCESS_REMOTE_READ), nullptr)
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
  EXPECT_EQ(t.CheckRemote(first.rkey, 1, 0x20000, 1, 0), nullptr);
  EXPECT_NE(t.CheckRemote(second.rkey, 1, 0x20000, 1, 0), nullptr);
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

}  // namespace
}  // namespace braid::soft
