// Engine-internal state (engine thread only): devices, VQPs, regions, transfers.
#ifndef BRAID_DATAPLANE_ENGINE_ENGINE_INTERNAL_H_
#define BRAID_DATAPLANE_ENGINE_ENGINE_INTERNAL_H_

#include <deque>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dataplane/engine/engine.h"
#include "dataplane/session/doorbell.h"
#include "dataplane/session/session_segment.h"

namespace braid::engine {

struct Engine::DeviceSlot {
  std::unique_ptr<verbs::Device> device;
  DeviceState state = DeviceState::kHealthy;
  // The port as last read (Engine::FollowPorts), and the state to return to when it comes back.
  bool port_active = true;
  DeviceState state_before_port_down = DeviceState::kHealthy;
  vqp::QpTraffic retired;  // traffic of destroyed VQPs' QPs on this device
};

// What a slot counts in a figure kept elsewhere: one VQP or region of its owner's, a session's
// ring bytes (Engine::OwnerUsage). Taken when the slot joins its table, given back when the slot is
// destroyed. The figures outlive every slot (Engine declares them first).
template <typename T>
class Charge {
 public:
  Charge() = default;
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() {
    if (count_ != nullptr) *count_ -= amount_;
  }
  void Take(T* count, T amount = 1) {
    count_ = count;
    amount_ = amount;
    *count_ += amount;
  }

