// The engine's VQPs and regions (engine thread).
#include <unistd.h>

#include <algorithm>
#include <string>

#include "dataplane/common/quote.h"
#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

Engine::VqpSlot* Engine::VisibleVqp(uint64_t vqp_id, OwnerId scope) {
  auto it = vqps_.find(vqp_id);
  if (it == vqps_.end() || (scope != kAnyOwner && it->second->owner != scope)) return nullptr;
  return it->second.get();
}

Result<Engine::VqpSlot*> Engine::FindVqp(uint64_t vqp_id, OwnerId scope) {
  VqpSlot* slot = VisibleVqp(vqp_id, scope);
  if (slot == nullptr) {
    return Status::NotFound("no virtual QP " + std::to_string(vqp_id) + " on agent " +
                            options_.agent_id);
  }
  return slot;
}

Result<Engine::RegionSlot*> Engine::FindRegion(uint64_t region_id, OwnerId scope) {
  auto it = regions_.by_id.find(region_id);
  if (it == regions_.by_id.end() || (scope != kAnyOwner && it->second->owner != scope)) {
    return Status::NotFound("no region " + std::to_string(region_id) + " on agent " +
                            options_.agent_id);
  }
  return it->second.get();
}

namespace {

Status CheckLabel(const std::string& label) {
  if (label.size() <= kMaxLabelBytes) return Status::Ok();
  return Status::InvalidArgument("label has " + std::to_string(label.size()) +
                                 " bytes; a label has at most " + std::to_string(kMaxLabelBytes));
}

}  // namespace

Result<VqpStatus> Engine::DoCreate(const CreateVqpRequest& request) {
  BRAID_RETURN_IF_ERROR(vqp::ValidateConfig(request.config));
  BRAID_RETURN_IF_ERROR(CheckLabel(request.label));
  OwnerUsage& usage = owners_[request.owner];
  const uint32_t mine = usage.vqps;
  if (mine >= options_.max_vqps_per_owner) {
    return Status::NoResource("this caller has " + std::to_string(mine) +
                              " VQPs, its limit (max_vqps_per_caller): destroy VQPs no longer "
                              "used, or stripe over fewer, wider ones");
  }
  std::vector<bool> use(devices_.size(), false);
  if (request.devices.empty()) {
    for (size_t i = 0; i < devices_.size(); ++i) {
      use[i] = devices_[i]->state == DeviceState::kHealthy;
    }
  } else {
    for (const std::string& name : request.devices) {
      BRAID_ASSIGN_OR_RETURN(size_t i, FindDevice(name));
      if (use[i]) return Status::InvalidArgument("device '" + name + "' named twice");
      if (devices_[i]->state != DeviceState::kHealthy) {
        return Status::FailedPrecondition("device '" + name + "' is " +
                                          DeviceStateName(devices_[i]->state));
      }
      use[i] = true;
    }
  }
  if (std::find(use.begin(), use.end(), true) == use.end()) {
    return Status::FailedPrecondition("no healthy device on agent " + options_.agent_id);
  }
  auto slot = std::make_unique<VqpSlot>();
  std::vector<verbs::ProtectionDomain*> pds(devices_.size(), nullptr);
  slot->pds.resize(devices_.size());
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (!use[i]) continue;
    BRAID_ASSIGN_OR_RETURN(slot->pds[i], devices_[i]->device->AllocPd());
    pds[i] = slot->pds[i].get();
  }
  // Descriptors its QPs may add once connected, at most (soft NICs: a connection for each QP that
  // is the first between its two NICs); promised until the VQP is connected.
  uint32_t fds_per_qp = 0;
  for (size_t i = 0; i < pds.size(); ++i) {
    if (pds[i] != nullptr)
      fds_per_qp = std::max(fds_per_qp, devices_[i]->device->info().fds_per_qp);
  }
  const uint64_t fds = uint64_t{fds_per_qp} * (request.config.num_qps + 1);
  BRAID_RETURN_IF_ERROR(fds_.budget.Admit(fds, fds_.promised, "this VQP"));
  vqp::VirtualQpConfig config = request.config;
  config.cooldown_ms = options_.qp_cooldown_ms;
  BRAID_ASSIGN_OR_RETURN(auto created, vqp::VirtualQp::Create(*cq_, pds, config));
  slot->id = created->vqp_num();
  slot->owner = request.owner;
  slot->usage = &usage;
  slot->charge.Take(&usage.vqps);
  slot->label = request.label;
  slot->vqp = std::move(created);
  slot->promised_fds = fds;
  fds_.promised += fds;
  VqpSlot& ref = *slot;
  vqps_[ref.id] = std::move(slot);
  return DescribeVqp(ref);
}

