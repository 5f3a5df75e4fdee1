// The engine's local sessions (engine_sessions.cc): a client attached to a session the engine
// opened moves verified bytes through its rings; bad entries, a scribbling client and a session
// closed with work in flight fail or end only what is theirs; a client memfd registered where it
// lies. On the fixture of engine_test.cc (two engines, one connected VQP pair).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/session_client.h"
#include "tests/unit/engine/engine_fixture.h"

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
  auto fds = engine.OpenSession({.rings = {entries, entries, entries}});
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
  const session::SegmentHeader layout = session::SessionSegment::Layout({64, 64, 64});
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

// RegisterFd: the client's own memfd is mapped and registered where it lies, from any byte of it.
// Bytes the client writes into its mapping after registering reach the peer, and bytes read from
// the peer appear in the client's mapping: no staging copy on either side.
TEST_F(EngineTest, AClientMemfdIsRegisteredWhereItLiesWithNoCopy) {
  const std::set<std::string> before = OpenFds();
  const int fd = memfd_create("braid-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 4 * kMiB), 0);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
  EXPECT_EQ(
      a_.engine->RegisterMemory({.length = 4 * kMiB, .label = "m", .fd = fd, .fd_offset = kMiB})
          .status()
          .code(),
      common::StatusCode::kOutOfRange);
  const int on_disk = open("/etc/passwd", O_RDONLY | O_CLOEXEC);  // not shared memory
  ASSERT_GE(on_disk, 0);
  EXPECT_EQ(a_.engine->RegisterMemory({.length = 1, .label = "m", .fd = on_disk}).status().code(),
            common::StatusCode::kInvalidArgument);
  close(on_disk);
  constexpr uint64_t kStart = kMiB + 100;  // not on a page boundary
  auto region = a_.engine->RegisterMemory(
      {.length = 2 * kMiB, .label = "m", .grant_vqps = {vqp_}, .fd = fd, .fd_offset = kStart});
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
  for (size_t i = 0; i < 2 * kMiB; ++i) mine[kStart + i] = static_cast<uint8_t>(i * 5 + 9);
  ASSERT_TRUE(transfer(TransferOp::kWrite, 1));
  EXPECT_EQ(std::memcmp(peer, mine + kStart, 2 * kMiB), 0);
  for (size_t i = 0; i < 2 * kMiB; ++i) peer[i] = static_cast<uint8_t>(i * 3 + 1);
  std::memset(mine + kMiB, 0xee, 100);  // the bytes of the page before the region's start
  ASSERT_TRUE(transfer(TransferOp::kRead, 2));
  EXPECT_EQ(std::memcmp(peer, mine + kStart, 2 * kMiB), 0);
  EXPECT_EQ(mine[kMiB], 0xee) << "only the registered range is written";
  EXPECT_EQ(mine[kStart - 1], 0xee);
  EXPECT_TRUE(a_.engine->DeregisterMemory(region->id).ok());
  munmap(mine, 4 * kMiB);
  EXPECT_EQ(NewFdsThatStay(before), "");
}

// A session with no peer region bound: the receiver's side, which only watches.
std::unique_ptr<session::SessionClient> OpenWatcher(Engine& engine, uint32_t notify_entries) {
  auto fds = engine.OpenSession({.rings = {8, 8, notify_entries}});
  EXPECT_TRUE(fds.ok()) << fds.status().ToString();
  if (!fds.ok()) return nullptr;
  auto client = session::SessionClient::Attach(fds->segment.release(), fds->submit_bell.release(),
                                               fds->complete_bell.release());
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(client).value() : nullptr;
}

// Submits a watch of `vqp` and returns its completion.
session::CompletionEntry WatchVqp(session::SessionClient& client, uint64_t vqp) {
  auto done = Drive(client, {session::SessionClient::Watch(vqp, 500 + vqp)}, 1);
  EXPECT_EQ(done.size(), 1u);
  return done.empty() ? session::CompletionEntry{} : done[0];
}

// Reaps notifications until `count` arrived or `wait` passed.
std::vector<session::NotifyEntry> Hear(session::SessionClient& client, size_t count,
                                       std::chrono::milliseconds wait) {
  std::vector<session::NotifyEntry> out;
  std::vector<session::NotifyEntry> batch(16);
  const auto give_up = std::chrono::steady_clock::now() + wait;
  while (out.size() < count && std::chrono::steady_clock::now() < give_up) {
    const uint32_t n = client.ReapNotifications(batch);
    out.insert(out.end(), batch.begin(), batch.begin() + n);
    if (n == 0) client.Wait(10);
  }
  return out;
}

TEST_F(EngineTest, ASessionHearsEachWriteWithImmediateOfTheVqpItWatchesOnce) {
  auto b = OpenWatcher(*b_.engine, 64);
  ASSERT_TRUE(b);
  const session::CompletionEntry unknown = WatchVqp(*b, peer_vqp_ + 1000);
  EXPECT_EQ(unknown.status, static_cast<uint32_t>(common::StatusCode::kNotFound));
  EXPECT_EQ(unknown.detail, static_cast<uint32_t>(session::SubmitField::kVqp));
  ASSERT_EQ(WatchVqp(*b, peer_vqp_).status, 0u);
  ASSERT_EQ(WatchVqp(*b, peer_vqp_).status, 0u);  // twice is once
  auto sink = std::make_shared<TransferSink>(64);
  for (uint64_t i = 0; i < 10; ++i)
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, 0, 8), sink).ok());
  const auto done = Collect(*sink, 10);
  ASSERT_EQ(done.size(), 10u);
  for (const auto& r : done) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  const auto heard = Hear(*b, 11, std::chrono::milliseconds(300));
  ASSERT_EQ(heard.size(), 10u) << "one notification per write, not one per watch";
  for (size_t i = 0; i < heard.size(); ++i) {
    EXPECT_EQ(heard[i].kind, static_cast<uint8_t>(session::NotifyKind::kNotification));
    EXPECT_EQ(heard[i].vqp_id, peer_vqp_);
    EXPECT_EQ(heard[i].seq, i);
    EXPECT_EQ(heard[i].imm, i);
    EXPECT_EQ(heard[i].byte_len, 8u);
    EXPECT_EQ(heard[i].wc_status, IBV_WC_SUCCESS);
  }
}

