// Engine: the data-plane thread. It alone owns the devices, the virtual CQ, every VQP and region.
//
// Control threads (the gRPC server) talk to it through a bounded command queue:
//  - control calls (create/connect/destroy a VQP, register memory, drain, snapshot...) block the
//    caller until the engine answered, at most `call_timeout_ms` (then kDeadlineExceeded: the
//    engine is stalled; nothing is half-done on the caller's side);
//  - transfers are submitted without blocking and complete into the caller's TransferSink;
//  - receiver notifications go to NotificationWatchers.
// The loop: take commands, post (transfers waiting for room first; what one turn posts is one
// post batch per device, verbs::Device::BeginPostBatch), poll the virtual CQ (bounded), deliver
// completions, check deadlines. It busy-polls while transfers are in flight, until
// `in_flight_spin_us` pass without progress, and for `idle_linger_us` after the last activity
// (giving its core away after each turn that found nothing, `yield_when_idle`); then it arms the
// CQs and sleeps in epoll on the command queue's eventfd, the CQs' wakeup fds and the devices'
// progress fds (soft NICs: their sockets), at most 1 ms with work in flight (deadlines, soft NIC
// timers) and `idle_wait_ms` without, so the heartbeat the stall watchdog reads keeps moving: an
// idle engine uses no CPU to speak of.
// Deadlines: every transfer has one (its own or `default_timeout_ms`). Past it, the transfer
// completes with kDeadlineExceeded at once; a posted virtual WR keeps its local region referenced
// until its real completion arrives (the hardware may still touch the memory).
//
// Threading: public methods from any thread except the engine's own. Counters and snapshots are
// plain values copied on the engine thread (Snapshot()).
// Ownership: the provider is not owned and must outlive the engine.
#ifndef BRAID_DATAPLANE_ENGINE_ENGINE_H_
#define BRAID_DATAPLANE_ENGINE_ENGINE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "dataplane/common/event_queue.h"
#include "dataplane/common/result.h"
#include "dataplane/engine/deadline_heap.h"
#include "dataplane/engine/engine_options.h"
#include "dataplane/engine/engine_types.h"
#include "dataplane/engine/fd_budget.h"
#include "dataplane/engine/memory_room.h"
#include "dataplane/engine/port_watcher.h"
#include "dataplane/engine/region_dir.h"
#include "dataplane/engine/shm_region.h"
#include "dataplane/session/ring_entry.h"
#include "dataplane/verbs/provider.h"
#include "dataplane/vqp/virtual_cq.h"
#include "dataplane/vqp/virtual_qp.h"

namespace braid::engine {

enum class FaultKind : uint8_t { kStallEngine, kDeviceDown, kDeviceUp, kBreakQp };
struct FaultRequest {
  FaultKind kind = FaultKind::kStallEngine;
  uint32_t duration_ms = 0;
  std::string device;
  uint64_t vqp_id = 0;
  uint32_t qp_index = 0;
};

struct Registration;  // engine_internal.h

class Engine {
 public:
  // Starts the thread, which opens the devices; returns once they are open (or why not).
  static common::Result<std::unique_ptr<Engine>> Start(EngineOptions options);
  // Stops the thread; destroys every VQP (in-flight transfers end WR_FLUSH_ERR) and region.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineOptions& options() const { return options_; }
  std::string provider_name() const { return std::string(options_.provider->name()); }

