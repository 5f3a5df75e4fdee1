// The engine thread: start/stop, the command calls, the loop and sleeping. Devices and snapshots:
// engine_devices.cc.
#include "dataplane/engine/engine.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <future>
#include <iterator>
#include <random>

#include "dataplane/common/clock.h"
#include "dataplane/common/named_thread.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

uint64_t Engine::NowNs() { return common::MonotonicNs(); }

namespace {

// The longest an idle engine sleeps while a VQP needs recovery steps (they run when the loop
// turns).
constexpr uint32_t kRecoveryWaitMs = 100;
// A sleep with work in flight: deadlines are checked and soft NIC timers fire at this granularity.
constexpr uint32_t kInFlightWaitMs = 1;
// Lists and snapshots describe at most this many VQPs or regions per command, the loop running
// data-plane work between commands: describing 6,000 VQPs in one command held the data plane for
// about 15 ms of CPU; a batch holds it for about 0.2 ms.
constexpr uint32_t kDescribeBatch = 128;

// Calls `describe` on the entries of `map` (keyed by id, ids from 1) after id `after`, until it
// has described `room` (it returns whether it described one). Returns the last id seen when more
// remain, else 0.
template <typename Map, typename Describe>
uint64_t DescribeBatch(const Map& map, uint64_t after, uint32_t room, Describe&& describe) {
  uint32_t described = 0;
  for (auto it = map.upper_bound(after); it != map.end(); ++it) {
    if (described == room) return std::prev(it)->first;
    if (describe(*it->second)) ++described;
  }
  return 0;
}
// How often the devices' ports are read (PortWatcher): a port's state changes at human pace.
constexpr uint64_t kPortCheckNs = 1000000000;

uint64_t DrawIncarnation() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (uint64_t{rd()} << 32) ^ rd();
  return v;
}

// Holds what one turn of the loop posts on every device and starts it all at the end of the
// turn (verbs::Device::BeginPostBatch): a session's batch of 4 KiB writes leaves a soft NIC in
// one sendmsg per connection, not one per fragment.
class PostBatch {
 public:
  explicit PostBatch(const vqp::VirtualCq& cq) : cq_(cq) {
    for (int d = 0; d < cq_.num_devices(); ++d) cq_.device(d).BeginPostBatch();
  }
  ~PostBatch() {
    for (int d = 0; d < cq_.num_devices(); ++d) cq_.device(d).EndPostBatch();
  }
  PostBatch(const PostBatch&) = delete;
  PostBatch& operator=(const PostBatch&) = delete;

 private:
  const vqp::VirtualCq& cq_;
};

}  // namespace

Engine::Engine(CreateKey, EngineOptions options)
    : options_(std::move(options)),
      incarnation_(options_.incarnation != 0 ? options_.incarnation : DrawIncarnation()),
      commands_(options_.command_queue),
      memory_(options_.memory_reserve),
      sessions_(std::make_unique<Sessions>()) {}

Result<std::unique_ptr<Engine>> Engine::Start(EngineOptions options) {
  if (options.provider == nullptr) return Status::InvalidArgument("engine needs a provider");
  BRAID_RETURN_IF_ERROR(FdBudget(options.fd_reserve).CheckRoom());
  auto engine = std::make_unique<Engine>(CreateKey(), std::move(options));
  std::promise<Status> started;
  auto ready = started.get_future();
  Engine* e = engine.get();
  engine->thread_ = common::NamedThread("braid-engine", [e, &started] {
    Status s = e->Init();
    const bool ok = s.ok();
    started.set_value(std::move(s));
    if (ok) e->Run();
    e->Shutdown();
  });
  Status s = ready.get();
  if (!s.ok()) {
    engine->thread_.join();
    return s;
  }
  // The readings reach the loop as a command; a full queue drops them (the next come a period
  // later). devices_ stays as Init left it until Shutdown, after the watcher has stopped.
  engine->ports_ = std::make_unique<PortWatcher>(
      engine->DevicePointers(), std::chrono::milliseconds(kPortCheckNs / 1000000),
      [e](PortWatcher::Readings ports) {
        (void)e->commands_.Push(
            [ports = std::move(ports)](Engine& engine) { engine.FollowPorts(ports); });
      });
  return engine;
}

