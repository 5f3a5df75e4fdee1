// The engine on its own: two engines in one process, each with a soft NIC on the TCP link, driven
// through the engine's thread-safe interface as the server drives it.
#include "dataplane/engine/engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/unit/engine/engine_fixture.h"

namespace braid::engine {
namespace {

// A VQP's remote key table holds 64 entries; a long-running client rotating its buffers targets
// far more peer regions than that over the VQP's life. Every transfer must succeed: entries no
// transfer uses are evicted (least recently used) as new regions come. 100,000 distinct remote
// regions in turn (BRAID_DISTINCT_REGIONS overrides), 32 in flight.
TEST_F(EngineTest, AVqpTargetsAnyNumberOfDistinctPeerRegionsInTurn) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr uint64_t kDefault = 5000;  // sanitizers are 10x slower; the release run does 100,000
#else
  constexpr uint64_t kDefault = 100000;
#endif
  const char* env = std::getenv("BRAID_DISTINCT_REGIONS");
  const uint64_t count = env != nullptr ? std::strtoull(env, nullptr, 10) : kDefault;
  auto rss_kib = [] {
    long pages = 0, resident = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
      std::fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
  };
  auto* src = reinterpret_cast<uint8_t*>(local_.grants[0].addr);
  auto* dst = reinterpret_cast<uint8_t*>(remote_.grants[0].addr);
  for (uint64_t i = 0; i < 4096; ++i) src[i] = static_cast<uint8_t>(i * 7 + 1);
  std::memset(dst, 0, 64 * kMiB);  // resident from the start: RSS then measures the agent alone
  auto sink = std::make_shared<TransferSink>(1024);
  uint64_t ok = 0, submitted = 0, done = 0;
  std::string first_error;
  long rss_start = 0;
  while (done < count) {
    if (done == count / 10 && rss_start == 0) rss_start = rss_kib();  // past the warm-up
    while (submitted < count && submitted - done < 32) {
      TransferRequest t = Write(submitted, 0, 4096);
      t.op = TransferOp::kWrite;
      t.remote.addr = remote_.grants[0].addr + (submitted % 131000) * 512;  // a distinct region
      t.remote.length = 4096;
      t.remote_offset = 0;
      ASSERT_TRUE(a_.engine->SubmitTransfer(t, sink).ok());
      ++submitted;
    }
    auto r = sink->results.TryPop();
    if (!r) {
      sink->results.Wait(10);
      continue;
    }
    ++done;
    if (r->status.ok()) {
      ++ok;
    } else if (first_error.empty()) {
      first_error = r->status.ToString();
    }
  }
  const long rss_end = rss_kib();
  std::printf(
      "%lu distinct remote regions in turn: %lu transfers succeeded%s%s; RSS %ld KiB "
      "after the first tenth, %ld KiB at the end\n",
      static_cast<unsigned long>(count), static_cast<unsigned long>(ok),
      first_error.empty() ? "" : "; first error: ", first_error.c_str(), rss_start, rss_end);
  EXPECT_EQ(ok, count);
  EXPECT_LT(rss_end - rss_start, 16 * 1024) << "memory grows with the regions targeted";
  const uint64_t last = (count - 1) % 131000 * 512;
  EXPECT_EQ(std::memcmp(src, dst + last, 4096), 0);
}

TEST_F(EngineTest, TransfersCompleteInOrderAndNotifyTheReceiver) {
  auto* src = reinterpret_cast<uint8_t*>(local_.grants[0].addr);  // same process: same mapping
  auto* dst = reinterpret_cast<uint8_t*>(remote_.grants[0].addr);
  for (uint64_t i = 0; i < 64 * kMiB; ++i) src[i] = static_cast<uint8_t>(i * 13 + (i >> 12));
  auto watcher = std::make_shared<NotificationWatcher>(1024);
  ASSERT_TRUE(b_.engine->Watch(peer_vqp_, watcher).ok());
  auto sink = std::make_shared<TransferSink>(256);
  for (uint64_t i = 0; i < 64; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, i * kMiB, kMiB), sink).ok());
  }
  auto results = Collect(*sink, 64);
  ASSERT_EQ(results.size(), 64u);
  for (uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(results[i].op_id, i);  // one VQP completes in posting order
    EXPECT_TRUE(results[i].status.ok()) << results[i].status.ToString();
    EXPECT_EQ(results[i].bytes, kMiB);
  }
  EXPECT_EQ(std::memcmp(src, dst, 64 * kMiB), 0);
  std::vector<Notification> notes;
  for (int i = 0; i < 500 && notes.size() < 64; ++i) {
    while (auto n = watcher->events.TryPop()) notes.push_back(*n);
    if (notes.size() < 64) watcher->events.Wait(10);
  }
  ASSERT_EQ(notes.size(), 64u);
  for (uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(notes[i].seq, i);
    EXPECT_EQ(notes[i].imm, i);
    EXPECT_EQ(notes[i].byte_len, kMiB);
  }
  auto snap = a_.engine->Snapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->completions[static_cast<size_t>(TransferOp::kWriteWithImm)][IBV_WC_SUCCESS], 64u);
  EXPECT_EQ(snap->devices[0].traffic.write_bytes, 64 * kMiB);
  EXPECT_EQ(snap->transfers_in_flight, 0u);
}