  common::Result<std::vector<DeviceStatus>> ListDevices();
  common::Result<VqpStatus> CreateVirtualQp(CreateVqpRequest request);
  // `scope`: the owner the call acts for (engine_types.h, OwnerId); kAnyOwner: unscoped.
  common::Result<VqpStatus> ConnectVirtualQp(uint64_t vqp_id, vqp::BusinessCard remote,
                                             OwnerId scope = kAnyOwner);
  common::Result<VqpStatus> GetVirtualQp(uint64_t vqp_id, OwnerId scope = kAnyOwner);
  // Lists take one engine command per batch of 128 entries (the data plane runs between them).
  common::Result<Listed<VqpStatus>> ListVirtualQps(OwnerId scope, ListPage page);
  common::Result<std::vector<VqpStatus>> ListVirtualQps(OwnerId scope = kAnyOwner);
  common::Status DestroyVirtualQp(uint64_t vqp_id, OwnerId scope = kAnyOwner);
  // A region is reachable over the wire only through the VQPs its owner granted access: each
  // grant is a registration in that VQP's protection domain (every VQP has its own), so the QPs
  // of any other VQP get IBV_WC_REM_ACCESS_ERR from the NIC with its keys.
  common::Result<RegionStatus> RegisterMemory(RegisterRequest request);
  common::Result<RegionStatus> RegisterMemory(uint64_t length, std::string label,
                                              OwnerId owner = kAnyOwner);
  common::Status DeregisterMemory(uint64_t region_id, OwnerId scope = kAnyOwner);
  // Grants VQP `vqp_id` (same owner) access to region `region_id`; returns what its peer needs.
  // Granting twice returns the same keys.
  common::Result<RemoteRegion> GrantAccess(uint64_t region_id, uint64_t vqp_id,
                                           OwnerId scope = kAnyOwner);
  // Ends the grant: the keys are deregistered before this returns, so the peer's next access
  // through them fails with IBV_WC_REM_ACCESS_ERR (an access already under way may complete).
  common::Status RevokeAccess(uint64_t region_id, uint64_t vqp_id, OwnerId scope = kAnyOwner);
  common::Result<Listed<RegionStatus>> ListRegions(OwnerId scope, ListPage page);
  common::Result<std::vector<RegionStatus>> ListRegions(OwnerId scope = kAnyOwner);
  common::Result<DeviceStatus> DrainDevice(std::string device);
  common::Result<DeviceStatus> UndrainDevice(std::string device);
  common::Status InjectFault(FaultRequest request);
  common::Result<EngineSnapshot> Snapshot();
  // Subscribes `watcher` to the VQP's notifications; none is missed after this returns OK.
  common::Status Watch(uint64_t vqp_id, std::shared_ptr<NotificationWatcher> watcher,
                       OwnerId scope = kAnyOwner);
  // Subscribes `watcher` to every state change (EngineEvent); none is missed after OK.
  common::Status WatchEvents(std::shared_ptr<EventWatcher> watcher);
  // Lets go of the closed watchers of VQP `vqp_id` (0: of the event stream) now rather than at
  // the next delivery, so a cancelled stream's queue (and its eventfd) is freed at once.
  // Non-blocking; best effort when the command queue is full.
  void PruneWatchers(uint64_t vqp_id);
  uint64_t incarnation() const { return incarnation_; }
  // The devices opened at Start (fixed from then on).
  size_t num_devices() const { return devices_.size(); }
  // Region files of an earlier process of this agent (killed before it could remove them) that
  // Start removed from the region directory.
  uint32_t stale_region_files_removed() const { return regions_.dir->stale_files_removed(); }

  // Recovery (dead QPs come back). The engine asks for the peer's side through recovery_requests();
  // the control plane calls the peer agent and reports back with CompleteRecovery (non-blocking).
  // AcceptRecovery is the peer's side: it resets our QP, connects it to the initiator's entry
  // and returns ours (blocking, at most the call timeout).
  common::EventQueue<RecoveryRequest>& recovery_requests() { return recovery_.requests; }
  void CompleteRecovery(uint64_t vqp_id, uint32_t qp_index, uint64_t attempt,
                        common::Result<vqp::QpCard> peer);
  common::Result<vqp::QpCard> AcceptRecovery(const RecoveryOffer& offer);

  // Non-blocking. kNoResource: the command queue is full (only while the engine is stalled);
  // then `on_room`, if given, rings once the engine has taken commands again (submit once more).
  // Otherwise exactly one TransferResult reaches `sink`.
  common::Status SubmitTransfer(const TransferRequest& request, std::shared_ptr<TransferSink> sink,
                                const std::shared_ptr<common::Doorbell>& on_room = nullptr);
  // The same for many transfers as one command (a client's batch: one queue entry, not one per
  // transfer); they start in the order given. On success `requests` is taken (left empty); on
  // kNoResource it is left as it was, none of them started.
  common::Status SubmitTransfers(std::vector<TransferRequest>& requests,
                                 std::shared_ptr<TransferSink> sink,
                                 const std::shared_ptr<common::Doorbell>& on_room = nullptr);