std::vector<verbs::Device*> Engine::DevicePointers() const {
  std::vector<verbs::Device*> out;
  for (const auto& d : devices_) out.push_back(d->device.get());
  return out;
}

Engine::~Engine() {
  ports_.reset();  // it delivers to the loop: it stops first
  if (thread_.joinable()) {
    published_.stop.store(true);
    // Wake the loop if it sleeps (the command itself does nothing).
    while (!commands_.Push([](Engine&) {}).ok()) std::this_thread::yield();
    thread_.join();
  }
  if (loop_.epoll_fd >= 0) close(loop_.epoll_fd);
}

Status Engine::CallStatus(std::function<Status(Engine&)> fn) {
  Result<bool> r = Call<bool>([fn = std::move(fn)](Engine& e) -> Result<bool> {
    Status s = fn(e);
    if (!s.ok()) return s;
    return true;
  });
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::vector<DeviceStatus>> Engine::ListDevices() {
  return Call<std::vector<DeviceStatus>>([](Engine& e) -> Result<std::vector<DeviceStatus>> {
    std::vector<DeviceStatus> out;
    for (size_t i = 0; i < e.devices_.size(); ++i) out.push_back(e.DescribeDevice(i));
    return out;
  });
}
Result<VqpStatus> Engine::CreateVirtualQp(CreateVqpRequest request) {
  return Call<VqpStatus>([r = std::move(request)](Engine& e) { return e.DoCreate(r); });
}
Result<VqpStatus> Engine::ConnectVirtualQp(uint64_t vqp_id, vqp::BusinessCard remote,
                                           OwnerId scope) {
  return Call<VqpStatus>([vqp_id, card = std::move(remote), scope](Engine& e) {
    return e.DoConnect(vqp_id, card, scope);
  });
}
Result<VqpStatus> Engine::GetVirtualQp(uint64_t vqp_id, OwnerId scope) {
  return Call<VqpStatus>([vqp_id, scope](Engine& e) -> Result<VqpStatus> {
    BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, e.FindVqp(vqp_id, scope));
    return e.DescribeVqp(*slot);
  });
}
template <typename T, typename Batch>
Result<Listed<T>> Engine::DescribePage(Batch batch, ListPage page) {
  using Part = std::pair<std::vector<T>, uint64_t>;
  Listed<T> out;
  uint64_t after = page.after;
  do {
    const uint32_t room =
        page.limit == 0 ? kDescribeBatch
                        : std::min<uint32_t>(kDescribeBatch,
                                             page.limit - static_cast<uint32_t>(out.items.size()));
    // The command gets `after` by value and hands its part back: a command that outlives a
    // timed-out Call touches nothing of this frame.
    BRAID_ASSIGN_OR_RETURN(Part part, Call<Part>([batch, after, room](Engine& e) -> Result<Part> {
                             Part p;
                             p.second = batch(e, after, room, &p.first);
                             return p;
                           }));
    std::move(part.first.begin(), part.first.end(), std::back_inserter(out.items));
    after = part.second;
  } while (after != 0 && (page.limit == 0 || out.items.size() < page.limit));
  out.next_after = after;
  return out;
}

