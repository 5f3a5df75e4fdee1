// SpscRing over a session segment mapped twice (as two processes map it): entries arrive whole and
// in order across wrap-arounds, a side that writes nonsense into the indices breaks the ring
// without anything outside it being read or written, and a sleeping consumer is woken exactly
// when it sleeps.
#include "dataplane/session/spsc_ring.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "dataplane/session/doorbell.h"
#include "dataplane/session/session_segment.h"

namespace braid::session {
namespace {

// The client's mapping of a segment the agent created.
std::unique_ptr<SessionSegment> AttachCopy(const SessionSegment& agent) {
  auto client = SessionSegment::Attach(dup(agent.fd()));
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

// A raw second mapping of a segment: what a hostile process can write to.
class RawMapping {
 public:
  explicit RawMapping(const SessionSegment& s) : layout_(s.layout()) {
    void* p = mmap(nullptr, layout_.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd(), 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~RawMapping() {
    if (base_ != nullptr) munmap(base_, layout_.total_bytes);
  }
  bool ok() const { return base_ != nullptr; }
  RingControl& sq() { return *reinterpret_cast<RingControl*>(base_ + layout_.sq_control); }
  RingControl& cq() { return *reinterpret_cast<RingControl*>(base_ + layout_.cq_control); }

 private:
  SegmentHeader layout_;
  uint8_t* base_ = nullptr;
};

SubmitEntry Numbered(uint64_t i) {
  SubmitEntry e{};
  e.user_data = i;
  e.length = i * 3 + 1;
  e.op = static_cast<uint8_t>(RingOp::kWrite);
  return e;
}

TEST(SpscRingTest, TwoThreadsMoveEntriesInOrderAcrossManyWrapArounds) {
  auto agent = SessionSegment::Create({64, 64, 64});
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  auto client = AttachCopy(**agent);
  ASSERT_NE(client, nullptr);
  constexpr uint64_t kCount = 1'000'000;  // ~15,600 trips around a 64-entry ring
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    SpscRing<SubmitEntry> sq = client->SubmitRing();
    std::array<SubmitEntry, 7> batch;  // odd batches: every wrap offset is crossed
    uint64_t next = 0;
    while (next < kCount && !stop.load()) {
      const uint64_t n = std::min<uint64_t>(batch.size(), kCount - next);
      for (uint64_t i = 0; i < n; ++i) batch[i] = Numbered(next + i);
      next += sq.Push(std::span(batch.data(), n));
    }
  });
  SpscRing<SubmitEntry> sq = (*agent)->SubmitRing();
  std::array<SubmitEntry, 16> out;
  uint64_t expect = 0, wrong = 0;
  while (expect < kCount && !sq.broken()) {
    const uint32_t n = sq.Pop(out);
    for (uint32_t i = 0; i < n; ++i, ++expect) {
      wrong += out[i].user_data != expect || out[i].length != expect * 3 + 1;
    }
  }
  stop.store(true);
  producer.join();
  EXPECT_FALSE(sq.broken());
  EXPECT_EQ(expect, kCount);
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(sq.Ready(), 0u);
}

TEST(SpscRingTest, AFullRingTakesNothingMoreUntilTheConsumerFreesRoom) {
  auto agent = SessionSegment::Create({8, 8, 64});
  ASSERT_TRUE(agent.ok());
  SpscRing<SubmitEntry> producer = (*agent)->SubmitRing();
  SpscRing<SubmitEntry> consumer = (*agent)->SubmitRing();
  std::vector<SubmitEntry> in(10);
  for (uint64_t i = 0; i < in.size(); ++i) in[i] = Numbered(i);
  EXPECT_EQ(producer.Push(in), 8u);
  EXPECT_EQ(producer.Push(std::span(in).subspan(8)), 0u) << "full";
  std::array<SubmitEntry, 3> out;
  ASSERT_EQ(consumer.Pop(out), 3u);
  EXPECT_EQ(out[2].user_data, 2u);
  EXPECT_EQ(producer.Push(std::span(in).subspan(8)), 2u);
  EXPECT_EQ(consumer.Ready(), 7u);
}

// A hostile client moves the submission tail far beyond the ring: the engine's consumer reads
// nothing (no entry beyond the ring, none of the garbage) and the ring reports itself broken.
TEST(SpscRingTest, ATailBeyondTheRingBreaksItAndNothingIsRead) {
  auto agent = SessionSegment::Create({16, 16, 64});
  ASSERT_TRUE(agent.ok());
  auto client = AttachCopy(**agent);
  ASSERT_NE(client, nullptr);
  SpscRing<SubmitEntry> sq = (*agent)->SubmitRing();
  SpscRing<SubmitEntry> hostile = client->SubmitRing();
  const SubmitEntry e = Numbered(1);
  ASSERT_EQ(hostile.Push(std::span(&e, 1)), 1u);
  std::array<SubmitEntry, 32> out{};
  ASSERT_EQ(sq.Pop(out), 1u);
  RawMapping raw(*client);
  ASSERT_TRUE(raw.ok());
  raw.sq().tail.value.store(1 + 17);  // 17 entries "ready" in a ring of 16
  EXPECT_EQ(sq.Ready(), 0u);
  EXPECT_TRUE(sq.broken());
  EXPECT_EQ(sq.Pop(out), 0u);
  raw.sq().tail.value.store(2);  // looks sane again: a broken ring stays broken
  EXPECT_EQ(sq.Pop(out), 0u);
}

// A hostile client moves the completion head past what the engine produced: the engine's producer
// writes nothing more and the ring reports itself broken.
TEST(SpscRingTest, AHeadPastTheProducedEntriesBreaksTheProducersRing) {
  auto agent = SessionSegment::Create({16, 16, 64});
  ASSERT_TRUE(agent.ok());
  SpscRing<CompletionEntry> cq = (*agent)->CompletionRing();
  SpscRing<CompletionEntry> client = (*agent)->CompletionRing();
  CompletionEntry c{};
  ASSERT_EQ(cq.Push(std::span(&c, 1)), 1u);
  std::array<CompletionEntry, 4> out;
  ASSERT_EQ(client.Pop(out), 1u);
  RawMapping raw(**agent);
  ASSERT_TRUE(raw.ok());
  raw.cq().head.value.store(41);  // 40 entries past the one produced
  EXPECT_EQ(cq.Push(std::span(&c, 1)), 0u);
  EXPECT_TRUE(cq.broken());
}

// The consumer is woken when, and only when, it announced that it sleeps.
TEST(SpscRingTest, ASleepingConsumerIsRungAndAnAwakeOneIsNot) {
  auto agent = SessionSegment::Create({8, 8, 64});
  ASSERT_TRUE(agent.ok());
  auto bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  SpscRing<SubmitEntry> producer = (*agent)->SubmitRing();
  SpscRing<SubmitEntry> consumer = (*agent)->SubmitRing();
  const SubmitEntry e = Numbered(5);
  ASSERT_EQ(producer.Push(std::span(&e, 1)), 1u);
  EXPECT_FALSE(producer.ConsumerSleeps()) << "an awake consumer costs the producer no system call";
  EXPECT_FALSE(consumer.PrepareToSleep()) << "an entry is waiting: do not sleep";
  consumer.Awake();
  std::array<SubmitEntry, 1> out;
  ASSERT_EQ(consumer.Pop(out), 1u);
  ASSERT_TRUE(consumer.PrepareToSleep());
  std::thread sleeper([&] {
    EXPECT_TRUE(bell->Wait(10'000)) << "not woken";
    consumer.Awake();
    EXPECT_EQ(consumer.Pop(out), 1u);
    EXPECT_EQ(out[0].user_data, 6u);
  });
  const SubmitEntry f = Numbered(6);
  ASSERT_EQ(producer.Push(std::span(&f, 1)), 1u);
  ASSERT_TRUE(producer.ConsumerSleeps());
  bell->Ring();
  sleeper.join();
  EXPECT_FALSE(bell->Wait(0)) << "the ring was consumed by the one wakeup";
}

}  // namespace
}  // namespace braid::session