// The ring's last slot says that the client fell behind; its watches end there, the writes and
// other sessions go on, and a new watch hears again.
TEST_F(EngineTest, ANotificationRingLeftUnreapedEndsOnlyItsWatches) {
  auto b = OpenWatcher(*b_.engine, 4);
  auto other = OpenWatcher(*b_.engine, 64);
  ASSERT_TRUE(b && other);
  ASSERT_EQ(WatchVqp(*b, peer_vqp_).status, 0u);
  ASSERT_EQ(WatchVqp(*other, peer_vqp_).status, 0u);
  auto sink = std::make_shared<TransferSink>(64);
  for (uint64_t i = 0; i < 6; ++i)
    ASSERT_TRUE(a_.engine->SubmitTransfer(Write(i, 0, 8), sink).ok());
  const auto done = Collect(*sink, 6);
  ASSERT_EQ(done.size(), 6u);
  for (const auto& r : done) EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Hear(*other, 6, std::chrono::seconds(5)).size(), 6u);
  const auto heard = Hear(*b, 5, std::chrono::milliseconds(300));
  ASSERT_EQ(heard.size(), 4u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(heard[i].imm, i);
  EXPECT_EQ(heard[3].kind, static_cast<uint8_t>(session::NotifyKind::kWatchEnded));
  EXPECT_EQ(heard[3].status, static_cast<uint16_t>(common::StatusCode::kNoResource));
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(6, 0, 8), sink).ok());
  ASSERT_EQ(Collect(*sink, 1).size(), 1u);
  EXPECT_EQ(Hear(*other, 1, std::chrono::seconds(5)).size(), 1u);
  EXPECT_TRUE(Hear(*b, 1, std::chrono::milliseconds(200)).empty()) << "its watch had ended";
  ASSERT_EQ(WatchVqp(*b, peer_vqp_).status, 0u);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(7, 0, 8), sink).ok());
  const auto again = Hear(*b, 1, std::chrono::seconds(5));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].imm, 7u);
  EXPECT_EQ(again[0].seq, 7u);
}

TEST_F(EngineTest, DestroyingAWatchedVqpEndsItsWatch) {
  CreateVqpRequest r;
  r.config.num_qps = 2;
  auto doomed = b_.engine->CreateVirtualQp(r);
  ASSERT_TRUE(doomed.ok());
  auto b = OpenWatcher(*b_.engine, 8);
  ASSERT_TRUE(b);
  ASSERT_EQ(WatchVqp(*b, doomed->id).status, 0u);
  ASSERT_EQ(WatchVqp(*b, peer_vqp_).status, 0u);
  ASSERT_TRUE(b_.engine->DestroyVirtualQp(doomed->id).ok());
  const auto heard = Hear(*b, 1, std::chrono::seconds(5));
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].kind, static_cast<uint8_t>(session::NotifyKind::kWatchEnded));
  EXPECT_EQ(heard[0].vqp_id, doomed->id);
  EXPECT_EQ(heard[0].status, 0u);
  // The other watch goes on.
  auto sink = std::make_shared<TransferSink>(8);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(3, 0, 8), sink).ok());
  const auto next = Hear(*b, 1, std::chrono::seconds(5));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].vqp_id, peer_vqp_);
  EXPECT_EQ(next[0].imm, 3u);
}