Result<Listed<VqpStatus>> Engine::ListVirtualQps(OwnerId scope, ListPage page) {
  return DescribePage<VqpStatus>(
      [scope](const Engine& e, uint64_t after, uint32_t room, std::vector<VqpStatus>* out) {
        return DescribeBatch(e.vqps_, after, room, [&](const VqpSlot& slot) {
          if (scope != kAnyOwner && slot.owner != scope) return false;
          out->push_back(e.DescribeVqp(slot));
          return true;
        });
      },
      page);
}
Result<std::vector<VqpStatus>> Engine::ListVirtualQps(OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(Listed<VqpStatus> all, ListVirtualQps(scope, ListPage{}));
  return std::move(all.items);
}
Status Engine::DestroyVirtualQp(uint64_t vqp_id, OwnerId scope) {
  return CallStatus([vqp_id, scope](Engine& e) { return e.DoDestroy(vqp_id, scope); });
}
Result<RegionStatus> Engine::RegisterMemory(RegisterRequest request) {
  if (request.fd >= 0) {
    return Call<RegionStatus>(
        [request = std::move(request)](Engine& e) { return e.DoRegister(request, 0, nullptr); });
  }
  // A region file of the agent's own: admitted and given its id on the engine thread; its room
  // claimed and the file made on this one (reading the memory cgroup and taking the pages take a
  // while, and must not stall the data plane); then registered on the engine thread, admitted
  // again (others may have come between).
  BRAID_ASSIGN_OR_RETURN(const uint64_t id,
                         Call<uint64_t>([request](Engine& e) -> Result<uint64_t> {
                           BRAID_RETURN_IF_ERROR(e.AdmitRegister(request));
                           return e.regions_.next_id++;
                         }));
  BRAID_ASSIGN_OR_RETURN(ByteClaim space, regions_.dir->Take(request.length));
  ByteClaim memory;
  if (regions_.dir->charged_to_memory()) {
    BRAID_ASSIGN_OR_RETURN(
        memory,
        memory_.Take(request.length, "a region of " + std::to_string(request.length) + " bytes"));
  }
  auto made = std::make_shared<std::unique_ptr<ShmRegion>>();  // a command is a copyable function
  BRAID_ASSIGN_OR_RETURN(*made, ShmRegion::Create(regions_.dir->path(), regions_.dir->NameFor(id),
                                                  request.length, request.file_uid));
  space.Release();  // its pages are taken: the file system and the cgroup count them now
  memory.Release();
  return Call<RegionStatus>([request = std::move(request), id, made](Engine& e) {
    return e.DoRegister(request, id, std::move(*made));
  });
}
Result<RegionStatus> Engine::RegisterMemory(uint64_t length, std::string label, OwnerId owner) {
  return RegisterMemory(
      RegisterRequest{.length = length, .label = std::move(label), .owner = owner});
}
Status Engine::DeregisterMemory(uint64_t region_id, OwnerId scope) {
  return CallStatus([region_id, scope](Engine& e) { return e.DoDeregister(region_id, scope); });
}
Result<RemoteRegion> Engine::GrantAccess(uint64_t region_id, uint64_t vqp_id, OwnerId scope) {
  return Call<RemoteRegion>([=](Engine& e) -> Result<RemoteRegion> {
    BRAID_ASSIGN_OR_RETURN(RegionSlot * region, e.FindRegion(region_id, scope));
    BRAID_ASSIGN_OR_RETURN(VqpSlot * vqp, e.FindVqp(vqp_id, region->owner));
    return e.DoGrant(*region, *vqp);
  });
}
Status Engine::RevokeAccess(uint64_t region_id, uint64_t vqp_id, OwnerId scope) {
  return CallStatus([=](Engine& e) { return e.DoRevoke(region_id, vqp_id, scope); });
}
Result<Listed<RegionStatus>> Engine::ListRegions(OwnerId scope, ListPage page) {
  return DescribePage<RegionStatus>(
      [scope](const Engine& e, uint64_t after, uint32_t room, std::vector<RegionStatus>* out) {
        return DescribeBatch(e.regions_.by_id, after, room, [&](const RegionSlot& slot) {
          if (scope != kAnyOwner && slot.owner != scope) return false;
          out->push_back(e.DescribeRegion(slot));
          return true;
        });
      },
      page);
}
Result<std::vector<RegionStatus>> Engine::ListRegions(OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(Listed<RegionStatus> all, ListRegions(scope, ListPage{}));
  return std::move(all.items);
}
Result<DeviceStatus> Engine::DrainDevice(std::string device) {
  return Call<DeviceStatus>(
      [d = std::move(device)](Engine& e) { return e.SetDeviceDrained(d, true); });
}
Result<DeviceStatus> Engine::UndrainDevice(std::string device) {
  return Call<DeviceStatus>(
      [d = std::move(device)](Engine& e) { return e.SetDeviceDrained(d, false); });
}
Status Engine::InjectFault(FaultRequest request) {
  if (!options_.fault_injection) {
    return Status::PermissionDenied("fault injection is disabled in this agent's config");
  }
  return CallStatus([r = std::move(request)](Engine& e) { return e.DoInjectFault(r); });
}
Result<EngineSnapshot> Engine::Snapshot() {
  BRAID_ASSIGN_OR_RETURN(
      EngineSnapshot s,
      Call<EngineSnapshot>([](Engine& e) -> Result<EngineSnapshot> { return e.TakeSnapshot(); }));
  BRAID_ASSIGN_OR_RETURN(Listed<EngineSnapshot::Vqp> vqps,
                         DescribePage<EngineSnapshot::Vqp>(
                             [](const Engine& e, uint64_t after, uint32_t room,
                                std::vector<EngineSnapshot::Vqp>* out) {
                               return DescribeBatch(e.vqps_, after, room, [&](const VqpSlot& slot) {
                                 out->push_back(e.SnapshotVqp(slot));
                                 return true;
                               });
                             },
                             ListPage{}));
  s.vqps = std::move(vqps.items);
  for (const EngineSnapshot::Vqp& v : s.vqps) {
    s.failovers += v.failovers;
    s.qps_died += v.qps_died;
  }
  // Read here, not on the engine thread: statfs and the cgroup's files take their time.
  if (auto space = regions_.dir ? regions_.dir->Space() : Status::Internal("no region directory");
      space.ok()) {
    s.region_dir_size_bytes = space->size;
    s.region_dir_free_bytes = space->free;
  }
  const MemoryRoom::Figures memory = memory_.Read();
  s.memory_limit_bytes = memory.limit;
  s.memory_room_bytes = memory.room;
  return s;
}
Status Engine::Watch(uint64_t vqp_id, std::shared_ptr<NotificationWatcher> watcher, OwnerId scope) {
  return CallStatus([vqp_id, w = std::move(watcher), scope](Engine& e) -> Status {
    BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, e.FindVqp(vqp_id, scope));
    slot->watchers.push_back(w);
    return Status::Ok();
  });
}

