// VirtualQp: creation, connection, keys, health, completion routing and destruction.
// The send path is in vqp_send.cc, the receive path in vqp_recv.cc.
#include "dataplane/vqp/virtual_qp.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <random>
#include <string>

namespace braid::vqp {

using common::Status;

namespace {

std::atomic<uint32_t> g_next_vqp_num{1};

// Receive-side reorder window: DQPLB sequence numbers may run ahead by everything the sender can
// have in flight; SPRAY notify numbers by the sender's outstanding virtual WRs.
uint32_t WindowSize(const VirtualQpConfig& c) {
  const uint64_t want = c.scheme == Scheme::kDqplb
                            ? 2ull * c.num_qps * c.qp_capacity + 2ull * c.max_virtual_wrs
                            : 2ull * c.max_virtual_wrs;
  return static_cast<uint32_t>(std::min<uint64_t>(std::bit_ceil(want), 1u << 23));
}

}  // namespace

VirtualQp::VirtualQp(CreateKey, VirtualCq& cq, const VirtualQpConfig& config, uint32_t num_devices)
    : cq_(cq),
      config_(config),
      vqp_num_(g_next_vqp_num.fetch_add(1)),
      local_keys_(config.max_keys, num_devices),
      remote_keys_(config.max_keys, 1),
      window_(WindowSize(config), config.scheme == Scheme::kDqplb ? 24 : 32) {}

common::Result<std::unique_ptr<VirtualQp>> VirtualQp::Create(
    VirtualCq& cq, std::span<verbs::ProtectionDomain* const> pds, const VirtualQpConfig& config) {
  BRAID_RETURN_IF_ERROR(ValidateConfig(config));
  if (pds.size() != static_cast<size_t>(cq.num_devices())) {
    return Status::InvalidArgument("pass one protection domain (or nullptr) per device of the CQ");
  }
  auto vqp =
      std::make_unique<VirtualQp>(CreateKey(), cq, config, static_cast<uint32_t>(cq.num_devices()));
  BRAID_RETURN_IF_ERROR(vqp->Init(pds));
  std::random_device random;
  for (size_t i = 0; i < vqp->link_secret_.size(); i += 4) {
    const uint32_t word = random();
    std::memcpy(vqp->link_secret_.data() + i, &word, 4);
  }
  return vqp;
}

uint32_t VirtualQp::ReservedEntries(const PhysQp& qp) const {
  const bool is_message_or_single = !multi() || &qp == &qps_.back();
  return config_.qp_capacity +
         (is_message_or_single ? config_.max_virtual_wrs : config_.qp_capacity);
}

Status VirtualQp::Init(std::span<verbs::ProtectionDomain* const> pds) {
  for (size_t d = 0; d < pds.size(); ++d) {
    if (pds[d] != nullptr) devices_.push_back(static_cast<int>(d));
  }
  if (devices_.empty()) return Status::InvalidArgument("a VQP needs at least one device");
  const uint32_t n = config_.num_qps;
  const uint32_t cap = config_.qp_capacity;
  const uint32_t vwrs = config_.max_virtual_wrs;

  // Control region: pool slots | notify/tail payloads | single-QP receive slots | fence words.
  // The payload and receive-slot areas are indexed by ring slot (a power of two ≥ vwrs).
  const uint64_t ring = std::bit_ceil(uint64_t{vwrs});
  const size_t pool_bytes = multi() ? size_t{n} * cap * 16 : 0;
  notify_base_ = pool_bytes;
  user_recv_base_ = notify_base_ + ring * 16;
  fence_offset_ = user_recv_base_ + ring * 16;
  control_.assign(fence_offset_ + 64, 0);
  control_mrs_.resize(static_cast<size_t>(cq_.num_devices()));
  for (int d : devices_) {
    BRAID_ASSIGN_OR_RETURN(
        control_mrs_[static_cast<size_t>(d)],
        pds[static_cast<size_t>(d)]->RegisterMemory(
            control_.data(), control_.size(), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ));
  }

  // Physical QPs: data QP i on device i mod D, then the message QP on the first device.
  const uint32_t total = n + (multi() ? 1 : 0);
  qps_.resize(total);
  std::vector<uint64_t> needs(static_cast<size_t>(cq_.num_devices()), 0);
  for (uint32_t i = 0; i < total; ++i) {
    PhysQp& q = qps_[i];
    q.device = i < n ? devices_[i % devices_.size()] : devices_[0];
    q.has_pool = multi() && i < n;
    needs[static_cast<size_t>(q.device)] += ReservedEntries(q);
  }
  for (int d : devices_) {
    // A VQP that could not be created even on an idle agent is a wrong request, not back-pressure.
    if (needs[static_cast<size_t>(d)] > cq_.limit(d)) {
      return Status::InvalidArgument(
          "this VQP needs " + std::to_string(needs[static_cast<size_t>(d)]) +
          " completion entries on device " + cq_.device(d).info().name + " (num_qps " +
          std::to_string(n) + ", qp_capacity " + std::to_string(cap) + ", max_virtual_wrs " +
          std::to_string(vwrs) + "), more than its completion queue can hold (" +
          std::to_string(cq_.limit(d)) + "): lower num_qps, qp_capacity or max_virtual_wrs");
    }
  }
  for (int d : devices_) {
    BRAID_RETURN_IF_ERROR(cq_.CheckRoom(d, needs[static_cast<size_t>(d)]));
  }
  reserved_.assign(static_cast<size_t>(cq_.num_devices()), 0);
  device_load_.assign(static_cast<size_t>(cq_.num_devices()), DeviceLoad{});
  for (uint32_t i = 0; i < total; ++i) {
    PhysQp& q = qps_[i];
    const bool takes_user_recvs = !multi() || i == n;
    verbs::QpCaps caps;
    caps.max_send_wr = cap;
    caps.max_recv_wr = takes_user_recvs ? vwrs : cap;
    caps.max_send_sge = 1;
    caps.max_recv_sge = 1;
    caps.max_inline_data = 0;
    const uint32_t entries = ReservedEntries(q);
    BRAID_RETURN_IF_ERROR(cq_.Reserve(q.device, entries));
    reserved_[static_cast<size_t>(q.device)] += entries;
    verbs::Cq* pcq = &cq_.physical_cq(q.device);
    BRAID_ASSIGN_OR_RETURN(q.qp, pds[static_cast<size_t>(q.device)]->CreateQp(
                                     verbs::QpCreateParams{pcq, pcq, caps, false}));
    cq_.Register(q.device, q.qp->qp_num(), this, static_cast<uint16_t>(i));
  }
  cq_.AddReadyCapacity(2ull * vwrs);
  healthy_data_qps_ = static_cast<int>(n);

  ring_mask_ = ring - 1;
  sends_.resize(ring);
  recvs_.resize(ring);
  buffered_.resize(vwrs);
  frags_.resize(size_t{total} * cap);
  free_frags_.reserve(frags_.size());
  for (uint32_t i = static_cast<uint32_t>(frags_.size()); i > 0; --i) free_frags_.push_back(i - 1);
  retry_.resize(frags_.size());
  owed_.resize(frags_.size() + ring);  // every piece in flight, and one notify or tail per WR
  stalled_.resize(vwrs);
  parked_.resize(multi() ? size_t{n} * cap : 0);
  seq_window_ = window_.size();
  seq_done_.assign(seq_window_, 0);
  return Status::Ok();
}

VirtualQp::~VirtualQp() {
  if (connected_) Drain();
  for (const PhysQp& q : qps_) {
    if (q.qp) cq_.Unregister(q.device, q.qp->qp_num());
  }
  qps_.clear();  // QPs before the control MRs
  control_mrs_.clear();
  for (size_t d = 0; d < reserved_.size(); ++d) {
    if (reserved_[d] > 0) cq_.Release(static_cast<int>(d), reserved_[d]);
  }
  if (!sends_.empty()) cq_.RemoveReadyCapacity(2ull * config_.max_virtual_wrs);
}

// Every virtual WR completes once: every QP to ERR, every flush collected, every virtual WR
// completed exactly once.
void VirtualQp::Drain() {
  destroying_ = true;
  for (PhysQp& q : qps_) (void)q.qp->ToError();
  for (int round = 0; round < 1000000; ++round) {
    bool busy = false;
    for (const PhysQp& q : qps_) busy = busy || q.outstanding > 0 || q.posted_recvs > 0;
    if (!busy) break;
    cq_.PollPhysical();
  }
  AbortAll(IBV_WC_WR_FLUSH_ERR);
  // Pieces that could not be re-posted, and receives with no physical WR behind them.
  while (retry_count_ > 0) {
    const uint32_t f = retry_[retry_head_];
    retry_head_ = (retry_head_ + 1) % retry_.size();
    --retry_count_;
    FinishPiece(f, IBV_WC_WR_FLUSH_ERR);
  }
  Pump();
  ReportSends();
  for (uint64_t i = recv_head_; i != recv_tail_; ++i) {
    RecvEntry& r = Recv(i);
    if (!r.done) {
      r.done = true;
      r.status = IBV_WC_WR_FLUSH_ERR;
    }
  }
  ReportRecvs();
}

BusinessCard VirtualQp::LocalCard(uint64_t epoch) const {
  BusinessCard card;
  card.vqp_id = vqp_num_;
  card.epoch = epoch;
  card.scheme = config_.scheme;
  card.fragment_size = config_.fragment_size;
  card.qp_capacity = config_.qp_capacity;
  card.max_virtual_wrs = config_.max_virtual_wrs;
  card.control_addr = control_addr(fence_offset_);
  card.link_secret = link_secret_;
  std::vector<uint32_t> card_index(static_cast<size_t>(cq_.num_devices()), 0);
  for (size_t k = 0; k < devices_.size(); ++k) {
    const int d = devices_[k];
    const verbs::DeviceInfo& info = cq_.device(d).info();
    card.devices.push_back(
        {info.name, info.gid, info.lid, control_mrs_[static_cast<size_t>(d)]->rkey()});
    card_index[static_cast<size_t>(d)] = static_cast<uint32_t>(k);
  }
  for (size_t i = 0; i < qps_.size(); ++i) {
    const PhysQp& q = qps_[i];
    const verbs::DeviceInfo& info = cq_.device(q.device).info();
    QpCard qc{card_index[static_cast<size_t>(q.device)], info.port_num, q.qp->qp_num(),
              (q.qp->qp_num() * 2654435761u + vqp_num_) & 0xFFFFFF,
              static_cast<uint8_t>(info.active_mtu)};
    if (i < config_.num_qps) {
      card.data_qps.push_back(qc);
    } else {
      card.message_qp = qc;
    }
  }
  return card;
}

Status VirtualQp::Connect(const BusinessCard& remote, uint64_t epoch) {
  if (connected_) return Status::FailedPrecondition("VQP is already connected");
  const BusinessCard local = LocalCard();
  BRAID_RETURN_IF_ERROR(CheckPeerCards(local, remote));
  remote_keys_ = KeyTable(config_.max_keys, static_cast<uint32_t>(remote.devices.size()));
  remote_control_rkeys_.clear();
  for (const DeviceCard& d : remote.devices) remote_control_rkeys_.push_back(d.control_rkey);
  remote_control_addr_ = remote.control_addr;
  remote_devices_ = remote.devices;
  link_key_ = LinkKeyOf(local, remote);
  for (size_t i = 0; i < qps_.size(); ++i) {
    PhysQp& q = qps_[i];
    const QpCard& mine = i < config_.num_qps ? local.data_qps[i] : *local.message_qp;
    const QpCard& peer = i < config_.num_qps ? remote.data_qps[i] : *remote.message_qp;
    q.remote_device = peer.device_index;
    BRAID_RETURN_IF_ERROR(q.qp->ToInit({.port_num = cq_.device(q.device).info().port_num}));
    BRAID_RETURN_IF_ERROR(ToRtrRts(static_cast<int>(i), peer, mine.psn, epoch));
  }
  data_key_devices_.clear();
  for (uint32_t i = 0; i < config_.num_qps; ++i) {
    const std::pair<uint32_t, uint32_t> pair{static_cast<uint32_t>(qps_[i].device),
                                             qps_[i].remote_device};
    if (std::find(data_key_devices_.begin(), data_key_devices_.end(), pair) ==
        data_key_devices_.end()) {
      data_key_devices_.push_back(pair);
    }
  }
  const PhysQp& mq = qps_[static_cast<size_t>(message_qp())];
  message_key_device_ = {static_cast<uint32_t>(mq.device), mq.remote_device};
  // The DQPLB sequence window: the receive pools are in place before the peer can send anything.
  for (size_t i = 0; i < qps_.size(); ++i) BRAID_RETURN_IF_ERROR(PostPool(static_cast<int>(i)));
  connected_ = true;
  return Status::Ok();
}

common::Result<uint32_t> VirtualQp::AddLocalKeys(std::span<const uint32_t> lkeys) {
  return local_keys_.Add(lkeys);
}

common::Result<uint32_t> VirtualQp::AddRemoteKeys(std::span<const uint32_t> rkeys) {
  if (!connected_)
    return Status::FailedPrecondition("remote keys need the peer's card: connect first");
  return remote_keys_.Add(rkeys);
}

void VirtualQp::SetHealth(int qp_index, QpHealth health) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (qp_index < static_cast<int>(config_.num_qps)) {
    healthy_data_qps_ += (health == QpHealth::kHealthy) - (q.health == QpHealth::kHealthy);
  }
  q.health = health;
}

