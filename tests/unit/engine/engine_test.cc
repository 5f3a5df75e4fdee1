// The engine on its own: two engines in one process, each with a soft NIC on the TCP link, driven
// through the engine's thread-safe interface as the server drives it.
#include "dataplane/engine/engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/session_client.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/test_port.h"

namespace braid::engine {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::string Ip(int side) {
  return "127.77." + std::to_string(static_cast<uint32_t>(getpid()) % 250) + "." +
         std::to_string(side + 1);
}

struct Side {
  explicit Side(int side)
      : fabric(soft::TcpFabricOptions{.port = testing::TestPort(4)}),
        provider({{{"soft0", Ip(side)}}, &fabric}) {
    EngineOptions o;
    o.provider = &provider;
    o.agent_id = "engine" + std::to_string(side);
    o.region_dir = dir;
    o.fault_injection = true;  // a test stalls the engine
    std::filesystem::create_directories(dir);
    auto e = Engine::Start(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (e.ok()) engine = std::move(e).value();
  }
  ~Side() {
    engine.reset();
    std::filesystem::remove_all(dir);
  }
  soft::TcpFabric fabric;
  soft::SoftProvider provider;
  std::string dir = "/dev/shm/braid-engine-test-" + std::to_string(getpid()) + "-" +
                    std::to_string(reinterpret_cast<uintptr_t>(this) & 0xFFFF);
  std::unique_ptr<Engine> engine;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a_.engine && b_.engine);
    Connect(4, 1024);
  }
  void Connect(uint32_t qps, uint32_t max_virtual_wrs) {
    CreateVqpRequest r;
    r.config.num_qps = qps;
    r.config.max_virtual_wrs = max_virtual_wrs;
    auto va = a_.engine->CreateVirtualQp(r);
    auto vb = b_.engine->CreateVirtualQp(r);
    ASSERT_TRUE(va.ok() && vb.ok());
    ASSERT_TRUE(a_.engine->ConnectVirtualQp(va->id, vb->card).ok());
    ASSERT_TRUE(b_.engine->ConnectVirtualQp(vb->id, va->card).ok());
    vqp_ = va->id;
    peer_vqp_ = vb->id;
    // Each granted to its VQP (the test reads the local addresses from the grants).
    auto ra = a_.engine->RegisterMemory({.length = 64 * kMiB, .label = "a", .grant_vqps = {vqp_}});
    auto rb =
        b_.engine->RegisterMemory({.length = 64 * kMiB, .label = "b", .grant_vqps = {peer_vqp_}});
    ASSERT_TRUE(ra.ok() && rb.ok());
    ASSERT_EQ(ra->grants.size(), 1u);
    ASSERT_EQ(rb->grants.size(), 1u);
    local_ = *ra;
    remote_ = *rb;
  }
  TransferRequest Write(uint64_t op_id, uint64_t offset, uint64_t length) const {
    TransferRequest t;
    t.op_id = op_id;
    t.vqp_id = vqp_;
    t.op = TransferOp::kWriteWithImm;
    t.local_region = local_.id;
    t.local_offset = offset;
    t.remote = remote_.grants[0];
    t.remote_offset = offset;
    t.length = length;
    t.imm = static_cast<uint32_t>(op_id);
    return t;
  }
  // Waits for `count` results (at most 20 s).
  static std::vector<TransferResult> Collect(TransferSink& sink, size_t count) {
    std::vector<TransferResult> out;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (out.size() < count && std::chrono::steady_clock::now() < give_up) {
      while (auto r = sink.results.TryPop()) out.push_back(std::move(*r));
      if (out.size() < count) sink.results.Wait(10);
    }
    return out;
  }