TEST_F(EngineTest, PastItsDeadlineATransferFailsAtOnceAndKeepsItsRegionUntilTheWcArrives) {
  auto sink = std::make_shared<TransferSink>(16);
  // Queued behind 512 MiB of writes on the same QPs, a 64 MiB write with a 1 ms deadline is still
  // in flight long after its deadline (tens of milliseconds on loopback TCP at the least).
  auto ahead = std::make_shared<TransferSink>(16);
  for (uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(100 + i, 0, 64 * kMiB), ahead).ok());
  }
  TransferRequest t = Write(7, 0, 64 * kMiB);
  t.timeout_ms = 1;
  ASSERT_TRUE(a_.engine->SubmitTransfer(t, sink).ok());
  auto results = Collect(*sink, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].op_id, 7u);
  EXPECT_EQ(results[0].status.code(), common::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(results[0].status.message(),
            "transfer 7 missed its deadline of 1 ms (its virtual WR is still in flight)");
  EXPECT_FALSE(results[0].posted);
  // The NIC may still read the region: it cannot be deregistered yet.
  const common::Status busy = a_.engine->DeregisterMemory(local_.id);
  EXPECT_EQ(busy.code(), common::StatusCode::kFailedPrecondition) << busy.ToString();
  // Once the real completion arrived (never reported twice), it can.
  common::Status s = busy;
  for (int i = 0; i < 500 && !s.ok(); ++i) {
    usleep(10000);
    s = a_.engine->DeregisterMemory(local_.id);
  }
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(sink->results.TryPop().has_value());
  auto snap = a_.engine->Snapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->completions[static_cast<size_t>(TransferOp::kWriteWithImm)][kOutcomeDeadline],
            1u);
  EXPECT_EQ(Collect(*ahead, 8).size(), 8u);
}

TEST_F(EngineTest, ABacklogBeyondTheVqpsRingKeepsArrivalOrder) {
  Connect(2, 4);  // a second pair whose VQP holds 4 virtual WRs at a time
  auto sink = std::make_shared<TransferSink>(512);
  for (uint64_t i = 0; i < 200; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, (i % 64) * kMiB, 64 * 1024), sink).ok());
  }
  auto results = Collect(*sink, 200);
  ASSERT_EQ(results.size(), 200u);
  for (uint64_t i = 0; i < 200; ++i) {
    EXPECT_EQ(results[i].op_id, i);
    EXPECT_TRUE(results[i].status.ok()) << results[i].status.ToString();
  }
}