 private:
  T* count_ = nullptr;
  T amount_ = 0;
};

struct QpRecovery {
  RecoveryPhase phase = RecoveryPhase::kIdle;
  uint32_t attempts = 0;         // failed attempts since the QP died
  uint64_t next_attempt_ns = 0;  // backoff
  uint64_t attempt = 0;          // id of the attempt in flight (answers to others are stale)
  uint64_t deadline_ns = 0;      // kAwaitingPeer: give up after this
  uint64_t recoveries = 0;
  vqp::QpCard initiator;          // kAccepting: the peer's entry
  uint64_t epoch = 0;             // the connection epoch of the attempt (initiator's VQP epoch + 1)
  uint64_t failing_since_ns = 0;  // first failed attempt since the QP was last healthy
  std::shared_ptr<std::promise<common::Result<vqp::QpCard>>> reply;  // kAccepting
  vqp::QpHealth reported = vqp::QpHealth::kHealthy;  // the health last turned into an event
};

// A remote region's keys in a VQP's key table: the handle, how many transfers use it (accepted and
// not yet released), and when it was last used. The table is small (VirtualQpConfig::max_keys);
// when it is full, the least recently used entry no transfer uses is evicted, so a VQP can target
// any number of peer regions over its life.
struct RemoteKeysEntry {
  uint32_t handle = 0;
  uint32_t users = 0;
  uint64_t last_use = 0;
};
using RemoteKeysCache =
    std::map<std::tuple<uint64_t, uint64_t, std::vector<uint32_t>>, RemoteKeysEntry>;

// A region registered in one VQP's protection domains: one MR per device the VQP uses (null for
// the others).
struct Registration {
  std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs;  // per device
  std::vector<uint32_t> Keys(bool remote) const;          // 0 for a device without an MR
};

// A region as the VQP's own QPs use it: registered (local access only) at its first transfer.
struct LocalUse {
  Registration registration;
  uint32_t handle = 0;  // the VQP's key-table entry
};

struct Engine::VqpSlot {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  OwnerUsage* usage = nullptr;  // its owner's (transfers on it are charged there)
  Charge<uint32_t> charge;      // one of usage->vqps
  std::string label;
  // Declared before what is registered in them and the QPs made in them: destroyed last.
  // Its own protection domain per device it uses: what the VQP's QPs may touch, locally and for
  // its peer, is what is registered here (its local uses and the regions granted to it).
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds;  // per device (null: unused)
  std::unordered_map<uint64_t, LocalUse> local_uses;          // by region id
  std::unique_ptr<vqp::VirtualQp> vqp;
  std::vector<std::string> peer_devices;  // the peer card's device names, in card order
  // (addr, length, rkeys in peer-card order) → key-table entry
  RemoteKeysCache remote_handles;
  uint64_t remote_uses = 0;      // the LRU clock of remote_handles
  std::deque<uint32_t> backlog;  // transfers waiting for room on the VQP, in arrival order
  std::vector<std::shared_ptr<NotificationWatcher>> watchers;
  std::vector<SessionSlot*> session_watchers;  // sessions whose notification ring hears this VQP
  uint64_t notifications = 0;
  // The peer VQP's identity, pinned at connect: only it may recover this VQP's QPs.
  std::string peer_endpoint;  // the peer agent's control endpoint (recovery)
  uint64_t peer_vqp_id = 0;
  uint64_t peer_incarnation = 0;
  std::string peer_identity;  // "" when the peer called without TLS: not checked then
  uint64_t epoch = 0;
  VqpState state = VqpState::kCreated;
  std::string failure;               // why it failed
  std::vector<QpRecovery> recovery;  // per data QP
  uint64_t promised_fds = 0;         // until connected: the descriptors its QPs will hold
  bool on_backlog_list = false;      // in Engine::transfers_.backlogged_vqps
  bool on_attention_list = false;    // in Engine::recovery_.attention
};

struct Engine::RegionSlot {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  Charge<uint32_t> charge;      // one of its owner's OwnerUsage::regions
  Charge<uint64_t> file_bytes;  // a region file's length, in its owner's OwnerUsage::region_bytes
  std::string label;
  std::unique_ptr<ShmRegion> shm;
  // The VQPs allowed to reach it over the wire, each by a registration in that VQP's protection
  // domains with remote access (VQP id → registration). Dropped before the VQP's domains.
  std::map<uint64_t, Registration> grants;
  uint32_t in_flight = 0;
};

struct Engine::Transfer {
  bool active = false;    // slot in use
  bool reported = false;  // the sink has its result (deadline may report before the WC)
  bool posted = false;    // a virtual WR is in flight
  uint32_t generation = 0;
  uint64_t op_id = 0;
  uint64_t vqp_id = 0;
  uint64_t region_id = 0;
  const ShmRegion* local_memory = nullptr;  // region_id's, while posted (regions outlive them)
  RemoteKeysCache::iterator remote_keys;    // valid while has_remote_keys (and the VQP exists)
  bool has_remote_keys = false;
  OwnerUsage* usage = nullptr;  // its VQP owner's, charged one transfer until release
  TransferOp op = TransferOp::kWrite;
  uint64_t length = 0;
  uint64_t start_ns = 0;
  uint64_t deadline_ns = 0;
  vqp::VirtualSendWr wr;
  // Where the outcome goes: the sink (gRPC and in-process callers) or a session's completion ring
  // (op_id is then the entry's user_data). The session is set until the outcome is written.
  std::shared_ptr<TransferSink> sink;
  SessionSlot* session = nullptr;
};

// A peer's region bound for one session on one VQP (Engine::BindRemote): checked once, its keys
// in the VQP's key table (the binding holds one use, so the entry is never evicted under it).
struct BoundRemote {
  uint64_t vqp_id = 0;
  uint64_t addr = 0;
  uint64_t length = 0;
  RemoteKeysCache::iterator keys;  // valid while the VQP exists
};

// A local session: its segment, the engine's side of both rings and both doorbells.
struct Engine::SessionSlot {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  Charge<uint64_t> ring_bytes;  // its segment's, in its owner's OwnerUsage::session_bytes
  std::unique_ptr<session::SessionSegment> segment;
  session::SpscRing<session::SubmitEntry> submissions;      // the engine consumes
  session::SpscRing<session::CompletionEntry> completions;  // the engine produces
  session::SpscRing<session::NotifyEntry> notices;          // the engine produces
  session::Doorbell submit_bell;     // the client rings it; in the engine's wait set
  session::Doorbell complete_bell;   // the engine rings it when the client sleeps
  std::vector<BoundRemote> remotes;  // by handle
  std::vector<uint64_t> watching;    // VQPs whose notifications go to `notices`
  uint32_t in_flight = 0;            // accepted, completion not yet written: owed a slot
  bool open = true;                  // taking entries
  bool on_wake_list = false;         // in Engine::sessions_.to_wake
  std::string broken;                // why the engine stopped reading the client's ring
  uint64_t submitted = 0;
  uint64_t refused = 0;
  uint64_t completed = 0;
};

struct Engine::Sessions {
  std::map<uint64_t, std::unique_ptr<SessionSlot>> by_id;
  std::vector<SessionSlot*> open;     // taking entries (the loop's walk)
  std::vector<SessionSlot*> to_wake;  // got completions or notices since the last doorbell check
  uint64_t next_id = 1;
  std::array<session::SubmitEntry, 32> batch{};
};

// Hands `item` to every open watcher (NotificationWatcher, EventWatcher); a watcher that is
// closed, or full (it fell behind: marked overflowed and closed), is forgotten.
template <typename Watcher, typename Item>
void FanOut(std::vector<std::shared_ptr<Watcher>>& watchers, const Item& item) {
  std::erase_if(watchers, [&](const std::shared_ptr<Watcher>& w) {
    if (w->closed.load(std::memory_order_relaxed)) return true;
    Item copy = item;
    if (!w->events.Push(std::move(copy)).ok()) {
      w->overflowed.store(true);
      w->closed.store(true);
      w->events.Wake();  // its stream ends now, not at its next look
      return true;
    }
    return false;
  });
}

// Runs `fn` on the engine thread and waits for its answer, at most the call timeout.
template <typename R, typename F>
common::Result<R> Engine::Call(F fn) {
  auto promise = std::make_shared<std::promise<common::Result<R>>>();
  auto future = promise->get_future();
  common::Status pushed = commands_.Push(
      [promise, fn = std::move(fn)](Engine& e) mutable { promise->set_value(fn(e)); });
  if (!pushed.ok()) return common::Status::NoResource();
  if (future.wait_for(std::chrono::milliseconds(options_.call_timeout_ms)) !=
      std::future_status::ready) {
    return common::Status::DeadlineExceeded("the data-plane engine did not answer within " +
                                            std::to_string(options_.call_timeout_ms) + " ms");
  }
  return future.get();
}

// offset + length within [0, size], without overflow.
inline bool Within(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// Receive WRs the engine posts for notifications carry this bit in wr_id.
inline constexpr uint64_t kRecvWrBit = 1ull << 63;

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_ENGINE_INTERNAL_H_