  Side a_{0};
  Side b_{1};
  uint64_t vqp_ = 0;
  uint64_t peer_vqp_ = 0;
  RegionStatus local_, remote_;
};

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
  struct CountingBell final : common::Doorbell {
    void Ring() override { rings.fetch_add(1); }
    std::atomic<int> rings{0};
  };
  auto bell = std::make_shared<CountingBell>();
  FaultRequest stall;
  stall.kind = FaultKind::kStallEngine;
  stall.duration_ms = 300;
  ASSERT_TRUE(a_.engine->InjectFault(stall).ok());
  auto sink = std::make_shared<TransferSink>(8192);
  uint64_t submitted = 0;
  common::Status s;
  while ((s = a_.engine->SubmitTransfer(Write(submitted, (submitted % 16384) * 4096, 4096), sink,
                                        bell))
             .ok()) {
    ++submitted;
    ASSERT_LT(submitted, 8000u) << "the queue never filled";
  }
  ASSERT_EQ(s.code(), common::StatusCode::kNoResource);
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

// Over half a second, the engine sleeps in epoll between its 100 ms heartbeats: a handful of
// turns, not millions.
void ExpectSleepsForHalfASecond(Engine& engine) {
  auto before = engine.Snapshot();
  ASSERT_TRUE(before.ok());
  usleep(500000);
  auto after = engine.Snapshot();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->sleeps - before->sleeps, 3u);
  EXPECT_LT(after->loop_iterations - before->loop_iterations, 1000u);
}

TEST_F(EngineTest, AnIdleEngineSleeps) { ExpectSleepsForHalfASecond(*a_.engine); }

}  // namespace
}  // namespace braid::engine

namespace braid::engine {
namespace {

// Local sessions: a client attached to a session the engine opened, with one peer region bound.
struct Attached {
  uint64_t id = 0;
  uint32_t handle = 0;
  std::unique_ptr<session::SessionClient> client;
  int segment_fd = -1;  // a duplicate the test keeps (to scribble on the ring as a hostile client)
  ~Attached() {
    if (segment_fd >= 0) close(segment_fd);
  }
};

std::unique_ptr<Attached> OpenAttached(Engine& engine, uint64_t vqp, const RemoteRegion& remote,
                                       uint32_t entries = 64) {
  auto fds = engine.OpenSession({.sq_entries = entries, .cq_entries = entries});
  EXPECT_TRUE(fds.ok()) << fds.status().ToString();
  if (!fds.ok()) return nullptr;
  auto out = std::make_unique<Attached>();
  out->id = fds->id;
  auto handle = engine.BindRemote(fds->id, vqp, remote);
  EXPECT_TRUE(handle.ok()) << handle.status().ToString();
  if (!handle.ok()) return nullptr;
  out->handle = *handle;
  out->segment_fd = dup(fds->segment.get());
  auto client = session::SessionClient::Attach(fds->segment.release(), fds->submit_bell.release(),
                                               fds->complete_bell.release());
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  if (!client.ok()) return nullptr;
  out->client = std::move(client).value();
  return out;
}

session::SubmitEntry RingWrite(uint64_t user_data, uint64_t vqp, uint64_t region, uint32_t handle,
                               uint64_t offset, uint32_t length) {
  session::SubmitEntry e{};
  e.user_data = user_data;
  e.vqp_id = vqp;
  e.local_region = static_cast<uint32_t>(region);
  e.remote_region = handle;
  e.local_offset = e.remote_offset = offset;
  e.length = length;
  e.op = static_cast<uint8_t>(session::RingOp::kWrite);
  return e;
}

// Submits `entries` (as they fit) and reaps until `count` completions arrived (at most 20 s).
std::vector<session::CompletionEntry> Drive(session::SessionClient& client,
                                            std::vector<session::SubmitEntry> entries,
                                            size_t count) {
  std::vector<session::CompletionEntry> out;
  std::vector<session::CompletionEntry> batch(32);
  size_t submitted = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.size() < count && std::chrono::steady_clock::now() < give_up) {
    if (submitted < entries.size()) {
      submitted += client.Submit({entries.data() + submitted, entries.size() - submitted});
    }
    const uint32_t n = client.Reap(batch);
    out.insert(out.end(), batch.begin(), batch.begin() + n);
    if (n == 0 && submitted == entries.size()) client.Wait(10);
  }
  return out;
}

// This process's descriptors other than sockets, as "number -> what" (the listing's own left
// out). Sockets are the soft links' (a link may connect again under load); a session holds none.
std::set<std::string> OpenFds() {
  std::set<std::string> out;
  const std::string self = "/proc/" + std::to_string(getpid()) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (target != self && target.rfind("socket:", 0) != 0) {
      out.insert(e.path().filename().string() + " -> " + target);
    }
  }
  return out;
}