// Another agent's card that names the address of one of this agent's soft NICs: the QPs here
// would connect to this agent itself (its listener is the only one at that address) and die of
// retries with nothing to say why. Two agents on one host given one soft NIC address and
// different soft ports get here.
Status Engine::CheckPeerAddresses(const vqp::BusinessCard& remote) const {
  for (const vqp::DeviceCard& theirs : remote.devices) {
    for (const auto& d : devices_) {
      const verbs::DeviceInfo& mine = d->device->info();
      if (!mine.gid_is_exclusive || mine.gid != theirs.gid) continue;
      return Status::FailedPrecondition(
          "the peer's card names device " + common::Quote(theirs.name) + " at " +
          mine.gid.ToAddress() + ", the address of agent " + options_.agent_id +
          "'s own soft NIC " + mine.name +
          ": its QPs would connect to this agent, not the peer; give each agent soft NIC "
          "addresses of its own (two agents on one host need different addresses and the same "
          "soft.port)");
    }
  }
  return Status::Ok();
}

Result<VqpStatus> Engine::DoConnect(uint64_t vqp_id, const vqp::BusinessCard& remote,
                                    OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, FindVqp(vqp_id, scope));
  // A peer VQP pairs with one VQP here: a second VQP on the same card would share its QPs'
  // sequence numbers and recovery. (A card that could not connect anyway says why first.)
  if (!slot->vqp->connected()) {
    BRAID_RETURN_IF_ERROR(vqp::CheckPeerCards(slot->vqp->LocalCard(slot->epoch), remote));
  }
  // Another agent that names this one's control endpoint as its own: one of the two advertises
  // an address that is not its own (a wildcard listener's host name, say), and a QP recovery
  // would call the wrong agent (its own host), NOT_FOUND, and fail the VQP.
  if (!remote.control_endpoint.empty() && remote.control_endpoint == options_.control_endpoint &&
      remote.incarnation != incarnation_) {
    return Status::FailedPrecondition(
        "the peer's card names " + common::Quote(remote.control_endpoint) +
        " as its control endpoint, which is agent " + options_.agent_id +
        "'s own: recovering a QP there would call the wrong agent; give each agent the address "
        "its peers reach it on (listen.advertise, --advertise)");
  }
  if (remote.incarnation != incarnation_) BRAID_RETURN_IF_ERROR(CheckPeerAddresses(remote));
  PeerKey peer{remote.control_endpoint, remote.vqp_id, remote.incarnation};
  if (auto it = by_peer_.find(peer); it != by_peer_.end() && it->second != slot->id) {
    return Status::AlreadyExists("that card (VQP " + std::to_string(remote.vqp_id) + " of " +
                                 common::Quote(remote.control_endpoint) +
                                 ") is already connected to another VQP on agent " +
                                 options_.agent_id + ": create a new VQP on the peer");
  }
  // Both sides compute the same connection epoch: the larger of the two cards'.
  const uint64_t epoch = std::max(slot->epoch, remote.epoch);
  BRAID_RETURN_IF_ERROR(slot->vqp->Connect(remote, epoch));
  slot->peer_devices.clear();
  for (const vqp::DeviceCard& d : remote.devices) slot->peer_devices.push_back(d.name);
  if (slot->state != VqpState::kCreated) {
    by_peer_.erase({slot->peer_endpoint, slot->peer_vqp_id, slot->peer_incarnation});
  }
  by_peer_[std::move(peer)] = slot->id;
  slot->peer_endpoint = remote.control_endpoint;
  slot->peer_vqp_id = remote.vqp_id;
  slot->peer_incarnation = remote.incarnation;
  slot->peer_identity = remote.agent_identity;
  slot->epoch = epoch;
  slot->state = VqpState::kConnected;
  fds_.promised -= slot->promised_fds;  // open now (or soon: the peer's connections)
  slot->promised_fds = 0;
  slot->recovery.assign(static_cast<size_t>(slot->vqp->num_physical_qps()), QpRecovery{});
  PostNotifyReceives(*slot);
  Attend(*slot);
  Emit(EventKind::kVqpConnected, slot->id, -1, "",
       "connected with VQP " + std::to_string(remote.vqp_id) + " of " +
           remote.control_endpoint.substr(0, 100));
  return DescribeVqp(*slot);
}