TEST_F(EngineTest, DestroyingAVqpCompletesEveryTransferExactlyOnce) {
  auto sink = std::make_shared<TransferSink>(256);
  for (uint64_t i = 0; i < 64; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, i * kMiB, kMiB), sink).ok());
  }
  ASSERT_TRUE(a_.engine->DestroyVirtualQp(vqp_).ok());
  auto results = Collect(*sink, 64);
  ASSERT_EQ(results.size(), 64u);
  std::vector<int> seen(64, 0);
  for (const auto& r : results) {
    ASSERT_LT(r.op_id, 64u);
    ++seen[r.op_id];
    EXPECT_TRUE(r.status.ok() || r.status.code() == common::StatusCode::kQpError ||
                r.status.code() == common::StatusCode::kCancelled)
        << r.status.ToString();
  }
  for (int n : seen) EXPECT_EQ(n, 1);
  usleep(50000);
  EXPECT_FALSE(sink->results.TryPop().has_value());
  EXPECT_EQ(a_.engine->GetVirtualQp(vqp_).status().code(), common::StatusCode::kNotFound);
  EXPECT_TRUE(a_.engine->DeregisterMemory(local_.id).ok());
}

// Destroyed with transfers queued beyond its ring (a VQP of 4 virtual WRs, 120 submitted): each
// completes once, those still waiting CANCELLED (those that missed their deadline while waiting
// were reported then, and not again); nothing stays behind, and the engine's lists of backlogged
// VQPs and VQPs to look after let go of it (another VQP keeps working).
TEST_F(EngineTest, DestroyingAVqpWithABacklogBeyondItsRingCompletesEachTransferOnce) {
  const uint64_t first = vqp_;
  const RegionStatus first_local = local_, first_remote = remote_;  // granted to the first pair
  Connect(2, 4);
  auto sink = std::make_shared<TransferSink>(512);
  for (uint64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, (i % 64) * kMiB, kMiB), sink).ok());
  }
  // Twenty more at the back of the backlog miss their 1 ms deadline while they wait: they are
  // reported then, and must not be reported again when the destroy fails the backlog.
  for (uint64_t i = 100; i < 120; ++i) {
    TransferRequest t = Write(i, (i % 64) * kMiB, kMiB);
    t.timeout_ms = 1;
    ASSERT_TRUE(a_.engine->SubmitTransfer(t, sink).ok());
  }
  // Wait until all twenty were reported (the first hundred take tens of milliseconds).
  std::vector<TransferResult> results;
  int missed = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (missed < 20 && std::chrono::steady_clock::now() < give_up) {
    while (auto r = sink->results.TryPop()) {
      missed += r->op_id >= 100 && r->status.code() == common::StatusCode::kDeadlineExceeded;
      results.push_back(std::move(*r));
    }
    sink->results.Wait(1);
  }
  ASSERT_EQ(missed, 20);
  ASSERT_TRUE(a_.engine->DestroyVirtualQp(vqp_).ok());
  for (auto& r : Collect(*sink, 120 - results.size())) results.push_back(std::move(r));
  ASSERT_EQ(results.size(), 120u);
  std::vector<int> seen(120, 0);
  int cancelled = 0;
  for (const auto& r : results) {
    ASSERT_LT(r.op_id, 120u);
    ++seen[r.op_id];
    cancelled += r.status.code() == common::StatusCode::kCancelled;
  }
  for (int n : seen) EXPECT_EQ(n, 1);
  // Cancelled ones were in the backlog ahead of the twenty, so those were still in it too.
  EXPECT_GE(cancelled, 50) << "the backlog was posted instead of cancelled?";
  usleep(50000);
  EXPECT_FALSE(sink->results.TryPop().has_value());
  auto snap = a_.engine->Snapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->transfers_in_flight, 0u);
  vqp_ = first;
  local_ = first_local;
  remote_ = first_remote;
  for (uint64_t i = 0; i < 16; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(1000 + i, i * kMiB, kMiB), sink).ok());
  }
  const auto after = Collect(*sink, 16);
  ASSERT_EQ(after.size(), 16u);
  for (const auto& r : after) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