  // Local sessions (engine_sessions.cc; doc/local_data_path.md). OpenSession makes the shared
  // segment and the two doorbells. From then on the engine takes the session's entries straight
  // from its submission ring (no command per operation) and writes each outcome into its
  // completion ring. An entry is taken only while its completion is sure to find a slot: the
  // completion ring's free space is the session's window, end to end.
  common::Result<SessionFds> OpenSession(SessionRequest request);
  // Checks a peer's region for VQP `vqp_id` (the session owner's) once, and resolves its keys
  // into a handle that a SubmitEntry's `remote_region` names. Handles last until the session ends.
  common::Result<uint32_t> BindRemote(uint64_t session_id, uint64_t vqp_id, RemoteRegion remote,
                                      OwnerId scope = kAnyOwner);
  common::Result<SessionStatus> GetSession(uint64_t session_id, OwnerId scope = kAnyOwner);
  // Ends the session (its client is done or gone): no entry is taken any more, and what was
  // accepted completes into nothing. A posted virtual WR keeps its region referenced until its
  // real completion arrives.
  common::Status CloseSession(uint64_t session_id, OwnerId scope = kAnyOwner);
  // Whether `needed` more descriptors, opened outside the engine (a client's connection), leave
  // the control plane's reserve free: the budget VQPs and sessions are admitted against.
  // kNoResource naming the limit when not; `what` names the request.
  common::Status AdmitDescriptors(uint64_t needed, std::string what);

  // The agent is draining before it goes: transfers submitted from now on are refused at once
  // with kCancelled (`why`); those accepted before go on. Blocks until done (the call timeout).
  common::Status RefuseTransfers(std::string why);
  // Transfers accepted and not yet completed to their caller (the drain waits for 0).
  common::Result<uint64_t> TransfersInFlight();
  // The agent is going away: every transfer not yet reported completes now with kCancelled
  // (`why`), and transfers submitted from now on are refused at once. A posted virtual WR keeps
  // its region referenced until its completion arrives. Blocks until done (the call timeout).
  common::Status StopTransfers(std::string why);

  // Devices in the healthy state (neither drained nor faulted); read without a command, so a
  // stalled engine cannot block the health check.
  uint32_t healthy_devices() const {
    return published_.healthy_devices.load(std::memory_order_relaxed);
  }
  // VQPs destroyed and regions deregistered so far (any thread): memory was given back, worth
  // returning to the system.
  uint64_t releases() const { return published_.releases.load(std::memory_order_relaxed); }
  // Monotonic nanoseconds of the loop's last turn (the stall watchdog reads it).
  uint64_t heartbeat_ns() const { return published_.heartbeat_ns.load(std::memory_order_relaxed); }
  static uint64_t NowNs();

 private:
  using Command = std::function<void(Engine&)>;
  struct DeviceSlot;
  struct VqpSlot;
  struct RegionSlot;
  struct Transfer;
  struct SessionSlot;
  struct Sessions;  // engine_internal.h
  // What one owner holds at once, counted as it is made and given back, so admission against the
  // per-owner limits (EngineOptions' max_*_per_owner) asks a count instead of walking the tables.
  // An owner's entry is made at its first call and kept: owners are the config's identities.
  struct OwnerUsage {
    uint32_t vqps = 0;
    uint32_t regions = 0;
    uint64_t region_bytes = 0;   // of its region files in the region directory
    uint32_t transfers = 0;      // slots of the transfer table, from acceptance to release
    uint64_t session_bytes = 0;  // the shared segments of its open sessions
  };
  struct CreateKey {
   private:
    CreateKey() = default;
    friend class Engine;
  };

 public:
  Engine(CreateKey, EngineOptions options);

 private:
  template <typename R, typename F>
  common::Result<R> Call(F fn);
  common::Status CallStatus(std::function<common::Status(Engine&)> fn);
  // Queues a transfer command; when the queue is full, registers `on_room` (if any) and tries
  // once more. The command is left intact when both pushes are refused (engine.cc).
  common::Status PushTransferCommand(Command& command,
                                     const std::shared_ptr<common::Doorbell>& on_room);

  // The thread (engine.cc).
  common::Status Init();
  void Run();
  bool RunCommands();
  void YieldCore();             // after a turn that found nothing, unless yield_when_idle is off
  void Sleep(uint32_t max_ms);  // arms the CQs and waits on the engine's fds, at most max_ms
  common::Status SetupWaitSet();
  void Shutdown();
  DeviceStatus DescribeDevice(size_t index) const;
  // All but the VQPs, which Snapshot() adds a batch per command through SnapshotVqp.
  EngineSnapshot TakeSnapshot() const;
  EngineSnapshot::Vqp SnapshotVqp(const VqpSlot& slot) const;
  // What `batch(engine, after, room, out)` describes (at most `room` entries after id `after`),
  // one command per batch until `page` is full or it returns 0 (the last id it looked at
  // otherwise): lists and snapshots never hold the loop for more than a batch (engine.cc,
  // kDescribeBatch).
  template <typename T, typename Batch>
  common::Result<Listed<T>> DescribePage(Batch batch, ListPage page);
  common::Result<size_t> FindDevice(const std::string& name) const;
  common::Result<DeviceStatus> SetDeviceDrained(const std::string& name, bool drained);
  common::Status DoInjectFault(const FaultRequest& request);
  void PublishDeviceHealth();
  // Faults or restores each device whose port changed, by PortWatcher's readings (each second).
  void FollowPorts(const PortWatcher::Readings& ports);
  // The devices, as Init opened them (the engine thread; or Start, once Init is done).
  std::vector<verbs::Device*> DevicePointers() const;