Status Engine::SubmitTransfer(const TransferRequest& request, std::shared_ptr<TransferSink> sink,
                              const std::shared_ptr<common::Doorbell>& on_room) {
  Command command = [request, sink = std::move(sink)](Engine& e) {
    e.StartTransfer(request, sink);
  };
  return PushTransferCommand(command, on_room);
}

Status Engine::SubmitTransfers(std::vector<TransferRequest>& requests,
                               std::shared_ptr<TransferSink> sink,
                               const std::shared_ptr<common::Doorbell>& on_room) {
  auto batch = std::make_shared<std::vector<TransferRequest>>(std::move(requests));
  requests.clear();
  Command command = [batch, sink = std::move(sink)](Engine& e) {
    for (const TransferRequest& request : *batch) e.StartTransfer(request, sink);
  };
  Status s = PushTransferCommand(command, on_room);
  if (!s.ok()) requests = std::move(*batch);  // refused: the caller's again, untouched
  return s;
}

Status Engine::PushTransferCommand(Command& command,
                                   const std::shared_ptr<common::Doorbell>& on_room) {
  // A refused push leaves the command intact for the second try.
  Status s = commands_.Push(std::move(command));
  if (s.ok()) return s;
  room_.full_count.fetch_add(1, std::memory_order_relaxed);
  if (on_room == nullptr) return s;
  {
    std::lock_guard<std::mutex> lock(room_.mu);
    room_.waiters.push_back(on_room);
    room_.wanted.store(true, std::memory_order_seq_cst);
  }
  // The loop may have made room between the push and the registration: try once more (a ring
  // that then follows anyway is harmless).
  return commands_.Push(std::move(command));
}

