// Ring<T> and SeqWindow: the fixed-size queues of the virtual layer.
#include "dataplane/vqp/ring.h"

#include <gtest/gtest.h>

#include "dataplane/vqp/seq_window.h"

namespace braid::vqp {
namespace {

TEST(RingTest, KeepsFirstInFirstOutAcrossTheWrapOfItsStorage) {
  Ring<int> ring;
  ASSERT_TRUE(ring.Init(3));
  EXPECT_TRUE(ring.empty());
  int next_in = 0;
  int next_out = 0;
  for (int round = 0; round < 10; ++round) {  // 10 rounds wrap the 3 slots many times
    while (!ring.full()) ASSERT_TRUE(ring.Push(next_in++));
    EXPECT_EQ(ring.size(), 3u);
    EXPECT_EQ(ring.Front(), next_out);
    EXPECT_EQ(ring.Pop(), next_out++);
    if (round % 2 == 0) {
      EXPECT_EQ(ring.Pop(), next_out++);
    }
  }
  while (!ring.empty()) EXPECT_EQ(ring.Pop(), next_out++);
  EXPECT_EQ(next_out, next_in);
}

// A push beyond the capacity is refused and stores nothing: the entries already there stay.
TEST(RingTest, APushOnAFullRingIsRefusedAndChangesNothing) {
  Ring<int> ring;
  ASSERT_TRUE(ring.Init(2));
  ASSERT_TRUE(ring.Push(1));
  ASSERT_TRUE(ring.Push(2));
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(ring.Push(100 + i));
  EXPECT_EQ(ring.size(), 2u);
  EXPECT_EQ(ring.Pop(), 1);
  EXPECT_EQ(ring.Pop(), 2);
  EXPECT_TRUE(ring.empty());
}

TEST(SeqWindowTest, IsFullWhenAWindowOfNumbersIsOutstanding) {
  SeqWindow w;
  w.Init(4);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_FALSE(w.full());
    EXPECT_EQ(w.Take(), i);
  }
  EXPECT_TRUE(w.full());
  w.Release(0);
  EXPECT_FALSE(w.full());
  EXPECT_EQ(w.next(), 4u);
}

TEST(SeqWindowTest, SlidesOnlyWhenItsOldestNumberIsReleased) {
  SeqWindow w;
  w.Init(4);
  for (int i = 0; i < 4; ++i) w.Take();
  w.Release(2);
  w.Release(3);
  w.Release(1);
  EXPECT_TRUE(w.full()) << "0 is still outstanding: nothing may slide";
  w.Release(0);
  for (uint32_t i = 4; i < 8; ++i) {
    EXPECT_FALSE(w.full());
    EXPECT_EQ(w.Take(), i);  // all four were free at once
  }
  EXPECT_TRUE(w.full());
}

}  // namespace
}  // namespace braid::vqp