void Engine::PostNotifyReceives(VqpSlot& slot) {
  const uint32_t want = std::min(options_.notify_receives, slot.vqp->config().max_virtual_wrs);
  while (slot.vqp->pending_recvs() < want) {
    vqp::VirtualRecvWr wr;
    wr.wr_id = kRecvWrBit | slot.id;
    if (!slot.vqp->PostRecv(wr).ok()) break;
  }
}

void Engine::RetireTraffic(const VqpSlot& slot) {
  const vqp::VirtualQp& q = *slot.vqp;
  for (int i = 0; i < q.num_physical_qps(); ++i) {
    vqp::QpTraffic& r = devices_[static_cast<size_t>(q.physical_device(i))]->retired;
    const vqp::QpTraffic& t = q.traffic(i);
    r.write_bytes += t.write_bytes;
    r.write_fragments += t.write_fragments;
    r.read_bytes += t.read_bytes;
    r.read_fragments += t.read_fragments;
  }
  stats_.failovers += q.counters().failovers;
  stats_.qps_died += q.counters().qps_died;
}

Status Engine::DoDestroy(uint64_t vqp_id, OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, FindVqp(vqp_id, scope));
  FailBacklog(*slot, Status::Cancelled("virtual QP " + std::to_string(vqp_id) + " was destroyed"));
  Emit(EventKind::kVqpDestroyed, vqp_id, -1, "", "destroyed through the API");
  for (auto& w : slot->watchers) {
    w->closed.store(true);
    w->events.Wake();  // its stream ends now, not at its next look
  }
  const std::vector<SessionSlot*> sessions = std::move(slot->session_watchers);
  slot->session_watchers.clear();
  for (SessionSlot* s : sessions) {
    std::erase(s->watching, vqp_id);
    session::NotifyEntry ended{};
    ended.vqp_id = vqp_id;
    ended.kind = static_cast<uint8_t>(session::NotifyKind::kWatchEnded);
    (void)Notify(*s, ended);  // status kOk: the VQP was destroyed
  }
  RetireTraffic(*slot);
  Forget(*slot);
  fds_.promised -= slot->promised_fds;
  for (auto& [id, region] : regions_.by_id)
    region->grants.erase(vqp_id);  // before the VQP's domains
  // Destroying the VQP completes its in-flight virtual WRs with WR_FLUSH_ERR (every virtual WR
  // completes once); they are routed by wr_id below, like any completion.
  if (slot->state != VqpState::kCreated) {
    by_peer_.erase({slot->peer_endpoint, slot->peer_vqp_id, slot->peer_incarnation});
  }
  auto node = vqps_.extract(vqp_id);
  node.mapped().reset();
  while (PollCompletions() > 0) {
  }
  published_.releases.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

