#include "dataplane/soft/sim_fabric.h"

#include <algorithm>
#include <cstring>

#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

using common::Status;

class SimFabric::SimChannel final : public Channel {
 public:
  struct InFlight {
    uint64_t due_ns;
    uint64_t seq;
    std::unique_ptr<Packet> packet;
  };

  SimChannel(SimFabric* fabric, SoftDevice* src, uint32_t src_qpn, const verbs::Gid& dst_gid,
             uint32_t dst_qpn)
      : fabric_(fabric), src_(src), src_qpn_(src_qpn), dst_gid_(dst_gid), dst_qpn_(dst_qpn) {}
  ~SimChannel() override {
    for (InFlight& f : queue_) fabric_->Recycle(std::move(f.packet));
    fabric_->RemoveChannel(this);
  }

  void Transmit(const PacketHeader& header, std::span<const iovec> payload) override {
    // The in-memory link keeps a copy: the bytes as they were when sent, like a wire would.
    std::unique_ptr<Packet> packet = fabric_->Acquire();
    packet->header = header;
    packet->payload.resize(header.payload_len);
    size_t off = 0;
    for (const iovec& v : payload) {
      const size_t n = std::min(v.iov_len, packet->payload.size() - off);
      std::memcpy(packet->payload.data() + off, v.iov_base, n);
      off += n;
    }
    fabric_->Enqueue(this, std::move(packet));
  }

  uint64_t window_bytes() const override {
    const uint64_t w = fabric_->options_.qp_window_bytes;
    return w == 0 ? UINT64_MAX : w;
  }

  SimFabric* fabric_;
  SoftDevice* src_;
  uint32_t src_qpn_;
  verbs::Gid dst_gid_;
  uint32_t dst_qpn_;
  std::deque<InFlight> queue_;
  bool held_ = false;
  bool broken_ = false;
  int drop_next_ = 0;
  uint64_t delay_ns_ = 0;
  uint64_t last_due_ns_ = 0;
};

SimFabric::SimFabric(SimFabricOptions options) : options_(options), rng_(options.seed) {}

SimFabric::~SimFabric() = default;

Status SimFabric::Attach(SoftDevice* device) {
  if (FindNicByGid(device->info().gid) != nullptr) {
    return Status::AlreadyExists("a soft NIC with GID " + device->info().gid.ToString() +
                                 " is already attached");
  }
  nics_.push_back(NicState{device});
  return Status::Ok();
}

void SimFabric::Detach(SoftDevice* device) {
  std::erase_if(nics_, [device](const NicState& n) { return n.device == device; });
}

common::Result<std::unique_ptr<Channel>> SimFabric::OpenChannel(SoftDevice* local,
                                                                uint32_t local_qpn,
                                                                const verbs::QpRtrParams& rtr) {
  // No connection setup on the simulated link: the PSN, epoch and link key are not needed.
  auto channel =
      std::make_unique<SimChannel>(this, local, local_qpn, rtr.remote.gid, rtr.remote.qp_num);
  channel->delay_ns_ = options_.delay_ns;
  channels_.push_back(channel.get());
  return std::unique_ptr<Channel>(std::move(channel));
}

std::unique_ptr<Packet> SimFabric::Acquire() {
  if (pool_.empty()) return std::make_unique<Packet>();
  std::unique_ptr<Packet> p = std::move(pool_.back());
  pool_.pop_back();
  return p;
}

void SimFabric::Recycle(std::unique_ptr<Packet> packet) { pool_.push_back(std::move(packet)); }

void SimFabric::Enqueue(SimChannel* c, std::unique_ptr<Packet> packet) {
  uint64_t delay = c->delay_ns_;
  uint64_t sent = now_ns_;
  if (NicState* nic = FindNicByDevice(c->src_)) {
    delay += nic->delay_ns;
    if (nic->bytes_per_second > 0) {
      const uint64_t bytes = packet->payload.size() + sizeof(PacketHeader);
      sent = std::max(now_ns_, nic->busy_until_ns) + bytes * 1'000'000'000 / nic->bytes_per_second;
      nic->busy_until_ns = sent;
    }
  }
  const uint64_t due = std::max(sent + delay, c->last_due_ns_);
  c->last_due_ns_ = due;
  c->queue_.push_back({due, send_seq_++, std::move(packet)});
}