// The engine's half of a revocation: the grant's registration is gone when RevokeAccess returns
// (the peer's next write is a remote access error), a second revoke finds nothing, the region
// lists no grant, and the revocation is an event.
TEST_F(EngineTest, ARevokedGrantFailsThePeersNextWriteAndIsAnEvent) {
  auto events = std::make_shared<EventWatcher>(256);
  ASSERT_TRUE(b_.engine->WatchEvents(events).ok());
  auto sink = std::make_shared<TransferSink>(16);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(1, 0, kMiB), sink).ok());
  auto first = Collect(*sink, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(first[0].status.ok()) << first[0].status.ToString();

  ASSERT_TRUE(b_.engine->RevokeAccess(remote_.id, peer_vqp_).ok());
  EXPECT_EQ(b_.engine->RevokeAccess(remote_.id, peer_vqp_).code(), common::StatusCode::kNotFound);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(2, kMiB, kMiB), sink).ok());
  auto second = Collect(*sink, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_FALSE(second[0].status.ok());
  EXPECT_TRUE(second[0].posted);
  EXPECT_EQ(second[0].wc_status, IBV_WC_REM_ACCESS_ERR) << ibv_wc_status_str(second[0].wc_status);

  auto regions = b_.engine->ListRegions();
  ASSERT_TRUE(regions.ok());
  ASSERT_EQ(regions->size(), 1u);
  EXPECT_TRUE(regions->front().grants.empty());
  bool revoked = false;
  for (int i = 0; i < 200 && !revoked; ++i) {
    while (auto e = events->events.TryPop()) {
      revoked = revoked || (e->kind == EventKind::kAccessRevoked && e->vqp_id == peer_vqp_);
    }
    if (!revoked) usleep(10000);
  }
  EXPECT_TRUE(revoked) << "no access_revoked event for VQP " << peer_vqp_;
}

// While the engine is stalled its command queue fills; a producer that found it full is told
// (its doorbell rings) once the engine takes commands again, and its operation then goes in. No
// producer has to sleep and retry.
TEST_F(EngineTest, AFullCommandQueueRingsItsWaitersOnceTheEngineTakesCommands) {
  auto bell = std::make_shared<CountingBell>();
  auto sink = std::make_shared<TransferSink>(8192);
  uint64_t submitted = StallAndFillCommandQueue(sink, bell);
  EXPECT_EQ(bell->rings.load(), 0) << "rung while the engine is still stalled";
  for (int i = 0; i < 500 && bell->rings.load() == 0; ++i) usleep(10000);
  ASSERT_GE(bell->rings.load(), 1) << "the engine took commands again without ringing";
  ASSERT_TRUE(
      a_.engine->SubmitTransfer(Write(submitted, (submitted % 16384) * 4096, 4096), sink).ok());
  ++submitted;
  auto results = Collect(*sink, submitted);
  ASSERT_EQ(results.size(), submitted);
  for (const auto& r : results) ASSERT_TRUE(r.status.ok()) << r.status.ToString();
}

// A client's batch goes to the engine as one command: refused whole by a full command queue (the
// caller keeps every request, none started), taken whole once there is room, started in order.
TEST_F(EngineTest, ABatchRefusedByAFullCommandQueueStaysWithItsCallerAndLaterGoesInWhole) {
  auto bell = std::make_shared<CountingBell>();
  auto sink = std::make_shared<TransferSink>(8192);
  const uint64_t singles = StallAndFillCommandQueue(sink, nullptr);
  constexpr uint64_t kBatch = 64;
  std::vector<TransferRequest> batch;
  for (uint64_t i = 0; i < kBatch; ++i) batch.push_back(Write(100000 + i, i * 4096, 4096));
  const common::Status refused = a_.engine->SubmitTransfers(batch, sink, bell);
  ASSERT_EQ(refused.code(), common::StatusCode::kNoResource);
  ASSERT_EQ(batch.size(), kBatch) << "a refused batch must stay with its caller";
  for (uint64_t i = 0; i < kBatch; ++i) ASSERT_EQ(batch[i].op_id, 100000 + i);
  for (int i = 0; i < 500 && bell->rings.load() == 0; ++i) usleep(10000);
  ASSERT_GE(bell->rings.load(), 1) << "the engine took commands again without ringing";
  ASSERT_TRUE(a_.engine->SubmitTransfers(batch, sink, bell).ok());
  EXPECT_TRUE(batch.empty()) << "an accepted batch is the engine's";
  auto results = Collect(*sink, singles + kBatch);
  ASSERT_EQ(results.size(), singles + kBatch);
  std::vector<uint64_t> batch_order;
  for (const auto& r : results) {
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    if (r.op_id >= 100000) batch_order.push_back(r.op_id - 100000);
  }
  ASSERT_EQ(batch_order.size(), kBatch);
  for (uint64_t i = 0; i < kBatch; ++i) EXPECT_EQ(batch_order[i], i) << "started out of order";
}