VqpStatus Engine::DescribeVqp(const VqpSlot& slot) const {
  const vqp::VirtualQp& q = *slot.vqp;
  VqpStatus s;
  s.id = slot.id;
  s.owner = slot.owner;
  s.label = slot.label;
  s.connected = q.connected();
  s.config = q.config();
  s.card = q.LocalCard(slot.epoch);
  s.epoch = slot.epoch;
  s.card.vqp_id = slot.id;
  s.card.control_endpoint = options_.control_endpoint;
  s.card.incarnation = incarnation_;
  s.card.agent_identity = options_.agent_identity;
  s.state = slot.state;
  s.failure = slot.failure;
  for (int i = 0; i < q.num_physical_qps(); ++i) {
    PhysicalQpStatus p;
    p.index = static_cast<uint32_t>(i);
    p.device = cq_->device(q.physical_device(i)).info().name;
    p.qp_num = q.physical_qp(i).qp_num();
    p.message_qp = i >= static_cast<int>(q.config().num_qps);
    p.health = q.health(i);
    p.death = q.death(i);
    p.outstanding_wrs = q.outstanding(i);
    p.traffic = q.traffic(i);
    p.drain_rate = q.drain_rate(i);
    if (static_cast<size_t>(i) < slot.recovery.size()) {  // every physical QP recovers
      const QpRecovery& r = slot.recovery[static_cast<size_t>(i)];
      p.recovery = r.phase;
      p.recovery_attempts = r.attempts;
      p.recoveries = r.recoveries;
    }
    s.qps.push_back(std::move(p));
  }
  s.healthy_data_qps = static_cast<uint32_t>(q.healthy_data_qps());
  s.pending_sends = q.pending_sends();
  s.pending_recvs = q.pending_recvs();
  s.failovers = q.counters().failovers;
  s.qps_died = q.counters().qps_died;
  s.notifications = slot.notifications;
  return s;
}

Status Engine::AdmitRegister(const RegisterRequest& request) {
  if (request.length == 0) return Status::InvalidArgument("region length must be > 0");
  BRAID_RETURN_IF_ERROR(CheckLabel(request.label));
  if (request.length > options_.max_region_bytes) {
    return Status::OutOfRange("region length " + std::to_string(request.length) +
                              " exceeds this agent's limit of " +
                              std::to_string(options_.max_region_bytes) + " bytes");
  }
  BRAID_RETURN_IF_ERROR(AdmitRegion(request.owner, request.fd >= 0 ? 0 : request.length));
  for (uint64_t vqp_id : request.grant_vqps)
    BRAID_RETURN_IF_ERROR(FindVqp(vqp_id, request.owner).status());
  return Status::Ok();
}

Result<RegionStatus> Engine::DoRegister(const RegisterRequest& request, uint64_t id,
                                        std::unique_ptr<ShmRegion> made) {
  if (made == nullptr) {
    BRAID_RETURN_IF_ERROR(AdmitRegister(request));
  } else {  // its pages are taken already: only what may have changed since it was admitted
    BRAID_RETURN_IF_ERROR(AdmitRegion(request.owner, request.length));
  }
  std::vector<VqpSlot*> granted;
  for (uint64_t vqp_id : request.grant_vqps) {
    BRAID_ASSIGN_OR_RETURN(VqpSlot * v, FindVqp(vqp_id, request.owner));
    granted.push_back(v);
  }
  auto slot = std::make_unique<RegionSlot>();
  slot->id = made != nullptr ? id : regions_.next_id++;
  slot->owner = request.owner;
  slot->label = request.label;
  if (made != nullptr) {
    slot->shm = std::move(made);
    slot->file_bytes.Take(&owners_[request.owner].region_bytes, request.length);
  } else {
    BRAID_ASSIGN_OR_RETURN(slot->shm,
                           ShmRegion::MapClientFd(request.fd, request.fd_offset, request.length));
  }
  for (VqpSlot* v : granted) BRAID_RETURN_IF_ERROR(DoGrant(*slot, *v).status());
  slot->charge.Take(&owners_[request.owner].regions);
  RegionSlot& ref = *slot;
  regions_.by_id[ref.id] = std::move(slot);
  return DescribeRegion(ref);
}

Status Engine::AdmitRegion(OwnerId owner, uint64_t file_bytes) {
  const size_t all = regions_.by_id.size();
  if (all >= options_.max_regions) {
    return Status::NoResource("the agent holds " + std::to_string(all) +
                              " registered regions, its limit (max_regions): deregister regions "
                              "no longer used, or raise the agent's limit");
  }
  const uint32_t mine = owners_[owner].regions;
  if (mine >= options_.max_regions_per_owner) {
    return Status::NoResource("this caller holds " + std::to_string(mine) +
                              " registered regions, its limit (max_regions_per_caller): "
                              "deregister regions no longer used, or register fewer, larger "
                              "ones and use offsets into them");
  }
  const uint64_t held = owners_[owner].region_bytes;
  const uint64_t limit = options_.max_region_bytes_per_owner;
  if (file_bytes > 0 && (file_bytes > limit || held > limit - file_bytes)) {
    return Status::NoResource(
        "this caller holds " + std::to_string(held) + " bytes of region files; a region of " +
        std::to_string(file_bytes) + " more would pass its limit of " + std::to_string(limit) +
        " (max_region_bytes_per_caller): deregister regions no longer used, or register smaller "
        "ones");
  }
  return Status::Ok();
}

