// VirtualQp: creation, connection, keys, completion routing and destruction.
// Send path: vqp_send.cc, vqp_submit.cc, vqp_send_completion.cc; receive path: vqp_recv.cc;
// health and recovery: vqp_health.cc; the message protocols: *_protocol.cc.
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

// A VQP's rings and pools could not be allocated.
Status OutOfMemory() {
  return Status::NoResource("out of memory for the rings of a virtual QP: lower max_virtual_wrs, "
                            "num_qps or qp_capacity, or give the agent more memory");
}

std::atomic<uint32_t> g_next_vqp_num{1};

}  // namespace

VirtualQp::VirtualQp(CreateKey, VirtualCq& cq, const VirtualQpConfig& config, uint32_t num_devices)
    : cq_(cq),
      config_(config),
      vqp_num_(g_next_vqp_num.fetch_add(1)),
      local_keys_(config.max_keys, num_devices),
      remote_keys_(config.max_keys, 1),
      window_(VqpProtocol::ReorderWindowSize(config), VqpProtocol::SequenceBits(config)),
      protocol_(VqpProtocol::Make(*this, config)) {}

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
    if (pds[d] != nullptr) devices_.used.push_back(static_cast<int>(d));
  }
  if (devices_.used.empty()) return Status::InvalidArgument("a VQP needs at least one device");
  const uint32_t n = config_.num_qps;
  const uint32_t cap = config_.qp_capacity;
  const uint32_t vwrs = config_.max_virtual_wrs;

  // Control region: pool slots | notify/tail payloads | single-QP receive slots | fence words.
  // The payload and receive-slot areas are indexed by ring slot (a power of two ≥ vwrs).
  const uint64_t ring = std::bit_ceil(uint64_t{vwrs});
  const size_t pool_bytes = multi() ? size_t{n} * cap * 16 : 0;
  control_.notify_base = pool_bytes;
  control_.user_recv_base = control_.notify_base + ring * 16;
  control_.fence_offset = control_.user_recv_base + ring * 16;
  if (!control_.bytes.Allocate(control_.fence_offset + 64)) return OutOfMemory();
  control_.mrs.resize(static_cast<size_t>(cq_.num_devices()));
  for (int d : devices_.used) {
    BRAID_ASSIGN_OR_RETURN(control_.mrs[static_cast<size_t>(d)],
                           pds[static_cast<size_t>(d)]->RegisterMemory(
                               control_.bytes.data(), control_.bytes.size(),
                               IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ));
  }

  // Physical QPs: data QP i on device i mod D, then the message QP on the first device.
  const uint32_t total = n + (multi() ? 1 : 0);
  qps_.resize(total);
  std::vector<uint64_t> needs(static_cast<size_t>(cq_.num_devices()), 0);
  for (uint32_t i = 0; i < total; ++i) {
    PhysQp& q = qps_[i];
    q.device = i < n ? devices_.used[i % devices_.used.size()] : devices_.used[0];
    q.has_pool = multi() && i < n;
    needs[static_cast<size_t>(q.device)] += ReservedEntries(q);
  }
  for (int d : devices_.used) {
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
  for (int d : devices_.used) {
    BRAID_RETURN_IF_ERROR(cq_.CheckRoom(d, needs[static_cast<size_t>(d)]));
  }
  devices_.reserved.assign(static_cast<size_t>(cq_.num_devices()), 0);
  devices_.load.assign(static_cast<size_t>(cq_.num_devices()), DeviceLoad{});
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
    devices_.reserved[static_cast<size_t>(q.device)] += entries;
    verbs::Cq* pcq = &cq_.physical_cq(q.device);
    BRAID_ASSIGN_OR_RETURN(q.qp, pds[static_cast<size_t>(q.device)]->CreateQp(
                                     verbs::QpCreateParams{pcq, pcq, caps, false}));
    cq_.Register(q.device, q.qp->qp_num(), this, static_cast<uint16_t>(i));
  }
  cq_.AddReadyCapacity(2ull * vwrs);
  healthy_data_qps_ = static_cast<int>(n);

  ring_mask_ = ring - 1;
  const size_t frags = size_t{total} * cap;
  // Every piece in flight may be owed, and one notify or tail per WR.
  if (!send_.entries.Allocate(ring) || !recv_.entries.Allocate(ring) ||
      !recv_.buffered.Init(vwrs) || !send_.frags.Allocate(frags) || !send_.retry.Init(frags) ||
      !send_.owed.Init(frags + ring) || !send_.stalled.Init(ring) ||
      !recv_.parked.Allocate(multi() ? size_t{n} * cap : 0) || window_.size() == 0) {
    return OutOfMemory();
  }
  send_.free_frags.reserve(frags);
  for (uint32_t i = static_cast<uint32_t>(frags); i > 0; --i) send_.free_frags.push_back(i - 1);
  return Status::Ok();
}