Status VirtualQp::ChangeDeviceHealth(int device, QpHealth from, QpHealth to) {
  bool any = false;
  for (size_t i = 0; i < qps_.size(); ++i) {
    if (qps_[i].device != device) continue;
    any = true;
    if (qps_[i].health == from && !qps_[i].probing) SetHealth(static_cast<int>(i), to);
  }
  if (!any) return Status::NotFound("VQP has no QP on device " + std::to_string(device));
  return Status::Ok();
}

// INIT → RTR (towards the peer's entry, on the peer device recorded in remote_devices_) → RTS.
Status VirtualQp::ToRtrRts(int index, const QpCard& peer, uint32_t psn, uint64_t epoch) {
  PhysQp& q = qps_[static_cast<size_t>(index)];
  const DeviceCard& peer_device = remote_devices_[peer.device_index];
  const verbs::DeviceInfo& info = cq_.device(q.device).info();
  verbs::QpRtrParams rtr;
  rtr.remote = {peer_device.gid, peer_device.lid, peer.qp_num, peer.psn};
  rtr.path_mtu =
      static_cast<ibv_mtu>(std::min<uint8_t>(static_cast<uint8_t>(info.active_mtu), peer.mtu));
  rtr.sgid_index = info.gid_index;
  rtr.min_rnr_timer = 1;
  rtr.epoch = epoch;
  rtr.link_key = link_key_;
  BRAID_RETURN_IF_ERROR(q.qp->ToRtr(rtr).WithContext("QP " + std::to_string(index) + " to RTR"));
  return q.qp->ToRts({.sq_psn = psn,
                      .timeout = config_.timeout,
                      .retry_cnt = config_.retry_cnt,
                      .rnr_retry = config_.rnr_retry});
}