TEST_F(EngineTest, AnIdleEngineSleeps) { ExpectSleepsForHalfASecond(*a_.engine); }

// While it waits on the wire and while it lingers after activity, the engine polls; each turn that
// finds nothing gives the core away, so a thread woken on that core (the client waiting for this
// very completion) runs at once. Told not to (a core of its own), it spins unbroken.
TEST_F(EngineTest, ABusyPollingEngineGivesItsCoreAwayAfterEachEmptyTurnUnlessToldNot) {
  auto before = a_.engine->Snapshot();
  ASSERT_TRUE(before.ok());
  auto sink = std::make_shared<TransferSink>(64);
  for (uint64_t i = 0; i < 64; ++i) {
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, i * 4096, 4096), sink, nullptr).ok());
  }
  const auto results = Collect(*sink, 64);
  ASSERT_EQ(results.size(), 64u);
  for (const auto& r : results) ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ExpectSleepsForHalfASecond(*a_.engine);  // the linger ended
  auto after = a_.engine->Snapshot();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->yields, before->yields) << "the engine polled without giving its core away";

  Side spinning(2, {.yield_when_idle = false});
  ASSERT_TRUE(spinning.engine);
  ExpectSleepsForHalfASecond(*spinning.engine);  // it lingered after start, then slept
  auto spun = spinning.engine->Snapshot();
  ASSERT_TRUE(spun.ok());
  EXPECT_GT(spun->loop_iterations, 3u);
  EXPECT_EQ(spun->yields, 0u);
}

// Waiting on a wire that brings nothing, the engine spins a bounded while and then sleeps on its
// fds, waking every millisecond: a busy process sharing its core then cannot have it hold the
// core for whole scheduler slices while the threads that would complete its work wait. Told to
// spin until its work is done (0), it never sleeps with work in flight.
TEST_F(EngineTest, AnEngineWaitingOnASilentWireSleepsAfterABoundedSpinUnlessToldToSpin) {
  // Over 150 ms in which `a`'s write to `b` stays in flight (`b`'s engine, and with it its NIC,
  // stalled), how often `a`'s engine slept; the write then completes.
  auto sleeps_while_a_write_waits = [](Side& a, Side& b, uint64_t vqp, const RegionStatus& local,
                                       const RegionStatus& remote) -> uint64_t {
    FaultRequest stall;
    stall.kind = FaultKind::kStallEngine;
    stall.duration_ms = 200;
    EXPECT_TRUE(b.engine->InjectFault(stall).ok());
    usleep(5000);  // the stall has begun
    auto sink = std::make_shared<TransferSink>(1);
    EXPECT_TRUE(
        a.engine->SubmitTransfer(WriteOn(vqp, local, remote, 7, 0, 4096), sink, nullptr).ok());
    auto before = a.engine->Snapshot();  // taken after the write went out (commands keep order)
    usleep(150000);
    auto after = a.engine->Snapshot();
    if (!before.ok() || !after.ok()) {
      ADD_FAILURE() << "no snapshot";
      return 0;
    }
    EXPECT_EQ(after->transfers_in_flight, 1u) << "the write did not wait on the stalled peer";
    const auto results = Collect(*sink, 1);
    EXPECT_EQ(results.size(), 1u);
    for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    return after->sleeps - before->sleeps;
  };
  EXPECT_GE(sleeps_while_a_write_waits(a_, b_, vqp_, local_, remote_), 20u)
      << "the engine spun all the while its write waited";

  Side spin_a(2, {.in_flight_spin_us = 0});
  Side spin_b(3, {.in_flight_spin_us = 0});
  ASSERT_TRUE(spin_a.engine && spin_b.engine);
  uint64_t vqp = 0, peer_vqp = 0;
  RegionStatus local, remote;
  ConnectPair(spin_a, spin_b, 1, 64, &vqp, &peer_vqp, &local, &remote);
  EXPECT_EQ(sleeps_while_a_write_waits(spin_a, spin_b, vqp, local, remote), 0u);
}