// A client that moves its notification head past what the engine wrote ends its own session
// (named in its status) at the next notification; another watcher of the VQP hears it.
TEST_F(EngineTest, AClientScribblingOnItsNotificationRingEndsOnlyItsOwnSession) {
  auto fds = b_.engine->OpenSession({.rings = {8, 8, 64}});
  ASSERT_TRUE(fds.ok());
  const uint64_t hostile_id = fds->id;
  const session::SegmentHeader layout = session::SessionSegment::Layout({8, 8, 64});
  void* base =
      mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds->segment.get(), 0);
  ASSERT_NE(base, MAP_FAILED);
  auto hostile = session::SessionClient::Attach(fds->segment.release(), fds->submit_bell.release(),
                                                fds->complete_bell.release());
  auto fair = OpenWatcher(*b_.engine, 64);
  ASSERT_TRUE(hostile.ok() && fair);
  ASSERT_EQ(WatchVqp(**hostile, peer_vqp_).status, 0u);
  ASSERT_EQ(WatchVqp(*fair, peer_vqp_).status, 0u);
  auto* nq =
      reinterpret_cast<session::RingControl*>(static_cast<uint8_t*>(base) + layout.nq_control);
  nq->head.value.store(1000, std::memory_order_release);
  auto sink = std::make_shared<TransferSink>(8);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(0, 0, 8), sink).ok());
  ASSERT_EQ(Collect(*sink, 1).size(), 1u);
  EXPECT_EQ(Hear(*fair, 1, std::chrono::seconds(5)).size(), 1u);
  std::string broken;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (broken.empty() && std::chrono::steady_clock::now() < give_up) {
    auto st = b_.engine->GetSession(hostile_id);
    ASSERT_TRUE(st.ok());
    broken = st->broken;
    if (broken.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_NE(broken.find("notification head"), std::string::npos) << broken;
  munmap(base, layout.total_bytes);
  ASSERT_TRUE(a_.engine->SubmitTransfer(Write(1, 0, 8), sink).ok());
  const auto next = Hear(*fair, 1, std::chrono::seconds(5));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].imm, 1u);
}

// The engine writes every completion and notification slot as a session goes round its rings,
// refused entries included, so a session's segment ends up the agent's memory. One owner's open
// sessions stop at their rings' budget, with a message naming it; another owner's are not
// affected, and a closed session's bytes come back.
TEST_F(EngineTest, AnOwnersSessionsStopAtTheirRingBudgetAndLeaveOthersTheirs) {
  const session::RingSizes rings{1024, 1024, 1024};
  const uint64_t each = session::SessionSegment::Layout(rings).total_bytes;
  EngineOptions o;
  o.max_session_bytes_per_owner = 4 * each;
  Side a(2, o);
  ASSERT_TRUE(a.engine);
  constexpr OwnerId kGreedy = 7, kOther = 8;
  std::vector<uint64_t> opened;
  common::Status refused;
  for (int i = 0; i < 10 && refused.ok(); ++i) {
    common::Result<SessionFds> s = a.engine->OpenSession({.owner = kGreedy, .rings = rings});
    if (s.ok()) opened.push_back(s->id);
    refused = s.status();
  }
  EXPECT_EQ(opened.size(), 4u);
  EXPECT_EQ(refused.code(), common::StatusCode::kNoResource);
  EXPECT_NE(refused.message().find("this caller's sessions hold " + std::to_string(4 * each) +
                                   " bytes of rings, and one more of " + std::to_string(each) +
                                   " would pass its limit of " + std::to_string(4 * each) +
                                   " (max_session_bytes_per_caller)"),
            std::string::npos)
      << refused.ToString();
  EXPECT_TRUE(a.engine->OpenSession({.owner = kOther, .rings = rings}).ok());
  ASSERT_TRUE(a.engine->CloseSession(opened.front(), kGreedy).ok());
  EXPECT_TRUE(a.engine->OpenSession({.owner = kGreedy, .rings = rings}).ok());
}

}  // namespace
}  // namespace braid::engine