// The descriptors open now that were not in `before`, once none is left (at most 2 s): another
// thread may hold one for a moment (the engine reads /proc when it admits work), which is no
// leak; one that stays is.
std::string NewFdsThatStay(const std::set<std::string>& before) {
  std::string added;
  for (int i = 0; i < 200; ++i) {
    added.clear();
    for (const std::string& fd : OpenFds()) {
      if (before.count(fd) == 0) added += fd + "; ";
    }
    if (added.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return added;
}

TEST_F(EngineTest, ASessionMovesVerifiedBytesThroughItsRingsAndABadEntryFailsAlone) {
  auto s = OpenAttached(*a_.engine, vqp_, remote_.grants[0]);
  ASSERT_TRUE(s);
  auto* src = reinterpret_cast<uint8_t*>(local_.grants[0].addr);
  auto* dst = reinterpret_cast<uint8_t*>(remote_.grants[0].addr);
  for (size_t i = 0; i < kMiB; ++i) src[i] = static_cast<uint8_t>(i * 7 + 3);
  std::memset(dst, 0, kMiB);
  constexpr int kOps = 256;  // four times the rings: the window is exercised
  std::vector<session::SubmitEntry> entries;
  for (int i = 0; i < kOps; ++i) {
    entries.push_back(RingWrite(i, vqp_, local_.id, s->handle, (i % 256) * 4096, 4096));
  }
  entries.push_back(RingWrite(kOps, vqp_, local_.id, s->handle + 7, 0, 4096));  // never bound
  const auto out = Drive(*s->client, entries, kOps + 1);
  int ok = 0, refused = 0;
  for (const auto& c : out) {
    if (c.status == 0) {
      EXPECT_EQ(c.length, 4096u);
      ++ok;
    } else {
      EXPECT_EQ(c.user_data, static_cast<uint64_t>(kOps));
      EXPECT_EQ(c.detail, static_cast<uint32_t>(session::SubmitField::kRemoteRegion));
      ++refused;
    }
  }
  EXPECT_EQ(ok, kOps);
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(std::memcmp(src, dst, kMiB), 0);
  auto status = a_.engine->GetSession(s->id);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->submitted, static_cast<uint64_t>(kOps + 1));
  EXPECT_EQ(status->refused, 1u);
  EXPECT_EQ(status->in_flight, 0u);
  EXPECT_TRUE(status->broken.empty());
  EXPECT_TRUE(a_.engine->CloseSession(s->id).ok());
  EXPECT_FALSE(a_.engine->GetSession(s->id).ok());
}

// An open session with nothing in it lets the engine sleep; an entry submitted while it sleeps
// (the client rings its doorbell) is taken, and its completion wakes a client asleep in Wait.
TEST_F(EngineTest, AnIdleSessionLetsTheEngineSleepAndASubmissionWakesIt) {
  auto s = OpenAttached(*a_.engine, vqp_, remote_.grants[0]);
  ASSERT_TRUE(s);
  ExpectSleepsForHalfASecond(*a_.engine);
  for (int round = 0; round < 5; ++round) {
    const auto e = RingWrite(round, vqp_, local_.id, s->handle, 0, 4096);
    ASSERT_EQ(s->client->Submit({&e, 1}), 1u);
    bool ready = false;
    for (int i = 0; i < 100 && !ready; ++i) ready = s->client->Wait(100);
    ASSERT_TRUE(ready);
    session::CompletionEntry c{};
    ASSERT_EQ(s->client->Reap({&c, 1}), 1u);
    EXPECT_EQ(c.status, 0u);
    EXPECT_EQ(c.user_data, static_cast<uint64_t>(round));
    usleep(50000);  // the engine goes back to sleep
  }
}

// Every field of an entry is client input: each bad one fails that entry with the field named,
// and the entries around it move their bytes.
TEST_F(EngineTest, EachBadFieldOfARingEntryFailsThatEntryAndNamesTheField) {
  auto s = OpenAttached(*a_.engine, vqp_, remote_.grants[0]);
  ASSERT_TRUE(s);
  const uint64_t region = 64 * kMiB;
  std::vector<session::SubmitEntry> entries;
  auto good = [&](uint64_t id) {
    return RingWrite(id, vqp_, local_.id, s->handle, id * 4096, 4096);
  };
  entries.push_back(good(0));
  auto e = good(1);
  e.vqp_id = vqp_ + 1000;  // no such VQP
  entries.push_back(e);
  e = good(2);
  e.local_region = static_cast<uint32_t>(local_.id + 1000);
  entries.push_back(e);
  e = good(3);
  e.local_offset = region - 100;  // runs past the local region
  entries.push_back(e);
  e = good(4);
  e.remote_offset = region;  // past the remote region
  entries.push_back(e);
  e = good(5);
  e.op = 99;  // no such opcode
  entries.push_back(e);
  e = good(6);
  e.length = 0;
  entries.push_back(e);
  entries.push_back(good(7));
  const auto out = Drive(*s->client, entries, entries.size());
  ASSERT_EQ(out.size(), entries.size());
  std::vector<uint32_t> detail(entries.size(), 1000), status(entries.size(), 1000);
  for (const auto& c : out) {
    ASSERT_LT(c.user_data, entries.size());
    detail[c.user_data] = c.detail;
    status[c.user_data] = c.status;
  }
  using session::SubmitField;
  EXPECT_EQ(status[0], 0u);
  EXPECT_EQ(status[7], 0u);
  EXPECT_EQ(detail[1], static_cast<uint32_t>(SubmitField::kVqp));
  EXPECT_EQ(status[1], static_cast<uint32_t>(common::StatusCode::kNotFound));
  EXPECT_EQ(detail[2], static_cast<uint32_t>(SubmitField::kLocalRegion));
  EXPECT_EQ(detail[3], static_cast<uint32_t>(SubmitField::kLocalRegion));
  EXPECT_EQ(status[3], static_cast<uint32_t>(common::StatusCode::kOutOfRange));
  EXPECT_EQ(detail[4], static_cast<uint32_t>(SubmitField::kRemoteRegion));
  EXPECT_EQ(status[4], static_cast<uint32_t>(common::StatusCode::kOutOfRange));
  EXPECT_EQ(detail[5], static_cast<uint32_t>(SubmitField::kOp));
  EXPECT_EQ(detail[6], static_cast<uint32_t>(SubmitField::kLength));
  for (int i = 1; i <= 6; ++i) EXPECT_NE(status[i], 0u) << "entry " << i;
  auto st = a_.engine->GetSession(s->id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->refused, 6u);
  EXPECT_TRUE(st->broken.empty()) << st->broken;
}

// A client that writes a submission tail beyond its ring ends its own session (named in the
// session's status); another session of the same engine keeps moving verified bytes.
TEST_F(EngineTest, AClientScribblingOnItsRingEndsOnlyItsOwnSession) {
  auto hostile = OpenAttached(*a_.engine, vqp_, remote_.grants[0]);
  auto fair = OpenAttached(*a_.engine, vqp_, remote_.grants[0]);
  ASSERT_TRUE(hostile && fair);
  const session::SegmentHeader layout = session::SessionSegment::Layout(64, 64);
  void* base =
      mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, hostile->segment_fd, 0);
  ASSERT_NE(base, MAP_FAILED);
  auto* sq =
      reinterpret_cast<session::RingControl*>(static_cast<uint8_t*>(base) + layout.sq_control);
  sq->tail.value.store(sq->head.value.load() + 64 * 1000, std::memory_order_release);
  // No doorbell: an idle engine still looks at its sessions' rings every idle_wait_ms.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string broken;
  while (broken.empty() && std::chrono::steady_clock::now() < give_up) {
    auto st = a_.engine->GetSession(hostile->id);
    ASSERT_TRUE(st.ok());
    broken = st->broken;
    if (broken.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_NE(broken.find("submission tail"), std::string::npos) << broken;
  munmap(base, layout.total_bytes);

  auto* src = reinterpret_cast<uint8_t*>(local_.grants[0].addr);
  auto* dst = reinterpret_cast<uint8_t*>(remote_.grants[0].addr);
  for (size_t i = 0; i < kMiB; ++i) src[i] = static_cast<uint8_t>(i * 13 + 1);
  std::memset(dst, 0, kMiB);
  std::vector<session::SubmitEntry> entries;
  for (int i = 0; i < 64; ++i)
    entries.push_back(RingWrite(i, vqp_, local_.id, fair->handle, i * 16384, 16384));
  const auto out = Drive(*fair->client, entries, entries.size());
  ASSERT_EQ(out.size(), entries.size());
  for (const auto& c : out) EXPECT_EQ(c.status, 0u);
  EXPECT_EQ(std::memcmp(src, dst, kMiB), 0);
  auto st = a_.engine->GetSession(fair->id);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->broken.empty());
  EXPECT_TRUE(a_.engine->CloseSession(hostile->id).ok());
  EXPECT_TRUE(a_.engine->CloseSession(fair->id).ok());
}

// Closing a session with work under way (its client gone): what was accepted completes into
// nothing, the region stays referenced until the real completions arrived (then it can be
// deregistered), the engine keeps serving, and every descriptor of the session is given back.
TEST_F(EngineTest, ClosingASessionWithWorkInFlightReleasesItsRegionOnlyAfterTheRealCompletions) {
  const std::set<std::string> before = OpenFds();
  auto extra = a_.engine->RegisterMemory({.length = 32 * kMiB, .label = "x", .grant_vqps = {vqp_}});
  ASSERT_TRUE(extra.ok());
  {
    auto s = OpenAttached(*a_.engine, vqp_, remote_.grants[0], 64);
    ASSERT_TRUE(s);
    std::vector<session::SubmitEntry> entries;
    for (int i = 0; i < 32; ++i)
      entries.push_back(RingWrite(i, vqp_, extra->id, s->handle, i * kMiB, kMiB));
    ASSERT_EQ(s->client->Submit(entries), 32u);
    // Wait until the engine took them all, then close with (most of) them on the wire.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < give_up) {
      auto st = a_.engine->GetSession(s->id);
      ASSERT_TRUE(st.ok());
      if (st->submitted == 32) break;
    }

    ASSERT_TRUE(a_.engine->CloseSession(s->id).ok());
    EXPECT_FALSE(a_.engine->GetSession(s->id).ok());
    // Whatever is still referenced keeps the region; once the NIC is done it can go.
    bool released = false, deregistered = false;
    while (!released && std::chrono::steady_clock::now() < give_up) {
      auto regions = a_.engine->ListRegions();
      ASSERT_TRUE(regions.ok());
      for (const auto& r : *regions) {
        if (r.id != extra->id) continue;
        if (r.in_flight == 0) {
          released = true;
          continue;
        }
        // Refused while referenced (the last completion may land between the two calls).
        const common::Status d = a_.engine->DeregisterMemory(extra->id);
        if (d.ok()) {
          released = deregistered = true;
        } else {
          EXPECT_EQ(d.code(), common::StatusCode::kFailedPrecondition) << d.ToString();
        }
      }
      if (!released) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_TRUE(released);
    // Nothing more reaches the closed session's completion ring.
    std::vector<session::CompletionEntry> out(64);
    const uint32_t late = s->client->Reap(out);
    EXPECT_LE(late, 32u);
    if (!deregistered) {
      EXPECT_TRUE(a_.engine->DeregisterMemory(extra->id).ok());
    }
  }
  {  // The engine still serves (the sink holds a descriptor while it lives).
    auto sink = std::make_shared<TransferSink>(16);
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(1, 0, 4096), sink).ok());
    const auto results = Collect(*sink, 1);
    ASSERT_EQ(results.size(), 1u);
    EXPECT_TRUE(results[0].status.ok()) << results[0].status.ToString();
  }
  // The engine lets go of a transfer's sink just after delivering its result: a call answered
  // on a later turn of its loop comes after that.
  ASSERT_TRUE(a_.engine->Snapshot().ok());
  EXPECT_EQ(NewFdsThatStay(before), "");
}

