#include "dataplane/common/mpsc_queue.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

namespace braid::common {
namespace {

TEST(MpscQueueTest, FifoFullAndEmpty) {
  MpscQueue<int> q(3);
  EXPECT_EQ(q.capacity(), 4u);
  EXPECT_FALSE(q.TryPop().has_value());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.TryPush(int{i}).ok());
  const Status full = q.TryPush(99);
  EXPECT_EQ(full.code(), StatusCode::kNoResource);
  EXPECT_TRUE(full.message().empty()) << "back-pressure allocates nothing";
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.TryPop(), i);
  EXPECT_FALSE(q.TryPop().has_value());
  ASSERT_TRUE(q.TryPush(5).ok()) << "room again after popping";
  EXPECT_EQ(q.TryPop(), 5);
}

TEST(MpscQueueTest, MoveOnlyValues) {
  MpscQueue<std::unique_ptr<int>> q(8);
  ASSERT_TRUE(q.TryPush(std::make_unique<int>(7)).ok());
  auto v = q.TryPop();
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(**v, 7);
}

// Four producers, one consumer: every item exactly once, each producer's in its own order.
TEST(MpscQueueTest, ManyProducersExactlyOnceInProducerOrder) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 200000;
  MpscQueue<uint64_t> q(256);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&q, p] {
      for (uint64_t i = 0; i < kPerProducer;) {
        if (q.TryPush((uint64_t{static_cast<uint32_t>(p)} << 32) | i).ok()) {
          ++i;
        } else {
          std::this_thread::yield();  // full: back-pressure
        }
      }
    });
  }
  std::vector<uint64_t> next(kProducers, 0);
  uint64_t received = 0;
  while (received < uint64_t{kProducers} * kPerProducer) {
    auto v = q.TryPop();
    if (!v) {
      std::this_thread::yield();
      continue;
    }
    const auto p = static_cast<size_t>(*v >> 32);
    const uint64_t i = *v & 0xFFFFFFFF;
    ASSERT_LT(p, next.size());
    ASSERT_EQ(i, next[p]) << "producer " << p << " out of order or duplicated";
    ++next[p];
    ++received;
  }
  for (std::thread& t : producers) t.join();
  EXPECT_FALSE(q.TryPop().has_value());
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], uint64_t{kPerProducer});
}

}  // namespace
}  // namespace braid::common
