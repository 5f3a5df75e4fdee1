// Lists on the engine: taken a batch of entries per engine command, and a page at a time.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "dataplane/engine/engine.h"
#include "tests/unit/engine/engine_fixture.h"

namespace braid::engine {
namespace {

constexpr OwnerId kMine = 7, kOther = 8;

// A 1-QP VQP of `owner`'s: its id (0 when refused, which fails the test).
uint64_t SmallVqp(Engine& engine, OwnerId owner) {
  CreateVqpRequest r;
  r.config.num_qps = 1;
  r.config.max_virtual_wrs = 16;
  r.owner = owner;
  auto v = engine.CreateVirtualQp(r);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? v->id : 0;
}

std::vector<uint64_t> Ids(const auto& list) {
  std::vector<uint64_t> out;
  for (const auto& item : list) out.push_back(item.id);
  return out;
}

// Lists and snapshots are taken a batch of VQPs or regions per engine command (describing 6,000
// VQPs in one held the data plane for 15 ms of CPU): each VQP and region is in them once, in id
// order, and a caller's list holds exactly its own, wherever the batches' ends fall.
TEST(EngineLists, ListsAndSnapshotsHoldEveryVqpAndRegionOnceAcrossBatches) {
  Side a(2);
  ASSERT_TRUE(a.engine);
  std::vector<uint64_t> vqps, my_vqps, regions, my_regions;
  for (int i = 0; i < 300; ++i) {
    const OwnerId owner = i % 3 == 0 ? kMine : kOther;
    vqps.push_back(SmallVqp(*a.engine, owner));
    if (owner == kMine) my_vqps.push_back(vqps.back());
    auto region = a.engine->RegisterMemory({.length = 4096, .owner = owner});
    ASSERT_TRUE(region.ok()) << region.status().ToString();
    regions.push_back(region->id);
    if (owner == kMine) my_regions.push_back(region->id);
  }
  EXPECT_EQ(Ids(*a.engine->ListVirtualQps()), vqps);
  EXPECT_EQ(Ids(*a.engine->ListVirtualQps(kMine)), my_vqps);
  EXPECT_EQ(Ids(*a.engine->ListRegions()), regions);
  EXPECT_EQ(Ids(*a.engine->ListRegions(kMine)), my_regions);
  auto snapshot = a.engine->Snapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(Ids(snapshot->vqps), vqps);
  EXPECT_EQ(snapshot->regions, 300u);
  // 300 VQPs are three batches: two snapshots around the list count its three commands (and
  // the one of the first snapshot's own that comes after its count was taken).
  auto commands = [&] { return a.engine->Snapshot()->commands; };
  const uint64_t quiet = commands();
  const uint64_t quiet_delta = commands() - quiet;
  const uint64_t before = commands();
  ASSERT_EQ(a.engine->ListVirtualQps()->size(), 300u);
  EXPECT_EQ(commands() - before - quiet_delta, 3u);
}

// A list walked a page at a time, VQPs made and destroyed between the pages: every VQP that
// lives through the walk is listed once, in id order; one destroyed before its page came is not;
// one made during the walk is (ids only grow); no page holds more than asked, only the caller's
// own.
TEST(EngineLists, PagesListEveryEntryThatLivesThroughTheWalkOnce) {
  Side a(1);
  ASSERT_TRUE(a.engine);
  std::vector<uint64_t> mine;
  for (int i = 0; i < 400; ++i) {
    const uint64_t id = SmallVqp(*a.engine, i % 2 == 0 ? kMine : kOther);
    if (i % 2 == 0) mine.push_back(id);
  }
  ASSERT_EQ(mine.size(), 200u);
  const uint64_t listed_early = mine[3], never_listed = mine[150];
  std::vector<uint64_t> walked;
  ListPage page{.after = 0, .limit = 30};
  int pages = 0;
  uint64_t made = 0;
  do {
    auto listed = a.engine->ListVirtualQps(kMine, page);
    ASSERT_TRUE(listed.ok()) << listed.status().ToString();
    EXPECT_LE(listed->items.size(), 30u);
    for (const VqpStatus& v : listed->items) {
      EXPECT_EQ(v.owner, kMine);
      walked.push_back(v.id);
    }
    if (++pages == 2) {  // between the second page and the third
      ASSERT_TRUE(a.engine->DestroyVirtualQp(listed_early).ok());
      ASSERT_TRUE(a.engine->DestroyVirtualQp(never_listed).ok());
      made = SmallVqp(*a.engine, kMine);
    }
    page.after = listed->next_after;
  } while (page.after != 0 && pages < 100);
  std::vector<uint64_t> expected;
  for (uint64_t id : mine) {
    if (id != never_listed) expected.push_back(id);
  }
  expected.push_back(made);
  EXPECT_EQ(walked, expected);
  EXPECT_EQ(pages, 7);  // 200 of mine, one gone and one new: six full pages and the last 20

  // Regions page the same way; a page that ends on the last entry is the last.
  std::vector<uint64_t> regions;
  for (int i = 0; i < 10; ++i) {
    auto region = a.engine->RegisterMemory({.length = 4096});
    ASSERT_TRUE(region.ok()) << region.status().ToString();
    regions.push_back(region->id);
  }
  auto first = a.engine->ListRegions(kAnyOwner, {.after = 0, .limit = 5});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Ids(first->items), std::vector<uint64_t>(regions.begin(), regions.begin() + 5));
  auto second = a.engine->ListRegions(kAnyOwner, {.after = first->next_after, .limit = 5});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(Ids(second->items), std::vector<uint64_t>(regions.begin() + 5, regions.end()));
  EXPECT_EQ(second->next_after, 0u);
}

}  // namespace
}  // namespace braid::engine