  // VQPs and regions (engine_vqps.cc).
  common::Result<VqpStatus> DoCreate(const CreateVqpRequest& request);
  // Refuses a card of another agent that names one of this agent's exclusive device addresses.
  common::Status CheckPeerAddresses(const vqp::BusinessCard& remote) const;
  common::Result<VqpStatus> DoConnect(uint64_t vqp_id, const vqp::BusinessCard& remote,
                                      OwnerId scope);
  common::Status DoDestroy(uint64_t vqp_id, OwnerId scope = kAnyOwner);
  // The VQP, if it exists and `scope` may see it (kNotFound otherwise, the same either way).
  common::Result<VqpSlot*> FindVqp(uint64_t vqp_id, OwnerId scope = kAnyOwner);
  // The same with no message built (null when FindVqp would say kNotFound): the per-operation
  // paths, whose refusals carry a code or a field.
  VqpSlot* VisibleVqp(uint64_t vqp_id, OwnerId scope);
  // The protection domain of `owner` on `device` (made on first use).
  common::Result<RegionSlot*> FindRegion(uint64_t region_id, OwnerId scope = kAnyOwner);
  VqpStatus DescribeVqp(const VqpSlot& slot) const;
  void RetireTraffic(const VqpSlot& slot);
  void PostNotifyReceives(VqpSlot& slot);
  // Registers the client's file (`request.fd`), or `made`, the region file `id` made for it.
  common::Result<RegionStatus> DoRegister(const RegisterRequest& request, uint64_t id,
                                          std::unique_ptr<ShmRegion> made);
  // Whether `request` may be registered now: its length and label, its owner's and the agent's
  // region limits, its grants' VQPs (a region file's room is RegionDir's and MemoryRoom's).
  common::Status AdmitRegister(const RegisterRequest& request);
  // Whether `owner` may register one more region (max_regions, max_regions_per_owner) and, for
  // a region file of `file_bytes` (0: the client's own memory), hold that many more bytes of them
  // (max_region_bytes_per_owner).
  common::Status AdmitRegion(OwnerId owner, uint64_t file_bytes);
  common::Status DoDeregister(uint64_t region_id, OwnerId scope);
  common::Result<RemoteRegion> DoGrant(RegionSlot& region, VqpSlot& vqp);
  common::Result<Registration> Register(VqpSlot& vqp, const RegionSlot& region, unsigned access);
  common::Status DoRevoke(uint64_t region_id, uint64_t vqp_id, OwnerId scope);
  RemoteRegion DescribeGrant(const RegionSlot& region, uint64_t vqp_id) const;
  RegionStatus DescribeRegion(const RegionSlot& slot) const;