// One owner's deep rings or many streams must not take the whole transfer table: past its own
// share its next transfers are refused naming its limit, while another owner's are still taken
// up to the agent's, and the share comes back as its transfers complete.
TEST_F(EngineTest, AnOwnerFillingTheTransferTableStopsAtItsShareAndLeavesOthersTheirs) {
  EngineOptions limits;
  limits.max_transfers = 48;
  limits.max_transfers_per_owner = 32;
  Side a(2, limits);
  Side b(3);
  ASSERT_TRUE(a.engine && b.engine);
  constexpr OwnerId kGreedy = 7, kOther = 8;
  uint64_t vqp[2] = {}, peer_vqp[2] = {};
  RegionStatus local[2], remote[2];
  ConnectPair(a, b, 2, 1024, &vqp[0], &peer_vqp[0], &local[0], &remote[0], kGreedy);
  ConnectPair(a, b, 2, 1024, &vqp[1], &peer_vqp[1], &local[1], &remote[1], kOther);
  // One command, so the engine takes all of them in one turn, before any completion is polled:
  // 40 of the greedy owner's, then 30 of the other's.
  auto submit = [&](int owner_index, uint64_t first_op, int count,
                    std::vector<TransferRequest>* batch) {
    for (int i = 0; i < count; ++i) {
      const uint64_t op = first_op + static_cast<uint64_t>(i);
      TransferRequest t = WriteOn(vqp[owner_index], local[owner_index], remote[owner_index], op,
                                  (op % 1024) * 4096, 4096);
      t.owner = owner_index == 0 ? kGreedy : kOther;
      batch->push_back(std::move(t));
    }
  };
  std::vector<TransferRequest> batch;
  submit(0, 0, 40, &batch);
  // The other owner naming the greedy one's VQP, now at its limit, learns nothing of it.
  TransferRequest probe = WriteOn(vqp[0], local[1], remote[0], 99, 0, 4096);
  probe.owner = kOther;
  batch.push_back(probe);
  submit(1, 100, 30, &batch);
  auto sink = std::make_shared<TransferSink>(256);
  ASSERT_TRUE(a.engine->SubmitTransfers(batch, sink).ok());
  std::vector<TransferResult> results = Collect(*sink, 71);
  ASSERT_EQ(results.size(), 71u);
  std::map<std::string, std::vector<uint64_t>> by_outcome;  // ok, or the message → ops
  for (const TransferResult& r : results) {
    if (r.op_id == 99) {
      EXPECT_EQ(r.status.code(), common::StatusCode::kNotFound) << r.status.ToString();
      continue;
    }
    if (!r.status.ok()) {
      EXPECT_EQ(r.status.code(), common::StatusCode::kNoResource) << r.status.ToString();
    }
    by_outcome[r.status.ok() ? "ok" : std::string(r.status.message())].push_back(r.op_id);
  }
  std::vector<uint64_t> want_ok, want_caller, want_agent;
  for (uint64_t op = 0; op < 32; ++op) want_ok.push_back(op);
  for (uint64_t op = 100; op < 116; ++op) want_ok.push_back(op);
  for (uint64_t op = 32; op < 40; ++op) want_caller.push_back(op);
  for (uint64_t op = 116; op < 130; ++op) want_agent.push_back(op);
  for (auto& [outcome, ops] : by_outcome) std::sort(ops.begin(), ops.end());
  EXPECT_EQ(by_outcome["ok"], want_ok);
  EXPECT_EQ(by_outcome["this caller has 32 transfers in flight or waiting, its limit "
                       "(max_transfers_per_caller): wait for completions before submitting more"],
            want_caller);
  EXPECT_EQ(by_outcome["the agent has 48 transfers in flight or waiting, its limit "
                       "(max_transfers): back-pressure, submit again after completions"],
            want_agent);
  EXPECT_EQ(by_outcome.size(), 3u);
  // Its transfers done, the greedy owner has its share again.
  batch.clear();
  submit(0, 200, 32, &batch);
  ASSERT_TRUE(a.engine->SubmitTransfers(batch, sink).ok());
  results = Collect(*sink, 32);
  ASSERT_EQ(results.size(), 32u);
  for (const TransferResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

// A region file's pages are taken when it is registered: sparse, a region registered past what
// its file system had free raised SIGBUS in the first writer of a page that could not be had (a
// client through its mapping, or the agent placing a peer's data), whoever had taken the rest:
// another caller, another agent or any process with files there. So a region file is backed at
// once, one larger than the space free is refused, saying so, and leaves no file behind; the
// client's own memory (RegisterFd) is not the directory's.
TEST_F(EngineTest, ARegionIsBackedWhenRegisteredAndOneLargerThanTheFreeSpaceIsRefused) {
  struct statfs fs {};
  ASSERT_EQ(statfs("/dev/shm", &fs), 0);
  const uint64_t free = static_cast<uint64_t>(fs.f_bavail) * static_cast<uint64_t>(fs.f_bsize);
  const uint64_t too_big = free + 64 * kMiB;
  EngineOptions o;
  o.max_region_bytes = 2 * too_big;
  Side a(2, o);
  ASSERT_TRUE(a.engine);
  auto fits = a.engine->RegisterMemory({.length = 64 * kMiB, .label = "fits"});
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  struct stat st {};
  ASSERT_EQ(stat(fits->path.c_str(), &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 64 * kMiB) << "the region file is sparse";
  auto refused = a.engine->RegisterMemory({.length = too_big, .label = "too big"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), common::StatusCode::kNoResource);
  EXPECT_NE(refused.status().message().find(" bytes free: a region of " + std::to_string(too_big) +
                                            " does not fit"),
            std::string::npos)
      << refused.status().ToString();
  EXPECT_EQ(a.engine->ListRegions()->size(), 1u);
  const int fd = memfd_create("braid-client", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(too_big)), 0);
  auto own = a.engine->RegisterMemory({.length = too_big, .label = "own", .fd = fd});
  close(fd);
  EXPECT_TRUE(own.ok()) << own.status().ToString();
}

// A region file's pages are taken at registration, so one caller registering without end would
// fill the region directory and leave the others none: an owner holds at most
// max_region_bytes_per_owner of region files, is told so past it, and has room again once it
// deregisters; another owner still registers, and a client's own memory is not counted.
TEST_F(EngineTest, AnOwnersRegionFilesStopAtItsByteLimitAndLeaveOthersTheirs) {
  EngineOptions o;
  o.max_region_bytes_per_owner = 8 * kMiB;
  Side a(2, o);
  ASSERT_TRUE(a.engine);
  auto first = a.engine->RegisterMemory({.length = 6 * kMiB, .owner = 1});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto past = a.engine->RegisterMemory({.length = 4 * kMiB, .owner = 1});
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), common::StatusCode::kNoResource);
  EXPECT_EQ(past.status().message(),
            "this caller holds 6291456 bytes of region files; a region of 4194304 more would pass "
            "its limit of 8388608 (max_region_bytes_per_caller): deregister regions no longer "
            "used, or register smaller ones");
  EXPECT_TRUE(a.engine->RegisterMemory({.length = 2 * kMiB, .owner = 1}).ok());
  EXPECT_TRUE(a.engine->RegisterMemory({.length = 6 * kMiB, .owner = 2}).ok());
  const int fd = memfd_create("braid-client", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(16 * kMiB)), 0);
  auto own = a.engine->RegisterMemory({.length = 16 * kMiB, .owner = 1, .fd = fd});
  close(fd);
  EXPECT_TRUE(own.ok()) << own.status().ToString();
  ASSERT_TRUE(a.engine->DeregisterMemory(first->id).ok());
  EXPECT_TRUE(a.engine->RegisterMemory({.length = 4 * kMiB, .owner = 1}).ok());
}

