// Vocabulary of the engine's interface: requests from the control plane, snapshots back.
//
// Plain values (no protobuf, no gRPC): the server maps them to and from braid.v1 messages.
// Results that cross threads (TransferResult, Notification) travel through EventQueues.
#ifndef BRAID_DATAPLANE_ENGINE_ENGINE_TYPES_H_
#define BRAID_DATAPLANE_ENGINE_ENGINE_TYPES_H_

#include <infiniband/verbs.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/common/event_queue.h"
#include "dataplane/common/outcome.h"
#include "dataplane/common/status.h"
#include "dataplane/common/unique_fd.h"
#include "dataplane/session/session_segment.h"
#include "dataplane/verbs/provider.h"
#include "dataplane/vqp/business_card.h"
#include "dataplane/vqp/virtual_qp.h"
#include "dataplane/vqp/vqp_types.h"

namespace braid::engine {

enum class DeviceState : uint8_t { kHealthy, kDrained, kFaulted };
const char* DeviceStateName(DeviceState state);

struct DeviceStatus {
  std::string name;
  std::string provider;
  std::string gid;
  DeviceState state = DeviceState::kHealthy;
  bool port_active = false;
  // The state once the port is up: `state` while it is; while it is down, what the device returns
  // to (healthy, drained by the operator, or faulted by an injected fault).
  DeviceState state_when_port_up = DeviceState::kHealthy;
  uint32_t mtu_bytes = 0;
  std::array<uint32_t, vqp::kNumQpHealths> qps_by_health{};  // indexed by vqp::QpHealth
  uint32_t outstanding_wrs = 0;
  vqp::QpTraffic traffic;  // monotonic: includes destroyed VQPs
};

// Who a call acts for. Every VQP and region belongs to the owner that created it; a call scoped to
// an owner finds only that owner's, and anything else is kNotFound, as if it did not exist.
// kAnyOwner: an unscoped call (operators; the engine's own tests), and the owner of what such a
// call creates when it names none.
using OwnerId = uint32_t;
inline constexpr OwnerId kAnyOwner = 0;

// A VQP's or region's label: the caller's name for it, shown in listings. Bounded, as everything a
// caller makes the agent keep (unbounded, 100 regions with 4 MB labels held 385 MiB).
inline constexpr size_t kMaxLabelBytes = 256;

struct CreateVqpRequest {
  OwnerId owner = kAnyOwner;
  vqp::VirtualQpConfig config;
  std::vector<std::string> devices;  // empty: every healthy device
  std::string label;
};

// Where a dead data QP is on its way back.
enum class RecoveryPhase : uint8_t {
  kIdle,          // healthy, or dead and waiting for its next attempt (backoff)
  kResetting,     // this side leads: the QP flushes before its reset
  kAwaitingPeer,  // reset; the peer agent was asked to reset and reconnect its side
  kAccepting,     // the peer leads: ours flushes, then connects to the peer's entry
  kProbing,       // reconnected; its probe WRITE decides: Healthy (success) or Dead (failure)
};
const char* RecoveryPhaseName(RecoveryPhase phase);

// A request the engine hands to the control plane: ask the peer agent to reset its side of data
// QP `qp_index` and connect it to `card`; the answer comes back through CompleteRecovery.
struct RecoveryRequest {
  uint64_t vqp_id = 0;
  uint64_t attempt = 0;
  uint32_t failed_attempts = 0;  // before this one, since the QP died (0: the first try)
  std::string peer_endpoint;
  uint64_t peer_vqp_id = 0;
  uint64_t peer_incarnation = 0;  // the peer VQP's identity, pinned at connect
  uint32_t qp_index = 0;
  vqp::QpCard card;
  uint64_t epoch = 0;
};

// The peer's side of a recovery, as the accepting agent receives it (RecoverQp): which of our
// VQPs, and who asks. Accepted only when it names this agent's incarnation and the VQP is
// connected with exactly the asking VQP (endpoint, id and incarnation of the card it connected
// with); anything else is NOT_FOUND.
struct RecoveryOffer {
  uint64_t vqp_id = 0;          // ours
  uint64_t to_incarnation = 0;  // ours, as the initiator's card recorded it
  uint32_t qp_index = 0;
  vqp::QpCard card;  // the initiator's reset QP
  uint64_t epoch = 0;
  std::string from_endpoint;
  uint64_t from_vqp_id = 0;
  uint64_t from_incarnation = 0;
  std::string from_identity;  // who called, as the control plane authenticated it
};

// A virtual QP's life: created, connected, and failed when it can never carry work again (its
// peer is gone, or no data QP came back within the recovery budget); a failed VQP refuses work
// at once until it is destroyed.
enum class VqpState : uint8_t { kCreated, kConnected, kFailed };
inline constexpr int kNumVqpStates = 3;
const char* VqpStateName(VqpState state);

// State changes an orchestrator can react to without polling (WatchEvents).
enum class EventKind : uint8_t {
  kQpDied,         // cause: the completion status that killed it
  kQpCoolingDown,  // stalled or kept dying: out of scheduling until its cooldown ends
  kQpRecovering,   // reset and reconnect with the peer under way
  kQpRecovered,    // back in service after a recovery
  kQpReadmitted,   // back in service after a cooldown
  kQpDraining,     // its device was drained
  kVqpConnected,
  kVqpFailed,  // cause: why it can never carry work again
  kVqpDestroyed,
  kDeviceDrained,
  kDeviceFaulted,
  kDeviceHealthy,
  kAccessRevoked,  // a VQP's grant on a region ended (revoked, or the region deregistered)
};
const char* EventKindName(EventKind kind);

struct EngineEvent {
  uint64_t seq = 0;  // per engine, from 1, no gaps
  uint64_t time_unix_ns = 0;
  EventKind kind = EventKind::kQpDied;
  uint64_t vqp_id = 0;    // 0: not about a VQP
  int32_t qp_index = -1;  // -1: not about a physical QP
  std::string device;
  std::string cause;
};

// A WatchEvents subscriber; like NotificationWatcher, closed when it falls behind, and its queue's
// memory follows its backlog.
struct EventWatcher {
  explicit EventWatcher(size_t capacity) : events(capacity) {}
  EventWatcher(size_t capacity, std::shared_ptr<common::Doorbell> doorbell)
      : events(capacity, std::move(doorbell)) {}
  common::EventQueue<EngineEvent, common::SegmentedQueue<EngineEvent>> events;
  std::atomic<bool> closed{false};
  std::atomic<bool> overflowed{false};
};

struct PhysicalQpStatus {
  uint32_t index = 0;
  std::string device;
  uint32_t qp_num = 0;
  bool message_qp = false;
  vqp::QpHealth health = vqp::QpHealth::kHealthy;
  ibv_wc_status death = IBV_WC_SUCCESS;  // what killed a dead QP
  uint32_t outstanding_wrs = 0;
  vqp::QpTraffic traffic;
  double drain_rate = 0;  // bytes/s the scheduler measured (0: unknown)
  RecoveryPhase recovery = RecoveryPhase::kIdle;
  uint32_t recovery_attempts = 0;
  uint64_t recoveries = 0;
};

struct VqpStatus {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  std::string label;
  bool connected = false;
  vqp::VirtualQpConfig config;
  vqp::BusinessCard card;
  std::vector<PhysicalQpStatus> qps;
  uint32_t healthy_data_qps = 0;
  uint32_t pending_sends = 0;
  uint32_t pending_recvs = 0;
  uint64_t failovers = 0;
  uint64_t qps_died = 0;
  uint64_t notifications = 0;
  uint64_t epoch = 0;
  VqpState state = VqpState::kCreated;
  std::string failure;  // why it failed (kFailed)
};

// What a peer needs to target a region through one VQP: the region's owner granted that VQP access
// (Engine::GrantAccess); the keys work only on the QPs of `vqp_id`, the VQP the grant names.
struct RemoteRegion {
  std::string agent_id;
  uint64_t region_id = 0;
  uint64_t vqp_id = 0;  // the VQP of the region's agent that may reach it (0: not said)
  uint64_t addr = 0;
  uint64_t length = 0;
  std::vector<std::pair<std::string, uint32_t>> keys;  // (device, rkey)
};

struct RegionStatus {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  std::string label;
  uint64_t length = 0;
  std::string path;
  std::vector<RemoteRegion> grants;  // one per VQP allowed to reach it over the wire
  uint32_t in_flight = 0;
};

// Which part of a list to describe: entries with ids after `after`, at most `limit` of them
// (0: all). Ids only grow, so walking pages by the last id seen lists every entry that lives
// through the walk exactly once, whatever is made or destroyed between pages.
struct ListPage {
  uint64_t after = 0;
  uint32_t limit = 0;
};

// One page of a list, by id; `next_after` is the `after` of the next page (0: this was the last).
template <typename T>
struct Listed {
  std::vector<T> items;
  uint64_t next_after = 0;
};

struct RegisterRequest {
  uint64_t length = 0;
  std::string label;
  OwnerId owner = kAnyOwner;
  int file_uid = -1;                 // the region file's owner (-1: the agent's user); mode 0600
  std::vector<uint64_t> grant_vqps;  // VQPs (the owner's) granted access at registration
  // The client's own memory (RegisterFd): `length` bytes at `fd_offset` of the file behind `fd`
  // (a memfd sealed against shrinking), mapped and registered where it lies, with no copy. The
  // mapping holds the memory; the caller keeps `fd` (and may close it). -1: the agent makes a
  // region file in its directory.
  int fd = -1;
  uint64_t fd_offset = 0;
};

enum class TransferOp : uint8_t { kWrite, kWriteWithImm, kRead };
inline constexpr int kNumTransferOps = 3;
const char* TransferOpName(TransferOp op);

struct TransferRequest {
  OwnerId owner = kAnyOwner;  // the VQP and the local region must be the owner's
  uint64_t op_id = 0;
  uint64_t vqp_id = 0;
  TransferOp op = TransferOp::kWrite;
  uint64_t local_region = 0;
  uint64_t local_offset = 0;
  RemoteRegion remote;
  uint64_t remote_offset = 0;
  uint64_t length = 0;
  uint32_t imm = 0;         // host order
  uint32_t timeout_ms = 0;  // 0: the engine's default
};

struct TransferResult {
  uint64_t op_id = 0;
  common::Status status;  // OK, or why the transfer failed
  ibv_wc_status wc_status = IBV_WC_SUCCESS;
  bool posted = false;  // a virtual WR was posted (wc_status is meaningful)
  uint64_t bytes = 0;
  uint64_t latency_ns = 0;
};

// Where one client's transfer completions go. The engine thread alone pushes; one client thread
// at a time pops. Capacity must cover the client's window (a full sink is a client bug: the result
// is dropped and counted); the memory follows the results waiting, not the capacity, so a wide
// window costs an idle or slow stream nothing.
struct TransferSink {
  using Queue = common::EventQueue<TransferResult, common::SegmentedQueue<TransferResult>>;
  explicit TransferSink(size_t capacity) : results(capacity) {}
  TransferSink(size_t capacity, std::shared_ptr<common::Doorbell> doorbell)
      : results(capacity, std::move(doorbell)) {}
  Queue results;
  std::atomic<uint64_t> dropped{0};
};

struct Notification {
  uint64_t vqp_id = 0;
  uint64_t seq = 0;
  uint32_t imm = 0;  // host order
  uint64_t byte_len = 0;
  ibv_wc_status status = IBV_WC_SUCCESS;
};

// A WatchNotifications subscriber. `closed` turns true when the VQP is destroyed or the watcher
// fell behind (`overflowed`, `capacity` notifications unread); the engine then forgets it. Its
// queue holds memory for its backlog only: thousands of idle watchers cost little.
struct NotificationWatcher {
  explicit NotificationWatcher(size_t capacity) : events(capacity) {}
  NotificationWatcher(size_t capacity, std::shared_ptr<common::Doorbell> doorbell)
      : events(capacity, std::move(doorbell)) {}
  common::EventQueue<Notification, common::SegmentedQueue<Notification>> events;
  std::atomic<bool> closed{false};
  std::atomic<bool> overflowed{false};
};

// Outcome labels of virtual WR completions (dataplane/common/outcome.h).
using common::kNumOutcomes;
using common::kOutcomeCancelled;
using common::kOutcomeDeadline;
using common::OutcomeName;

// Virtual WR latency histogram, upper bounds in seconds (plus +Inf).
inline constexpr std::array<double, 14> kLatencyBounds = {10e-6,  25e-6,  50e-6,  100e-6, 250e-6,
                                                          500e-6, 1e-3,   2.5e-3, 5e-3,   10e-3,
                                                          25e-3,  100e-3, 1.0,    10.0};

// A local session (doc/local_data_path.md): its rings' sizes and the owner it acts for (every VQP
// and region its entries name must be that owner's).
struct SessionRequest {
  OwnerId owner = kAnyOwner;
  session::RingSizes rings;
};

// What the client needs to attach: duplicates of the engine's descriptors (the receiver owns
// them; the server passes them on with SCM_RIGHTS).
struct SessionFds {
  uint64_t id = 0;
  common::UniqueFd segment;
  common::UniqueFd submit_bell;    // the client rings it when the engine sleeps
  common::UniqueFd complete_bell;  // the engine rings it when the client sleeps
};

struct SessionStatus {
  uint64_t id = 0;
  OwnerId owner = kAnyOwner;
  uint64_t submitted = 0;  // entries taken from the submission ring
  uint64_t refused = 0;    // of them, refused before reaching a VQP (bad entries)
  uint64_t completed = 0;  // completion entries written
  uint32_t in_flight = 0;  // accepted, completion not yet written
  uint32_t bound_remotes = 0;
  std::string broken;  // non-empty: the client broke the ring protocol (why); no more entries
};

struct EngineSnapshot {
  std::vector<DeviceStatus> devices;
  struct Vqp {
    uint64_t id = 0;
    std::string label;
    uint32_t pending_sends = 0;
    uint32_t pending_recvs = 0;
    uint32_t backlog = 0;  // transfers waiting for room on the VQP
    VqpState state = VqpState::kCreated;
    std::vector<PhysicalQpStatus> qps;
    uint64_t failovers = 0;  // its counters, summed into the snapshot's
    uint64_t qps_died = 0;
  };
  std::vector<Vqp> vqps;
  std::array<std::array<uint64_t, kNumOutcomes>, kNumTransferOps> completions{};
  std::array<uint64_t, kLatencyBounds.size() + 1> latency_buckets{};  // not cumulative
  double latency_sum_seconds = 0;
  uint64_t failovers = 0;
  uint64_t qps_died = 0;
  uint64_t recoveries_succeeded = 0;
  uint64_t recoveries_failed = 0;
  uint64_t notifications = 0;
  uint64_t transfers_in_flight = 0;
  bool transfers_refused = false;  // new transfers are refused (the agent drains to stop)
  uint64_t registered_bytes = 0;
  uint32_t regions = 0;
  uint64_t region_dir_size_bytes = 0;  // the region directory's file system (0: none stated)
  uint64_t region_dir_free_bytes = 0;  // what a region file may still take there
  uint64_t memory_limit_bytes = 0;     // the agent's memory cgroup's tightest (0: none)
  uint64_t memory_room_bytes = 0;      // what its shared memory may still take under it
  uint64_t loop_iterations = 0;
  uint64_t commands = 0;  // control commands run (a list or snapshot takes one per batch)
  uint64_t sleeps = 0;
  uint64_t yields = 0;              // empty busy-poll turns after which the loop gave its core away
  uint64_t command_queue_full = 0;  // transfers refused by a full command queue (then held)
  uint32_t sessions = 0;
  std::vector<verbs::ProviderCounter> provider_counters;  // verbs::Provider::ReadCounters
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_ENGINE_TYPES_H_