VirtualQp::~VirtualQp() {
  if (connected_) Drain();
  for (const PhysQp& q : qps_) {
    if (q.qp) cq_.Unregister(q.device, q.qp->qp_num());
  }
  qps_.clear();  // QPs before the control MRs
  control_.mrs.clear();
  for (size_t d = 0; d < devices_.reserved.size(); ++d) {
    if (devices_.reserved[d] > 0) cq_.Release(static_cast<int>(d), devices_.reserved[d]);
  }
  if (!send_.entries.empty()) cq_.RemoveReadyCapacity(2ull * config_.max_virtual_wrs);
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
  while (!send_.retry.empty()) FinishPiece(send_.retry.Pop(), IBV_WC_WR_FLUSH_ERR);
  Pump();
  ReportSends();
  for (uint64_t i = recv_.head; i != recv_.tail; ++i) {
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
  card.control_addr = control_addr(control_.fence_offset);
  card.link_secret = link_secret_;
  std::vector<uint32_t> card_index(static_cast<size_t>(cq_.num_devices()), 0);
  for (size_t k = 0; k < devices_.used.size(); ++k) {
    const int d = devices_.used[k];
    const verbs::DeviceInfo& info = cq_.device(d).info();
    card.devices.push_back(
        {info.name, info.gid, info.lid, control_.mrs[static_cast<size_t>(d)]->rkey()});
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
  peer_.control_rkeys.clear();
  for (const DeviceCard& d : remote.devices) peer_.control_rkeys.push_back(d.control_rkey);
  peer_.control_addr = remote.control_addr;
  peer_.devices = remote.devices;
  peer_.link_key = LinkKeyOf(local, remote);
  for (size_t i = 0; i < qps_.size(); ++i) {
    PhysQp& q = qps_[i];
    const QpCard& mine = i < config_.num_qps ? local.data_qps[i] : *local.message_qp;
    const QpCard& peer = i < config_.num_qps ? remote.data_qps[i] : *remote.message_qp;
    q.remote_device = peer.device_index;
    BRAID_RETURN_IF_ERROR(q.qp->ToInit({.port_num = cq_.device(q.device).info().port_num}));
    BRAID_RETURN_IF_ERROR(ToRtrRts(static_cast<int>(i), peer, mine.psn, epoch));
  }
  peer_.data_key_devices.clear();
  for (uint32_t i = 0; i < config_.num_qps; ++i) {
    const std::pair<uint32_t, uint32_t> pair{static_cast<uint32_t>(qps_[i].device),
                                             qps_[i].remote_device};
    if (std::find(peer_.data_key_devices.begin(), peer_.data_key_devices.end(), pair) ==
        peer_.data_key_devices.end()) {
      peer_.data_key_devices.push_back(pair);
    }
  }
  const PhysQp& mq = qps_[static_cast<size_t>(message_qp())];
  peer_.message_key_device = {static_cast<uint32_t>(mq.device), mq.remote_device};
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

// INIT → RTR (towards the peer's entry, on the peer device recorded in peer_.devices) → RTS.
Status VirtualQp::ToRtrRts(int index, const QpCard& peer, uint32_t psn, uint64_t epoch) {
  PhysQp& q = qps_[static_cast<size_t>(index)];
  const DeviceCard& peer_device = peer_.devices[peer.device_index];
  const verbs::DeviceInfo& info = cq_.device(q.device).info();
  verbs::QpRtrParams rtr;
  rtr.remote = {peer_device.gid, peer_device.lid, peer.qp_num, peer.psn};
  rtr.path_mtu =
      static_cast<ibv_mtu>(std::min<uint8_t>(static_cast<uint8_t>(info.active_mtu), peer.mtu));
  rtr.sgid_index = info.gid_index;
  rtr.min_rnr_timer = 1;
  rtr.epoch = epoch;
  rtr.link_key = peer_.link_key;
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
    if (recv_.parked[slot].valid) continue;
    BRAID_RETURN_IF_ERROR(PostPoolRecv(index, slot));
  }
  return Status::Ok();
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
  if (!send_.retry.empty() || !send_.stalled.empty() || !send_.owed.empty() ||
      send_.dispatch != send_.tail) {
    Pump();
  }
  if (send_.head != send_.tail) ReportSends();
  if (recv_.head != recv_.tail) ReportRecvs();
}

}  // namespace braid::vqp