// Posts QP `index`'s receive pool (if it has one), but for slots holding a parked arrival: those
// are re-posted when the reorder window moves past them.
Status VirtualQp::PostPool(int index) {
  if (!qps_[static_cast<size_t>(index)].has_pool) return Status::Ok();
  for (uint32_t k = 0; k < config_.qp_capacity; ++k) {
    const uint32_t slot = static_cast<uint32_t>(index) * config_.qp_capacity + k;
    if (parked_[slot].valid) continue;
    BRAID_RETURN_IF_ERROR(PostPoolRecv(index, slot));
  }
  return Status::Ok();
}

Status VirtualQp::BeginReset(int index) {
  if (!connected_) return Status::FailedPrecondition("VQP is not connected");
  if (index < 0 || index >= num_physical_qps()) {
    return Status::OutOfRange("no physical QP " + std::to_string(index));
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  if (q.resetting) return Status::Ok();
  q.resetting = true;
  if (q.health != QpHealth::kDead) MarkDead(index, IBV_WC_WR_FLUSH_ERR);
  BRAID_RETURN_IF_ERROR(q.qp->ToError());
  return Status::Ok();
}

bool VirtualQp::ResetReady(int index) const {
  if (index < 0 || index >= num_physical_qps()) return false;
  const PhysQp& q = qps_[static_cast<size_t>(index)];
  return q.resetting && q.outstanding == 0 && q.posted_recvs == 0;
}

common::Result<QpCard> VirtualQp::ResetQp(int index, uint32_t psn) {
  if (!ResetReady(index)) {
    return Status::FailedPrecondition("QP " + std::to_string(index) +
                                      " still has work in flight or was not reset");
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  const verbs::DeviceInfo& info = cq_.device(q.device).info();
  BRAID_RETURN_IF_ERROR(q.qp->ToReset());
  BRAID_RETURN_IF_ERROR(q.qp->ToInit({.port_num = info.port_num}));
  uint32_t device_index = 0;  // into the card's devices, which follow devices_
  for (size_t k = 0; k < devices_.size(); ++k) {
    if (devices_[k] == q.device) device_index = static_cast<uint32_t>(k);
  }
  q.outstanding_bytes = 0;
  q.rate.Reset();
  q.reset_psn = psn & 0xFFFFFF;
  return QpCard{device_index, info.port_num, q.qp->qp_num(), psn & 0xFFFFFF,
                static_cast<uint8_t>(info.active_mtu)};
}

Status VirtualQp::ReconnectQp(int index, const QpCard& peer, uint64_t epoch) {
  if (index < 0 || index >= num_physical_qps()) {
    return Status::OutOfRange("no physical QP " + std::to_string(index));
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  if (!q.resetting || q.qp->state() != verbs::QpState::kInit) {
    return Status::FailedPrecondition("QP " + std::to_string(index) + " was not reset");
  }
  if (peer.device_index >= remote_devices_.size() || peer.device_index != q.remote_device) {
    return Status::InvalidArgument("the peer's QP " + std::to_string(index) +
                                   " moved to another device");
  }
  // Our first PSN was chosen at ResetQp and sent to the peer in our entry.
  BRAID_RETURN_IF_ERROR(ToRtrRts(index, peer, q.reset_psn, epoch));
  BRAID_RETURN_IF_ERROR(PostPool(index));
  q.resetting = false;
  q.death = IBV_WC_SUCCESS;
  // The probe: no new work until the path answers.
  SetHealth(index, QpHealth::kDraining);
  return PostProbe(index);
}

Status VirtualQp::PostProbe(int index) {
  PhysQp& q = qps_[static_cast<size_t>(index)];
  ibv_send_wr probe{};
  probe.wr_id = WrTag::Encode(WrKind::kProbe, static_cast<uint32_t>(index));
  probe.opcode = IBV_WR_RDMA_WRITE;
  probe.send_flags = IBV_SEND_SIGNALED;
  probe.wr.rdma.remote_addr = remote_control_addr_;
  probe.wr.rdma.rkey = remote_control_rkeys_[q.remote_device];
  ibv_send_wr* bad = nullptr;
  q.probing = true;
  Status posted = q.qp->PostSend(&probe, &bad);
  if (!posted.ok()) {
    q.probing = false;
    MarkDead(index, IBV_WC_GENERAL_ERR);
    return posted.WithContext("probe of QP " + std::to_string(index));
  }
  ++q.outstanding;
  return Status::Ok();
}

void VirtualQp::Strike(int qp_index, uint64_t now, std::string cause) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (q.strikes > 0 && now - q.last_strike_ns > kForgiveStrikesNs) q.strikes = 0;
  ++q.strikes;
  q.last_strike_ns = now;
  const uint64_t ms =
      std::min<uint64_t>(uint64_t{config_.cooldown_ms} << std::min<uint32_t>(q.strikes - 1, 16),
                         config_.cooldown_cap_ms);
  q.cooldown_until_ns = now + ms * 1000000;
  q.cooling_cause = std::move(cause) + "; cooling down for " + std::to_string(ms) + " ms (strike " +
                    std::to_string(q.strikes) + ")";
}

void VirtualQp::CheckStalls(uint64_t now) {
  if (!connected_ || destroying_) return;
  // A link that stops completing anything for the VQP (no data QP on the device completed a WR
  // for the limit while work is outstanding) cools its healthy QPs. Per QP, a wait is no sign: QPs
  // of a device share its link and take turns. A single broken QP is RC's business (it times out
  // and dies).
  for (int d : devices_) {
    DeviceLoad& load = device_load_[static_cast<size_t>(d)];
    if (load.outstanding == 0) continue;
    const double turn_ns = load.rate.ns_per_byte() * static_cast<double>(config_.fragment_size);
    const uint64_t limit = std::max<uint64_t>(uint64_t{config_.stall_ms} * 1000000,
                                              static_cast<uint64_t>(32 * turn_ns));
    if (now <= load.last_progress_ns + limit) continue;
    const uint64_t stalled_ms = (now - load.last_progress_ns) / 1000000;
    load.rate.Restart(now);  // the stall is not the link's rate
    load.last_progress_ns = now;
    for (uint32_t i = 0; i < config_.num_qps; ++i) {
      PhysQp& q = qps_[i];
      if (q.device != d || q.health != QpHealth::kHealthy || healthy_data_qps_ <= 1) continue;
      Strike(static_cast<int>(i), now,
             "stalled: its link completed nothing for " + std::to_string(stalled_ms) + " ms with " +
                 std::to_string(load.outstanding) + " WRs outstanding");
      SetHealth(static_cast<int>(i), QpHealth::kCooling);
    }
  }
  // Cooled QPs whose cooldown has passed and whose work is back are probed (re-admitted when the
  // probe answers).
  for (uint32_t i = 0; i < config_.num_qps; ++i) {
    const PhysQp& q = qps_[i];
    if (q.health == QpHealth::kCooling && !q.probing && q.outstanding == 0 &&
        now >= q.cooldown_until_ns) {
      (void)PostProbe(static_cast<int>(i));  // a failed post marks it dead
    }
  }
}

void VirtualQp::OnProbeCompletion(int qp_index, const ibv_wc& wc) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  --q.outstanding;
  if (!q.probing) return;
  q.probing = false;
  if (wc.status != IBV_WC_SUCCESS) {
    MarkDead(qp_index, wc.status);
    return;
  }
  // A QP that keeps dying (a second strike before the first was forgiven) sits out the rest of
  // its cooldown, unless no other data QP is healthy.
  if (qp_index < static_cast<int>(config_.num_qps) && q.strikes >= 2 && healthy_data_qps_ > 0 &&
      NowNs() < q.cooldown_until_ns) {
    SetHealth(qp_index, QpHealth::kCooling);
    return;
  }
  // A QP that comes back on a drained device stays out of service until the operator re-admits it.
  SetHealth(qp_index, DeviceDrained(q.device) ? QpHealth::kDraining : QpHealth::kHealthy);
}

Status VirtualQp::DrainDevice(int device) {
  BRAID_RETURN_IF_ERROR(ChangeDeviceHealth(device, QpHealth::kHealthy, QpHealth::kDraining));
  drained_devices_ |= 1u << device;
  return Status::Ok();
}

Status VirtualQp::UndrainDevice(int device) {
  BRAID_RETURN_IF_ERROR(ChangeDeviceHealth(device, QpHealth::kDraining, QpHealth::kHealthy));
  drained_devices_ &= ~(1u << device);
  Pump();
  ReportSends();
  return Status::Ok();
}

void VirtualQp::MarkDead(int qp_index, ibv_wc_status status) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (status != IBV_WC_WR_FLUSH_ERR && q.death == IBV_WC_SUCCESS) q.death = status;
  if (q.death != IBV_WC_SUCCESS) last_error_ = q.death;
  if (q.health == QpHealth::kDead) return;
  // A path error is a strike; an operation's own fault, or a reset asked for, is not.
  if (qp_index < static_cast<int>(config_.num_qps) && q.health == QpHealth::kHealthy &&
      status != IBV_WC_WR_FLUSH_ERR && !IsOperationFault(status)) {
    Strike(qp_index, NowNs(), std::string("died (") + ibv_wc_status_str(status) + ")");
  }
  SetHealth(qp_index, QpHealth::kDead);
  ++counters_.qps_died;
  if (healthy_data_qps() == 0) AbortAll(last_error_);
}

