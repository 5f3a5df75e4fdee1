#include "dataplane/engine/deadline_heap.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace braid::engine {
namespace {

TEST(DeadlineHeapTest, PopsOnlyWhatIsDueEarliestFirst) {
  DeadlineHeap heap(64);
  std::mt19937 rng(7);
  std::vector<uint64_t> ats;
  for (uint32_t i = 0; i < 40; ++i) {
    const uint64_t at = 1000 + rng() % 1000;
    ats.push_back(at);
    heap.Push({at, i, 0}, [](const DeadlineHeap::Entry&) { return false; });
  }
  DeadlineHeap::Entry e;
  EXPECT_FALSE(heap.PopDue(999, &e)) << "nothing is due before the earliest deadline";
  uint64_t last = 0;
  size_t popped = 0;
  while (heap.PopDue(1500, &e)) {
    EXPECT_LE(e.at_ns, 1500u);
    EXPECT_GE(e.at_ns, last);
    EXPECT_EQ(e.at_ns, ats[e.index]);
    last = e.at_ns;
    ++popped;
  }
  size_t due = 0;
  for (uint64_t at : ats) due += at <= 1500 ? 1 : 0;
  EXPECT_EQ(popped, due);
  EXPECT_EQ(heap.size(), ats.size() - due);
}

// A full heap makes room by dropping the entries the caller calls stale (transfers that finished
// before their deadline), and keeps the live ones in order.
TEST(DeadlineHeapTest, AFullHeapPurgesStaleEntriesAndKeepsTheLiveOnes) {
  DeadlineHeap heap(8);
  auto odd_is_stale = [](const DeadlineHeap::Entry& d) { return d.index % 2 == 1; };
  for (uint32_t i = 0; i < 7; ++i) heap.Push({100 - uint64_t{i}, i, 0}, odd_is_stale);
  EXPECT_EQ(heap.size(), 7u) << "no purge while there is room";
  heap.Push({50, 7, 0}, odd_is_stale);  // full: 1, 3 and 5 go
  EXPECT_EQ(heap.size(), 5u);
  std::vector<uint32_t> order;
  DeadlineHeap::Entry e;
  while (heap.PopDue(UINT64_MAX, &e)) order.push_back(e.index);
  EXPECT_EQ(order, (std::vector<uint32_t>{7, 6, 4, 2, 0}));
}

}  // namespace
}  // namespace braid::engine