// A label is kept as long as its VQP or region: one longer than kMaxLabelBytes is refused, saying
// so, and nothing is made.
TEST_F(EngineTest, AVqpOrRegionWithALabelPastItsBoundIsRefusedAndNothingIsMade) {
  const size_t vqps = a_.engine->ListVirtualQps()->size();
  const size_t regions = a_.engine->ListRegions()->size();
  const std::string want = "label has 4000000 bytes; a label has at most 256";
  CreateVqpRequest r;
  r.config.num_qps = 2;
  r.label = std::string(4000000, 'l');
  auto vqp = a_.engine->CreateVirtualQp(r);
  ASSERT_FALSE(vqp.ok());
  EXPECT_EQ(vqp.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(vqp.status().message(), want);
  auto region = a_.engine->RegisterMemory({.length = 4096, .label = r.label});
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().message(), want);
  EXPECT_EQ(a_.engine->ListVirtualQps()->size(), vqps);
  EXPECT_EQ(a_.engine->ListRegions()->size(), regions);
  r.label.resize(kMaxLabelBytes);  // as long as a label may be
  auto fits = a_.engine->CreateVirtualQp(r);
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(fits->label, r.label);
  EXPECT_TRUE(a_.engine->DestroyVirtualQp(fits->id).ok());
}