Status Engine::RefuseTransfers(std::string why) {
  return CallStatus([why = std::move(why)](Engine& e) {
    e.transfers_.stopped = why;
    return Status::Ok();
  });
}

Result<uint64_t> Engine::TransfersInFlight() {
  return Call<uint64_t>([](Engine& e) -> Result<uint64_t> { return e.transfers_.in_flight; });
}

Status Engine::StopTransfers(std::string why) {
  return CallStatus([why = std::move(why)](Engine& e) {
    e.transfers_.stopped = why;
    for (uint32_t i = 0; i < e.transfers_.slots.size(); ++i) {
      if (e.transfers_.slots[i].active && !e.transfers_.slots[i].reported) {
        e.Complete(i, Status::Cancelled(why), IBV_WC_WR_FLUSH_ERR, false);
      }
    }
    return Status::Ok();
  });
}

Status Engine::Init() {
  published_.heartbeat_ns.store(NowNs());
  BRAID_ASSIGN_OR_RETURN(regions_.dir, RegionDir::Open(options_.region_dir, options_.agent_id));
  std::vector<std::string> names = options_.devices;
  if (names.empty()) {
    BRAID_ASSIGN_OR_RETURN(auto infos, options_.provider->ListDevices());
    for (const auto& info : infos) names.push_back(info.name);
  }
  std::vector<verbs::Device*> raw;
  for (const std::string& name : names) {
    auto slot = std::make_unique<DeviceSlot>();
    BRAID_ASSIGN_OR_RETURN(slot->device, options_.provider->OpenDevice(name));
    raw.push_back(slot->device.get());
    devices_.push_back(std::move(slot));
  }
  if (devices_.empty()) return Status::NotFound("no device to open");
  // A port down at start faults its device as one that goes down later does.
  FollowPorts(PortWatcher::Read(DevicePointers()));
  PublishDeviceHealth();
  BRAID_ASSIGN_OR_RETURN(cq_,
                         vqp::VirtualCq::Create(raw, options_.cq_entries, options_.max_cq_entries));
  return SetupWaitSet();
}

Status Engine::SetupWaitSet() {
  loop_.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (loop_.epoll_fd < 0) return Status::FromErrno(errno, "epoll_create1");
  std::vector<int> fds = {commands_.fd()};
  for (int d = 0; d < cq_->num_devices(); ++d) {
    fds.push_back(cq_->physical_cq(d).wakeup_fd());
    fds.push_back(cq_->device(d).progress_fd());
  }
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  for (int fd : fds) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(loop_.epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status::FromErrno(errno, "epoll_ctl(engine wait set)");
    }
  }
  return Status::Ok();
}

void Engine::Run() {
  loop_.last_activity_ns = NowNs();
  while (!published_.stop.load(std::memory_order_relaxed)) {
    const uint64_t now = NowNs();
    published_.heartbeat_ns.store(now, std::memory_order_relaxed);
    ++stats_.loop_iterations;
    if (loop_.stall_until_ns != 0) {  // injected stall (watchdog test)
      while (NowNs() < loop_.stall_until_ns) usleep(1000);
      loop_.stall_until_ns = 0;
      continue;
    }
    bool ran = false, took = false;
    {
      const PostBatch batch(*cq_);
      ran = RunCommands();
      took = PollSessions() > 0;
      PumpBacklogs();
    }
    const bool active = PollCompletions() > 0 || took;
    if (now >= recovery_.next_check_ns) {
      RunRecovery(now);
      recovery_.next_check_ns = now + 10000000;
    }
    if (transfers_.in_flight > 0 && now >= transfers_.next_deadline_check_ns) {
      CheckDeadlines(now);
      transfers_.next_deadline_check_ns = now + 1000000;
    }
    WakeSessions();
    if (transfers_.in_flight > 0 || transfers_.posted > 0) {
      if (active || ran) {
        loop_.last_activity_ns = now;
        continue;
      }
      // Waiting on the wire: spin a while (letting whoever woke here run), then sleep.
      const uint64_t spin_ns = uint64_t{options_.in_flight_spin_us} * 1000;
      if (spin_ns == 0 || now - loop_.last_activity_ns < spin_ns) {
        YieldCore();
      } else {
        Sleep(kInFlightWaitMs);
      }
      continue;
    }
    if (active) {
      loop_.last_activity_ns = now;
      continue;
    }
    if (ran) continue;  // control commands: look again, but they start no linger
    if (now - loop_.last_activity_ns < uint64_t{options_.idle_linger_us} * 1000) {
      YieldCore();
      continue;
    }
    Sleep(options_.idle_wait_ms);
  }
}