// RegisterFd: the client's own memfd is mapped and registered where it lies. Bytes the client
// writes into its mapping after registering reach the peer, and bytes read from the peer appear
// in the client's mapping: no staging copy on either side.
TEST_F(EngineTest, AClientMemfdIsRegisteredWhereItLiesWithNoCopy) {
  const std::set<std::string> before = OpenFds();
  const int fd = memfd_create("braid-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 4 * kMiB), 0);
  // Unsealed: it could be cut short under the agent's mapping.
  auto refused = a_.engine->RegisterMemory(
      {.length = kMiB, .label = "m", .grant_vqps = {vqp_}, .fd = fd, .fd_offset = 0});
  EXPECT_EQ(refused.status().code(), common::StatusCode::kFailedPrecondition);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
  EXPECT_FALSE(
      a_.engine->RegisterMemory({.length = kMiB, .label = "m", .fd = fd, .fd_offset = 100}).ok());
  EXPECT_FALSE(
      a_.engine->RegisterMemory({.length = 4 * kMiB, .label = "m", .fd = fd, .fd_offset = kMiB})
          .ok());
  auto region = a_.engine->RegisterMemory(
      {.length = 2 * kMiB, .label = "m", .grant_vqps = {vqp_}, .fd = fd, .fd_offset = kMiB});
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  auto* mine =
      static_cast<uint8_t*>(mmap(nullptr, 4 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(mine, MAP_FAILED);
  close(fd);  // the agent's mapping holds the memory
  auto* peer = reinterpret_cast<uint8_t*>(remote_.grants[0].addr);
  auto transfer = [&](TransferOp op, uint64_t op_id) {
    TransferRequest t = Write(op_id, 0, 2 * kMiB);
    t.op = op;
    t.local_region = region->id;
    auto sink = std::make_shared<TransferSink>(4);
    EXPECT_TRUE(a_.engine->SubmitTransfer(t, sink).ok());
    const auto r = Collect(*sink, 1);
    return r.size() == 1 && r[0].status.ok();
  };
  for (size_t i = 0; i < 2 * kMiB; ++i) mine[kMiB + i] = static_cast<uint8_t>(i * 5 + 9);
  ASSERT_TRUE(transfer(TransferOp::kWrite, 1));
  EXPECT_EQ(std::memcmp(peer, mine + kMiB, 2 * kMiB), 0);
  for (size_t i = 0; i < 2 * kMiB; ++i) peer[i] = static_cast<uint8_t>(i * 3 + 1);
  ASSERT_TRUE(transfer(TransferOp::kRead, 2));
  EXPECT_EQ(std::memcmp(peer, mine + kMiB, 2 * kMiB), 0);
  EXPECT_TRUE(a_.engine->DeregisterMemory(region->id).ok());
  munmap(mine, 4 * kMiB);
  EXPECT_EQ(NewFdsThatStay(before), "");
}

}  // namespace
}  // namespace braid::engine
