#include "dataplane/common/segmented_queue.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>

namespace braid::common {
namespace {

TEST(SegmentedQueueTest, FifoAcrossSegmentsFullAndEmpty) {
  SegmentedQueue<int, 4> q(10);
  EXPECT_EQ(q.capacity(), 10u);
  EXPECT_TRUE(q.Empty());
  EXPECT_FALSE(q.TryPop().has_value());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(q.TryPush(int{i}).ok());
  const Status full = q.TryPush(99);
  EXPECT_EQ(full.code(), StatusCode::kNoResource);
  EXPECT_TRUE(full.message().empty()) << "back-pressure allocates nothing";
  EXPECT_EQ(q.segments_allocated(), 3u) << "10 items in segments of 4";
  for (int i = 0; i < 10; ++i) EXPECT_EQ(q.TryPop(), i);
  EXPECT_TRUE(q.Empty());
  ASSERT_TRUE(q.TryPush(5).ok()) << "room again after popping";
  EXPECT_EQ(q.TryPop(), 5);
}

TEST(SegmentedQueueTest, AQueueThatNeverHeldAnythingOwnsNoMemory) {
  SegmentedQueue<int, 4> q(1 << 20);
  EXPECT_EQ(q.segments_allocated(), 0u);
  EXPECT_FALSE(q.TryPop().has_value());
  EXPECT_EQ(q.segments_allocated(), 0u);
}

// A consumer that keeps up hands each emptied segment back: the producer stops allocating.
TEST(SegmentedQueueTest, AConsumerThatKeepsUpRecyclesSegments) {
  SegmentedQueue<int, 4> q(64);
  for (int round = 0; round < 1000; ++round) {
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(q.TryPush(round * 3 + i).ok());
    for (int i = 0; i < 3; ++i) ASSERT_EQ(q.TryPop(), round * 3 + i);
  }
  EXPECT_LE(q.segments_allocated(), 2u) << "3,000 items through a 64-item queue";
}

TEST(SegmentedQueueTest, ItemsStillQueuedAreDestroyedWithTheQueue) {
  auto counted = std::make_shared<int>(0);
  {
    SegmentedQueue<std::shared_ptr<int>, 4> q(100);
    for (int i = 0; i < 9; ++i) ASSERT_TRUE(q.TryPush(std::shared_ptr<int>(counted)).ok());
    auto one = q.TryPop();
    ASSERT_TRUE(one.has_value());
    EXPECT_EQ(counted.use_count(), 10);
  }
  EXPECT_EQ(counted.use_count(), 1) << "the queue's copies went with it";
}

// One producer, one consumer on two threads: every item exactly once, in order, across segment
// boundaries, recycling and back-pressure.
TEST(SegmentedQueueTest, OneProducerOneConsumerExactlyOnceInOrder) {
  constexpr uint64_t kItems = 400000;
  SegmentedQueue<uint64_t, 16> q(100);
  std::thread producer([&q] {
    for (uint64_t i = 0; i < kItems;) {
      if (q.TryPush(uint64_t{i}).ok()) {
        ++i;
      } else {
        std::this_thread::yield();  // full: back-pressure
      }
    }
  });
  uint64_t next = 0;
  while (next < kItems) {
    auto v = q.TryPop();
    if (!v) {
      std::this_thread::yield();
      continue;
    }
    ASSERT_EQ(*v, next) << "out of order or duplicated";
    ++next;
  }
  producer.join();
  EXPECT_TRUE(q.Empty());
}

}  // namespace
}  // namespace braid::common