bool Engine::RunCommands() {
  bool any = false;
  for (int i = 0; i < 64; ++i) {
    std::optional<Command> c = commands_.TryPop();
    if (!c) break;
    (*c)(*this);
    ++stats_.commands;
    any = true;
  }
  if (!any) return false;
  // The pops before the look at room_.wanted (SubmitTransfer sets it, then pushes again): either
  // its second push finds the room made here or this look finds it waiting.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (room_.wanted.load(std::memory_order_relaxed)) {
    std::vector<std::shared_ptr<common::Doorbell>> waiters;
    {
      std::lock_guard<std::mutex> lock(room_.mu);
      room_.wanted.store(false, std::memory_order_relaxed);
      waiters.swap(room_.waiters);
    }
    for (const auto& bell : waiters) bell->Ring();
  }
  return any;
}

void Engine::YieldCore() {
  if (!options_.yield_when_idle) return;
  ++stats_.yields;
  sched_yield();
}

void Engine::Sleep(uint32_t max_ms) {
  for (int d = 0; d < cq_->num_devices(); ++d) (void)cq_->physical_cq(d).RequestNotify();
  // Completions that arrived before arming raise no event: look once more.
  if (PollCompletions() > 0) return;
  if (!commands_.ArmWait()) return;
  if (!SessionsMaySleep()) {
    commands_.DisarmWait();
    return;
  }
  ++stats_.sleeps;
  epoll_event events[16];
  // Recovery steps run when the loop turns: while a VQP needs them, wake at least every 100 ms.
  const uint32_t wait_ms = recovery_.attention.empty() ? max_ms : std::min(max_ms, kRecoveryWaitMs);
  const int n = epoll_wait(loop_.epoll_fd, events, 16, static_cast<int>(wait_ms));
  commands_.DisarmWait();
  SessionsAwake();
  bool data = false;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == commands_.fd()) continue;
    data = true;
    for (SessionSlot* s : sessions_->open) {
      if (events[i].data.fd == s->submit_bell.fd()) (void)s->submit_bell.Wait(0);
    }
    for (int d = 0; d < cq_->num_devices(); ++d) {
      if (events[i].data.fd == cq_->physical_cq(d).wakeup_fd()) {
        (void)cq_->physical_cq(d).ConsumeWakeup();
      }
    }
  }
  if (data) loop_.last_activity_ns = NowNs();  // linger after data woke us: more tends to follow
}

void Engine::Shutdown() {
  // Sessions first (their outcomes go nowhere now), then VQPs (they flush their work into the
  // CQ), regions, the CQ and the devices.
  for (auto& [id, s] : sessions_->by_id) EndSession(*s, "the agent is shutting down");
  sessions_->open.clear();
  sessions_->to_wake.clear();
  while (!vqps_.empty()) (void)DoDestroy(vqps_.begin()->first);
  for (uint32_t i = 0; i < transfers_.slots.size(); ++i) {
    if (transfers_.slots[i].active && !transfers_.slots[i].reported) {
      Complete(i, Status::Cancelled("the agent is shutting down"), IBV_WC_WR_FLUSH_ERR, false);
    }
  }
  regions_.by_id.clear();
  cq_.reset();
  devices_.clear();
  // Commands still queued get no answer; their callers time out.
}

}  // namespace braid::engine