  // Transfers (engine_transfers.cc).
  void StartTransfer(const TransferRequest& request, std::shared_ptr<TransferSink> sink);
  // A free slot of the transfer table, set up for a new transfer on VQP `vqp` (null: one that does
  // not exist, refused later) and charged to its owner (kNoResource: the table is full, or the
  // owner has max_transfers_per_owner; kCancelled: StopTransfers was called). Its completion
  // target is for the caller to set.
  common::Result<uint32_t> AcquireTransfer(uint64_t op_id, uint64_t vqp_id, VqpSlot* vqp,
                                           TransferOp op, uint64_t length, uint32_t timeout_ms);
  // Why AcquireTransfer refused a transfer for VQP `vqp` with kNoResource, for a caller that
  // takes a message (the ring takes the code alone).
  common::Status TransferRefusal(const VqpSlot* vqp) const;
  // Checks `request` for VQP `slot` (VisibleVqp's: null when the caller may not see it) and fills
  // `t`'s work request.
  common::Status PrepareTransfer(const TransferRequest& request, VqpSlot* slot, Transfer& t);
  // Whether the VQP can carry transfers now (connected, not failed); why not.
  common::Status CheckCarries(const VqpSlot& slot) const;
  // What a transfer's remote region must be for VQP `slot` (its ranges are checked per transfer).
  common::Status CheckRemote(const VqpSlot& slot, const RemoteRegion& remote) const;
  // The virtual WR of a checked transfer; the region is referenced until the transfer's release.
  void FillWr(Transfer& t, RegionSlot& region, uint64_t local_offset, uint32_t local_keys,
              uint64_t remote_addr, uint32_t remote_keys, uint32_t imm);
  void Admit(uint32_t index);  // its deadline, then posted or put in its VQP's backlog
  common::Result<uint32_t> LocalKeys(VqpSlot& slot, RegionSlot& region);
  // The key-table handle for `remote` on the VQP, taken for `t` (released with the transfer).
  common::Result<uint32_t> RemoteKeys(VqpSlot& slot, const RemoteRegion& remote, Transfer& t);
  bool PostTransfer(uint32_t index);  // false: the VQP is full (stays in the backlog)
  void PumpBacklogs();
  // Completions (engine_completions.cc).
  int PollCompletions();
  void OnVirtualWc(const vqp::VirtualWc& wc);
  void Complete(uint32_t index, common::Status status, ibv_wc_status wc_status, bool posted);
  void Release(uint32_t index);
  void CheckDeadlines(uint64_t now);
  // The transfer a deadline names is still waiting for it (same slot generation, not reported).
  bool DeadlineLive(const DeadlineHeap::Entry& d) const;
  void FailBacklog(VqpSlot& slot, const common::Status& status);

  // Sessions (engine_sessions.cc).
  // Opens a session on `segment`, made for `request` on the caller's thread.
  common::Result<SessionFds> DoOpenSession(const SessionRequest& request,
                                           std::unique_ptr<session::SessionSegment> segment);
  common::Result<SessionSlot*> FindSession(uint64_t session_id, OwnerId scope);
  common::Result<uint32_t> DoBindRemote(SessionSlot& s, uint64_t vqp_id,
                                        const RemoteRegion& remote);
  int PollSessions();  // takes entries from each open session's ring, within its window
  void StartSessionTransfer(SessionSlot& s, const session::SubmitEntry& e);
  void WriteCompletion(SessionSlot& s, const session::CompletionEntry& c);
  // A kWatch entry: subscribes the session's notification ring to the VQP.
  void StartSessionWatch(SessionSlot& s, const session::SubmitCommand& c);
  // Writes `n` into the session's notification ring. The ring's last slot is kept for the entry
  // that says the client fell behind: when only it is left, that entry is written instead and
  // every watch of the session ends (false; the session is then off every VQP's list).
  bool Notify(SessionSlot& s, const session::NotifyEntry& n);
  void EndWatches(SessionSlot& s);  // takes the session off every VQP it watches
  void MarkToWake(SessionSlot& s);
  void WakeSessions();      // rings the doorbell of each sleeping client that got completions
  bool SessionsMaySleep();  // announces the engine's sleep on every open session's ring
  void SessionsAwake();
  // No more entries; what was accepted completes into nothing (`why` kept when the client broke
  // its ring).
  void EndSession(SessionSlot& s, std::string why);
  SessionStatus DescribeSession(const SessionSlot& s) const;

  // Recovery (engine_recovery.cc).
  void RunRecovery(uint64_t now);
  void RecoverOne(VqpSlot& slot, uint64_t now);  // stalls, health events, recovery steps
  // Puts the VQP on the list recovery looks at (until it settles: nothing out, every QP healthy
  // or drained, no recovery under way).
  void Attend(VqpSlot& slot);
  bool Settled(const VqpSlot& slot) const;
  void Forget(VqpSlot& slot);  // off both lists (the VQP is being destroyed)
  void RecoveryFailed(VqpSlot& slot, uint32_t index, uint64_t now);
  void RecoverySucceeded(VqpSlot& slot, uint32_t index, uint64_t epoch);
  // The VQP can never carry work again: every QP to error, work refused, recovery stops.
  void FailVqp(VqpSlot& slot, const std::string& why);

  // Events (engine_events.cc).
  void Emit(EventKind kind, uint64_t vqp_id, int32_t qp_index, std::string device,
            std::string cause);
  // Turns the health changes of the VQP's physical QPs since the last look into events.
  void TrackQpHealth(VqpSlot& slot);