void SimFabric::RemoveChannel(SimChannel* channel) { std::erase(channels_, channel); }

SimFabric::SimChannel* SimFabric::FindChannel(const verbs::Qp& qp) const {
  const auto* soft_qp = dynamic_cast<const SoftQp*>(&qp);
  if (soft_qp == nullptr) return nullptr;
  for (SimChannel* c : channels_) {
    if (c->src_ == soft_qp->device() && c->src_qpn_ == soft_qp->qp_num()) return c;
  }
  return nullptr;
}

SimFabric::SimChannel* SimFabric::FindPeerChannel(const SimChannel& channel) const {
  for (SimChannel* c : channels_) {
    if (c->src_->info().gid == channel.dst_gid_ && c->src_qpn_ == channel.dst_qpn_ &&
        c->dst_qpn_ == channel.src_qpn_ && c->dst_gid_ == channel.src_->info().gid) {
      return c;
    }
  }
  return nullptr;
}

SimFabric::NicState* SimFabric::FindNic(std::string_view name) {
  for (NicState& n : nics_) {
    if (n.device->info().name == name) return &n;
  }
  return nullptr;
}

SimFabric::NicState* SimFabric::FindNicByGid(const verbs::Gid& gid) {
  for (NicState& n : nics_) {
    if (n.device->info().gid == gid) return &n;
  }
  return nullptr;
}

SimFabric::NicState* SimFabric::FindNicByDevice(const SoftDevice* device) {
  for (NicState& n : nics_) {
    if (n.device == device) return &n;
  }
  return nullptr;
}

namespace {
Status NotConnected() { return Status::NotFound("QP is not a connected soft QP of this fabric"); }
Status NoNic(std::string_view nic) {
  return Status::NotFound("no soft NIC named " + std::string(nic) + " on this fabric");
}
}  // namespace

Status SimFabric::HoldQp(const verbs::Qp& qp, bool hold) {
  SimChannel* c = FindChannel(qp);
  if (c == nullptr) return NotConnected();
  c->held_ = hold;
  return Status::Ok();
}

size_t SimFabric::PacketsOnPath(const verbs::Qp& qp) const {
  const SimChannel* c = FindChannel(qp);
  return c == nullptr ? 0 : c->queue_.size();
}

Status SimFabric::HoldNic(std::string_view nic, bool hold) {
  NicState* n = FindNic(nic);
  if (n == nullptr) return NoNic(nic);
  n->held = hold;
  return Status::Ok();
}

Status SimFabric::DropNext(const verbs::Qp& qp, int count) {
  SimChannel* c = FindChannel(qp);
  if (c == nullptr) return NotConnected();
  c->drop_next_ += count;
  return Status::Ok();
}

void SimFabric::SetDropRate(double probability) { drop_rate_ = probability; }

Status SimFabric::SetQpDelay(const verbs::Qp& qp, uint64_t delay_ns) {
  SimChannel* c = FindChannel(qp);
  if (c == nullptr) return NotConnected();
  c->delay_ns_ = delay_ns;
  return Status::Ok();
}

Status SimFabric::SetNicRate(std::string_view nic, uint64_t bytes_per_second) {
  NicState* n = FindNic(nic);
  if (n == nullptr) return Status::NotFound("no soft NIC named '" + std::string(nic) + "'");
  n->bytes_per_second = bytes_per_second;
  return Status::Ok();
}

Status SimFabric::SetNicDelay(std::string_view nic, uint64_t delay_ns) {
  NicState* n = FindNic(nic);
  if (n == nullptr) return NoNic(nic);
  n->delay_ns = delay_ns;
  return Status::Ok();
}

Status SimFabric::BreakQp(const verbs::Qp& qp) {
  SimChannel* c = FindChannel(qp);
  if (c == nullptr) return NotConnected();
  c->broken_ = true;
  if (SimChannel* peer = FindPeerChannel(*c)) peer->broken_ = true;
  return Status::Ok();
}

Status SimFabric::RepairQp(const verbs::Qp& qp) {
  SimChannel* c = FindChannel(qp);
  if (c == nullptr) return NotConnected();
  c->broken_ = false;
  if (SimChannel* peer = FindPeerChannel(*c)) peer->broken_ = false;
  return Status::Ok();
}

