// TcpFabric's fault injection: hold, drop or break one QP's connection, or every connection of a
// device (its link went down); and letting go of what is held for a QP that is gone.
#include <sys/epoll.h>
#include <unistd.h>

#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/tcp_fabric_internal.h"

namespace braid::soft {

using common::Status;

TcpFabric::TcpChannel* TcpFabric::ChannelOf(const verbs::Qp& qp) const {
  const auto* soft_qp = dynamic_cast<const SoftQp*>(&qp);
  if (soft_qp == nullptr) return nullptr;
  for (TcpChannel* c : channels_) {
    if (c->local_ == soft_qp->device() && c->local_qpn_ == soft_qp->qp_num()) return c;
  }
  return nullptr;
}

namespace {
Status NotConnected() { return Status::NotFound("QP is not a connected soft QP of this fabric"); }
}  // namespace

Status TcpFabric::HoldQp(const verbs::Qp& qp, bool hold) {
  TcpChannel* c = ChannelOf(qp);
  if (c == nullptr) return NotConnected();
  c->held_ = hold;
  if (!hold && c->conn_ != nullptr) Flush(*c->conn_);
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
  if (c->conn_ != nullptr) {
    Kill(*c->conn_);
  } else {
    c->dead_ = true;
  }
  return Status::Ok();
}

Status TcpFabric::BreakDevice(const SoftDevice* device) {
  for (TcpChannel* c : channels_) {
    if (c->local_ != device || c->dead_) continue;
    if (c->conn_ != nullptr) {
      Kill(*c->conn_);
    } else {
      c->dead_ = true;
    }
  }
  return Status::Ok();
}

void TcpFabric::ForgetQp(SoftDevice* device, uint32_t qp_num) {
  for (auto& c : conns_) {
    if (c->held && c->device == device && c->hello_in.dst_qpn == qp_num) Kill(*c);
  }
}

}  // namespace braid::soft