// A dead QP gets no new work, and with none healthy nothing can make progress; every unfinished
// virtual WR ends with an error once its in-flight pieces are back.
void VirtualQp::AbortAll(ibv_wc_status status) {
  for (uint64_t i = send_head_; i != send_tail_; ++i) {
    SendEntry& e = Send(i);
    if (e.stage == Stage::kDone) continue;
    if (e.status == IBV_WC_SUCCESS || (e.status == IBV_WC_WR_FLUSH_ERR && status != e.status)) {
      e.status = status;
    }
    e.aborted = true;
  }
}

void VirtualQp::OnCompletion(uint16_t qp_index, const ibv_wc& wc) {
  if (!WrTag::Valid(wc.wr_id) || qp_index >= qps_.size()) {
    ++counters_.protocol_errors;
    return;
  }
  const WrKind kind = WrTag::Kind(wc.wr_id);
  const uint32_t slot = WrTag::Slot(wc.wr_id);
  switch (kind) {
    case WrKind::kFragment:
    case WrKind::kNotify:
    case WrKind::kFence:
    case WrKind::kMessage:
      OnSendCompletion(qp_index, wc, slot);
      break;
    case WrKind::kPoolRecv:
    case WrKind::kUserRecv:
      OnRecvCompletion(qp_index, wc, kind, slot);
      break;
    case WrKind::kProbe:
      OnProbeCompletion(qp_index, wc);
      break;
    default:
      ++counters_.protocol_errors;
      return;
  }
  if (retry_count_ > 0 || stalled_count_ > 0 || owed_count_ > 0 || send_dispatch_ != send_tail_) {
    Pump();
  }
  if (send_head_ != send_tail_) ReportSends();
  if (recv_head_ != recv_tail_) ReportRecvs();
}

}  // namespace braid::vqp