// Connecting `c`'s VQP with a card of `d`'s is refused with `message`, while a VQP pair within
// `c` (the same incarnation) still connects.
void ExpectAPeersCardRefusedAtConnect(Side& c, Side& d, const std::string& message) {
  ASSERT_TRUE(c.engine && d.engine);
  CreateVqpRequest r;
  r.config.num_qps = 1;
  auto vc = c.engine->CreateVirtualQp(r);
  auto vd = d.engine->CreateVirtualQp(r);
  ASSERT_TRUE(vc.ok() && vd.ok());
  const auto refused = c.engine->ConnectVirtualQp(vc->id, vd->card);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), common::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(), message);
  EXPECT_FALSE(d.engine->ConnectVirtualQp(vd->id, vc->card).ok());
  auto other = c.engine->CreateVirtualQp(r);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(c.engine->ConnectVirtualQp(vc->id, other->card).ok());
  EXPECT_TRUE(c.engine->ConnectVirtualQp(other->id, vc->card).ok());
}

// Two agents whose cards name the same control endpoint (wildcard listeners on hosts that share
// a name, an advertise copied between nodes) are refused at connect, saying why: recovery would
// have called the wrong agent and failed the VQP at its first dead QP.
TEST(EngineControlEndpoint, APeerNamingThisAgentsOwnControlEndpointIsRefusedAtConnect) {
  EngineOptions o;
  o.control_endpoint = "node:7600";
  Side c(2, o), d(3, o);
  ExpectAPeersCardRefusedAtConnect(
      c, d,
      "the peer's card names 'node:7600' as its control endpoint, which is agent engine2's own: "
      "recovering a QP there would call the wrong agent; give each agent the address its peers "
      "reach it on (listen.advertise, --advertise)");
}

// Two agents given one soft NIC address (on one host, with different soft ports) are refused
// at connect, saying why: each one's QPs connected to its own listener, the only one at that
// address, and died of retries (RETRY_EXC_ERR within a second) with nothing naming the cause.
TEST(EngineSoftNicAddress, APeerNamingThisAgentsOwnSoftNicAddressIsRefusedAtConnect) {
  Side c(2), d(2, {}, 5);
  ExpectAPeersCardRefusedAtConnect(
      c, d,
      "the peer's card names device 'soft0' at " + Ip(2) +
          ", the address of agent engine2's own soft NIC soft0: its QPs would connect to this "
          "agent, not the peer; give each agent soft NIC addresses of its own (two agents on one "
          "host need different addresses and the same soft.port)");
}

}  // namespace
}  // namespace braid::engine
