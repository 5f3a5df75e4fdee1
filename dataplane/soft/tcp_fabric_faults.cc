// TcpFabric's fault injection: hold, drop or break one QP pair on its connection, or close every
// connection of a device (its link went down).
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/tcp_fabric_internal.h"

namespace braid::soft {

using common::Status;

TcpFabric::TcpChannel* TcpFabric::ChannelOf(const verbs::Qp& qp) const {
  const auto* soft_qp = dynamic_cast<const SoftQp*>(&qp);
  if (soft_qp == nullptr) return nullptr;
  auto it = channels_.find({soft_qp->device(), soft_qp->qp_num()});
  return it == channels_.end() ? nullptr : it->second;
}

namespace {
Status NotConnected() { return Status::NotFound("QP is not a connected soft QP of this fabric"); }
}  // namespace

Status TcpFabric::HoldQp(const verbs::Qp& qp, bool hold) {
  TcpChannel* c = ChannelOf(qp);
  if (c == nullptr) return NotConnected();
  c->held_ = hold;
  if (!hold && c->conn_ != nullptr) {
    Activate(*c);
    Flush(*c->conn_);
  }
  return Status::Ok();
}

Status TcpFabric::DropNext(const verbs::Qp& qp, int count) {
  TcpChannel* c = ChannelOf(qp);
  if (c == nullptr) return NotConnected();
  c->drop_next_ += count;
  return Status::Ok();
}

Status TcpFabric::BreakQp(const verbs::Qp& qp) {
  TcpChannel* c = ChannelOf(qp);
  if (c == nullptr) return NotConnected();
  Unbind(*c, /*notify=*/true, wire::DetachReason::kBroken);
  c->dead_ = true;
  stats_.frames_dropped += c->txq_.size();
  c->txq_.clear();
  c->queued_ = 0;
  return Status::Ok();
}

Status TcpFabric::BreakDevice(const SoftDevice* device) {
  for (auto& conn : conns_) {
    if (conn->device == device) Kill(*conn);
  }
  for (auto& [key, c] : channels_) {
    if (key.first == device) c->dead_ = true;
  }
  return Status::Ok();
}

}  // namespace braid::soft