Result<Registration> Engine::Register(VqpSlot& vqp, const RegionSlot& region, unsigned access) {
  Registration r;
  r.mrs.resize(vqp.pds.size());
  for (size_t d = 0; d < vqp.pds.size(); ++d) {
    if (vqp.pds[d] == nullptr) continue;
    BRAID_ASSIGN_OR_RETURN(
        r.mrs[d], vqp.pds[d]->RegisterMemory(region.shm->addr(), region.shm->length(), access));
  }
  return r;
}

std::vector<uint32_t> Registration::Keys(bool remote) const {
  std::vector<uint32_t> keys;
  for (const auto& mr : mrs) keys.push_back(mr == nullptr ? 0 : remote ? mr->rkey() : mr->lkey());
  return keys;
}

Result<RemoteRegion> Engine::DoGrant(RegionSlot& region, VqpSlot& vqp) {
  if (region.grants.find(vqp.id) == region.grants.end()) {
    BRAID_ASSIGN_OR_RETURN(
        Registration r,
        Register(vqp, region,
                 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ));
    region.grants.emplace(vqp.id, std::move(r));
  }
  return DescribeGrant(region, vqp.id);
}

Status Engine::DoRevoke(uint64_t region_id, uint64_t vqp_id, OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(RegionSlot * region, FindRegion(region_id, scope));
  if (region->grants.erase(vqp_id) == 0) {
    return Status::NotFound("region " + std::to_string(region_id) + " is not granted to VQP " +
                            std::to_string(vqp_id));
  }
  Emit(EventKind::kAccessRevoked, vqp_id, -1, "",
       "region " + std::to_string(region_id) + ": revoked by its owner");
  return Status::Ok();
}

Status Engine::DoDeregister(uint64_t region_id, OwnerId scope) {
  BRAID_ASSIGN_OR_RETURN(RegionSlot * region, FindRegion(region_id, scope));
  if (region->in_flight > 0) {
    return Status::FailedPrecondition("region " + std::to_string(region_id) + " has " +
                                      std::to_string(region->in_flight) + " transfers in flight");
  }
  for (const auto& [vqp_id, registration] : region->grants) {
    Emit(EventKind::kAccessRevoked, vqp_id, -1, "",
         "region " + std::to_string(region_id) + ": deregistered");
  }
  for (auto& [id, v] : vqps_) {
    auto use = v->local_uses.find(region_id);
    if (use == v->local_uses.end()) continue;
    (void)v->vqp->RemoveLocalKeys(use->second.handle);
    v->local_uses.erase(use);
  }
  regions_.by_id.erase(region_id);
  published_.releases.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

RemoteRegion Engine::DescribeGrant(const RegionSlot& region, uint64_t vqp_id) const {
  RemoteRegion r;
  r.agent_id = options_.agent_id;
  r.region_id = region.id;
  r.vqp_id = vqp_id;
  r.addr = reinterpret_cast<uint64_t>(region.shm->addr());
  r.length = region.shm->length();
  const Registration& grant = region.grants.at(vqp_id);
  for (size_t d = 0; d < grant.mrs.size(); ++d) {
    if (grant.mrs[d] != nullptr) {
      r.keys.emplace_back(devices_[d]->device->info().name, grant.mrs[d]->rkey());
    }
  }
  return r;
}

RegionStatus Engine::DescribeRegion(const RegionSlot& slot) const {
  RegionStatus s;
  s.id = slot.id;
  s.owner = slot.owner;
  s.label = slot.label;
  s.length = slot.shm->length();
  s.path = slot.shm->path();
  s.in_flight = slot.in_flight;
  for (const auto& [vqp_id, grant] : slot.grants) s.grants.push_back(DescribeGrant(slot, vqp_id));
  return s;
}

}  // namespace braid::engine