Status SimFabric::SetNicUp(std::string_view nic, bool up) {
  NicState* n = FindNic(nic);
  if (n == nullptr) return NoNic(nic);
  n->down = !up;
  return Status::Ok();
}

bool SimFabric::Held(const SimChannel& c) const {
  if (c.held_) return true;
  for (const NicState& n : nics_) {
    if (n.device == c.src_) return n.held;
  }
  return false;
}

bool SimFabric::Ready(const SimChannel& c) const {
  return !c.queue_.empty() && c.queue_.front().due_ns <= now_ns_ && !Held(c);
}

SimFabric::SimChannel* SimFabric::PickReady() {
  ready_scratch_.clear();
  SimChannel* oldest = nullptr;
  for (SimChannel* c : channels_) {
    if (!Ready(*c)) continue;
    ready_scratch_.push_back(c);
    if (oldest == nullptr || c->queue_.front().seq < oldest->queue_.front().seq) oldest = c;
  }
  if (ready_scratch_.empty() || !options_.reorder) return oldest;
  return ready_scratch_[rng_() % ready_scratch_.size()];
}

bool SimFabric::FireDueTimers() {
  bool fired = false;
  for (size_t i = 0; i < nics_.size(); ++i) {
    SoftDevice* device = nics_[i].device;
    if (device->NextDeadline() <= now_ns_) {
      device->FireTimers(now_ns_);
      fired = true;
    }
  }
  return fired;
}

bool SimFabric::DeliverDue(int* budget) {
  bool delivered = false;
  while (*budget > 0) {
    SimChannel* c = PickReady();
    if (c == nullptr) break;
    --*budget;
    delivered = true;
    SimChannel::InFlight f = std::move(c->queue_.front());
    c->queue_.pop_front();
    NicState* src = FindNicByDevice(c->src_);
    NicState* dst = FindNicByGid(c->dst_gid_);
    bool drop = c->broken_ || dst == nullptr || dst->down || (src != nullptr && src->down);
    if (!drop && c->drop_next_ > 0) {
      --c->drop_next_;
      drop = true;
    }
    if (!drop && drop_rate_ > 0) {
      drop = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < drop_rate_;
    }
    if (drop) {
      ++dropped_;
    } else {
      ++delivered_;
      // Two steps, as a stream link does: the QP checks and says where the payload goes, the
      // link places it, then the QP completes (and acknowledges).
      const PacketHeader& h = f.packet->header;
      const Placement placement = dst->device->BeginInbound(h);
      size_t off = 0;
      for (uint32_t i = 0; i < placement.count && off < f.packet->payload.size(); ++i) {
        const size_t n = std::min(placement.iov[i].iov_len, f.packet->payload.size() - off);
        std::memcpy(placement.iov[i].iov_base, f.packet->payload.data() + off, n);
        off += n;
      }
      dst->device->EndInbound(h);
    }
    Recycle(std::move(f.packet));
  }
  return delivered;
}

bool SimFabric::AdvanceToNextEvent() {
  uint64_t next = UINT64_MAX;
  for (const SimChannel* c : channels_) {
    if (c->queue_.empty()) continue;
    if (Held(*c)) return false;  // time stands still while anything is held
    next = std::min(next, c->queue_.front().due_ns);
  }
  for (const NicState& n : nics_) next = std::min(next, n.device->NextDeadline());
  if (next == UINT64_MAX || next <= now_ns_) return false;
  now_ns_ = next;
  return true;
}

void SimFabric::Progress() {
  int budget = options_.max_deliveries_per_progress;
  for (int round = 0; round < 2; ++round) {
    bool worked = FireDueTimers();
    worked = DeliverDue(&budget) || worked;
    if (worked || !options_.auto_advance_time) return;
    if (!AdvanceToNextEvent()) return;
  }
}

size_t SimFabric::in_flight() const {
  size_t n = 0;
  for (const SimChannel* c : channels_) n += c->queue_.size();
  return n;
}

bool SimFabric::RunUntilIdle(int max_rounds) {
  for (int i = 0; i < max_rounds; ++i) {
    bool timers = false;
    for (const NicState& n : nics_) timers = timers || n.device->NextDeadline() != UINT64_MAX;
    if (in_flight() == 0 && !timers) return true;
    Progress();
  }
  return false;
}

}  // namespace braid::soft