  // What each owner keeps. Room: the control threads' side of the command queue (engine.cc).
  // Transfers: the transfer table, backlogs and counters (engine_transfers.cc). Regions: the
  // registry and its directory (engine_vqps.cc). Recovery: the peer dialogue and the VQPs to look
  // at (engine_recovery.cc). Events: the WatchEvents streams (engine_events.cc).
  struct Room {
    // Producers that found commands_ full, rung (and forgotten) once the loop has taken commands.
    std::mutex mu;
    std::vector<std::shared_ptr<common::Doorbell>> waiters;  // guarded by mu
    std::atomic<bool> wanted{false};
    std::atomic<uint64_t> full_count{0};  // times a producer found the queue full
  };
  struct Transfers {
    std::vector<Transfer> slots;
    std::vector<uint32_t> free;
    uint64_t in_flight = 0;   // accepted and not yet completed to their sink
    uint64_t posted = 0;      // virtual WRs in flight (some may be past their deadline)
    uint64_t backlogged = 0;  // transfers in VQP backlogs
    // Per-loop work follows activity, not the number of VQPs: the VQPs with a backlog (and the
    // deadlines of accepted transfers in a min-heap, deadlines_).
    std::vector<VqpSlot*> backlogged_vqps;
    uint64_t next_deadline_check_ns = 0;
    std::string stopped;  // non-empty: RefuseTransfers or StopTransfers was called (why)
  };
  struct Regions {
    std::unique_ptr<RegionDir> dir;  // set by Init, before Start returns
    std::map<uint64_t, std::unique_ptr<RegionSlot>> by_id;
    uint64_t next_id = 1;
  };
  struct Recovery {
    common::EventQueue<RecoveryRequest> requests{1024};  // from the control threads
    uint64_t next_check_ns = 0;
    uint64_t attempt_ids = 0;
    // The VQPs recovery must look at (work out, a QP not healthy, a recovery under way).
    std::vector<VqpSlot*> attention;
    uint64_t next_sweep_ns = 0;  // every VQP looked at every 5 s (what no event announced)
  };
  // Written by the engine thread, read by any (relaxed: each is a figure on its own).
  struct Published {
    std::atomic<bool> stop{false};  // set by the destructor: the loop ends
    std::atomic<uint64_t> heartbeat_ns{0};
    std::atomic<uint32_t> healthy_devices{0};
    std::atomic<uint64_t> releases{0};
  };
  // The process's descriptors: the budget VQPs are admitted against.
  struct Fds {
    FdBudget budget;
    uint64_t promised = 0;  // descriptors of created VQPs not yet connected
  };
  // The loop's own state.
  struct Loop {
    int epoll_fd = -1;
    uint64_t last_activity_ns = 0;
    uint64_t stall_until_ns = 0;  // an injected stall (the watchdog's test)
    std::array<vqp::VirtualWc, vqp::VirtualCq::kPollBatch> wcs{};
  };
  struct Events {
    std::vector<std::shared_ptr<EventWatcher>> watchers;
    uint64_t seq = 0;
  };
  EngineOptions options_;
  uint64_t incarnation_;
  common::EventQueue<Command> commands_;
  Room room_;
  Recovery recovery_;
  std::thread thread_;
  // Reads the devices' ports each second off the engine thread; stopped before the engine.
  std::unique_ptr<PortWatcher> ports_;
  Published published_;

  // Engine-thread state.
  std::unordered_map<OwnerId, OwnerUsage> owners_;  // before the slots that count in it
  std::vector<std::unique_ptr<DeviceSlot>> devices_;
  std::unique_ptr<vqp::VirtualCq> cq_;
  std::map<uint64_t, std::unique_ptr<VqpSlot>> vqps_;
  // Connected VQPs by their peer (control endpoint, VQP id, incarnation): a peer VQP pairs with
  // one VQP here, checked at connect without a walk over every VQP.
  using PeerKey = std::tuple<std::string, uint64_t, uint64_t>;
  std::map<PeerKey, uint64_t> by_peer_;
  Fds fds_{FdBudget{options_.fd_reserve}};
  Regions regions_;
  // The memory cgroup's room for the shared memory the agent makes (region files on tmpfs,
  // session segments): checked and claimed on the calling threads, before they are made.
  MemoryRoom memory_;
  Transfers transfers_;
  DeadlineHeap deadlines_{2 * size_t{options_.max_transfers} + 64};
  EngineSnapshot stats_;  // counters kept as they happen (devices/vqps filled by TakeSnapshot)
  Loop loop_;
  Events events_;
  std::unique_ptr<Sessions> sessions_;  // set by the constructor
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_ENGINE_H_
