#include "server/proto_mapping.h"

#include <cstring>
#include <limits>
#include <string>

namespace braid::server {

using common::Result;
using common::Status;
using common::StatusCode;

grpc::StatusCode ToGrpcCode(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return grpc::StatusCode::OK;
    case StatusCode::kNoResource:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case StatusCode::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case StatusCode::kOutOfRange:
      return grpc::StatusCode::OUT_OF_RANGE;
    case StatusCode::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case StatusCode::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case StatusCode::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case StatusCode::kNotSupported:
      return grpc::StatusCode::UNIMPLEMENTED;
    case StatusCode::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case StatusCode::kDeadlineExceeded:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case StatusCode::kCancelled:
      return grpc::StatusCode::CANCELLED;
    case StatusCode::kQpError:
    case StatusCode::kDeviceError:
    case StatusCode::kCqOverflow:
    case StatusCode::kIoError:
      return grpc::StatusCode::UNAVAILABLE;
    case StatusCode::kInternal:
      return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::UNKNOWN;
}

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (status.code() == StatusCode::kNoResource && message.empty()) {
    message = "back-pressure: the agent is full";
  }
  return {ToGrpcCode(status.code()), message};
}

namespace {

v1::QpHealth ToProto(vqp::QpHealth h) {
  switch (h) {
    case vqp::QpHealth::kHealthy:
      return v1::QP_HEALTH_HEALTHY;
    case vqp::QpHealth::kDraining:
      return v1::QP_HEALTH_DRAINING;
    case vqp::QpHealth::kDead:
      return v1::QP_HEALTH_DEAD;
    case vqp::QpHealth::kCooling:
      return v1::QP_HEALTH_COOLING;
  }
  return v1::QP_HEALTH_UNSPECIFIED;
}

}  // namespace

void ToProto(const vqp::QpCard& qp, v1::QpCard* out) {
  out->set_device_index(qp.device_index);
  out->set_port(qp.port);
  out->set_qp_num(qp.qp_num);
  out->set_psn(qp.psn);
  out->set_mtu(qp.mtu);
}

Result<vqp::QpCard> FromProto(const v1::QpCard& qp, const char* field) {
  if (qp.port() > 255 || qp.mtu() > 255) {
    return Status::InvalidArgument(std::string("card.") + field + ": port or mtu out of range");
  }
  vqp::QpCard out;
  out.device_index = qp.device_index();
  out.port = static_cast<uint8_t>(qp.port());
  out.qp_num = qp.qp_num();
  out.psn = qp.psn();
  out.mtu = static_cast<uint8_t>(qp.mtu());
  return out;
}

void ToProto(const vqp::BusinessCard& card, v1::BusinessCard* out) {
  out->set_version(card.version);
  out->set_vqp_id(card.vqp_id);
  out->set_epoch(card.epoch);
  out->set_scheme(card.scheme == vqp::Scheme::kSpray ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB);
  out->set_fragment_size(card.fragment_size);
  out->set_qp_capacity(card.qp_capacity);
  out->set_max_virtual_wrs(card.max_virtual_wrs);
  out->set_control_endpoint(card.control_endpoint);
  out->set_incarnation(card.incarnation);
  out->set_agent_identity(card.agent_identity);
  out->set_link_secret(
      std::string(reinterpret_cast<const char*>(card.link_secret.data()), card.link_secret.size()));
  for (const vqp::DeviceCard& d : card.devices) {
    v1::DeviceCard* pd = out->add_devices();
    pd->set_name(d.name);
    pd->set_gid(std::string(reinterpret_cast<const char*>(d.gid.raw.data()), d.gid.raw.size()));
    pd->set_lid(d.lid);
    pd->set_control_rkey(d.control_rkey);
  }
  out->set_control_addr(card.control_addr);
  for (const vqp::QpCard& q : card.data_qps) ToProto(q, out->add_data_qps());
  if (card.message_qp) ToProto(*card.message_qp, out->mutable_message_qp());
}

Result<vqp::BusinessCard> FromProto(const v1::BusinessCard& card) {
  vqp::BusinessCard out;
  out.version = card.version();
  out.vqp_id = card.vqp_id();
  out.epoch = card.epoch();
  switch (card.scheme()) {
    case v1::SCHEME_SPRAY:
      out.scheme = vqp::Scheme::kSpray;
      break;
    case v1::SCHEME_DQPLB:
      out.scheme = vqp::Scheme::kDqplb;
      break;
    default:
      return Status::InvalidArgument("card.scheme: unknown scheme " +
                                     std::to_string(card.scheme()));
  }
  out.fragment_size = card.fragment_size();
  out.qp_capacity = card.qp_capacity();
  out.max_virtual_wrs = card.max_virtual_wrs();
  out.control_endpoint = card.control_endpoint();
  out.incarnation = card.incarnation();
  out.agent_identity = card.agent_identity();
  if (card.link_secret().size() != out.link_secret.size()) {
    return Status::InvalidArgument(
        "card.link_secret: " + std::to_string(card.link_secret().size()) + " bytes, want " +
        std::to_string(out.link_secret.size()));
  }
  std::memcpy(out.link_secret.data(), card.link_secret().data(), out.link_secret.size());
  for (int i = 0; i < card.devices_size(); ++i) {
    const v1::DeviceCard& d = card.devices(i);
    if (d.gid().size() != 16) {
      return Status::InvalidArgument("card.devices[" + std::to_string(i) + "].gid: " +
                                     std::to_string(d.gid().size()) + " bytes, want 16");
    }
    if (d.lid() > 0xFFFF) {
      return Status::InvalidArgument("card.devices[" + std::to_string(i) + "].lid out of range");
    }
    vqp::DeviceCard dc;
    dc.name = d.name();
    std::memcpy(dc.gid.raw.data(), d.gid().data(), 16);
    dc.lid = static_cast<uint16_t>(d.lid());
    dc.control_rkey = d.control_rkey();
    out.devices.push_back(std::move(dc));
  }
  out.control_addr = card.control_addr();
  for (int i = 0; i < card.data_qps_size(); ++i) {
    auto q = FromProto(card.data_qps(i), "data_qps");
    if (!q.ok()) return q.status();
    out.data_qps.push_back(*q);
  }
  if (card.has_message_qp()) {
    auto q = FromProto(card.message_qp(), "message_qp");
    if (!q.ok()) return q.status();
    out.message_qp = *q;
  }
  Status s = out.Validate();
  if (!s.ok()) return s.WithContext("remote card");
  return out;
}

void ToProto(const engine::DeviceStatus& d, v1::Device* out) {
  out->set_name(d.name);
  out->set_provider(d.provider);
  out->set_gid(d.gid);
  switch (d.state) {
    case engine::DeviceState::kHealthy:
      out->set_state(v1::DEVICE_STATE_HEALTHY);
      break;
    case engine::DeviceState::kDrained:
      out->set_state(v1::DEVICE_STATE_DRAINED);
      break;
    case engine::DeviceState::kFaulted:
      out->set_state(v1::DEVICE_STATE_FAULTED);
      break;
  }
  out->set_port_active(d.port_active);
  out->set_active_mtu(d.mtu_bytes);
  uint32_t qps = 0;
  for (uint32_t n : d.qps_by_health) qps += n;
  out->set_qps(qps);
  out->set_dead_qps(d.qps_by_health[static_cast<size_t>(vqp::QpHealth::kDead)]);
  out->set_outstanding_wrs(d.outstanding_wrs);
  out->set_bytes_written(d.traffic.write_bytes);
  out->set_bytes_read(d.traffic.read_bytes);
}

void ToProto(const engine::VqpStatus& v, v1::VirtualQpInfo* out) {
  out->set_vqp_id(v.id);
  out->set_label(v.label);
  out->set_connected(v.connected);
  out->set_scheme(v.config.scheme == vqp::Scheme::kSpray ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB);
  out->set_num_qps(v.config.num_qps);
  out->set_fragment_size(v.config.fragment_size);
  ToProto(v.card, out->mutable_card());
  for (const engine::PhysicalQpStatus& q : v.qps) {
    v1::PhysicalQp* p = out->add_qps();
    p->set_index(q.index);
    p->set_device(q.device);
    p->set_qp_num(q.qp_num);
    p->set_message_qp(q.message_qp);
    p->set_health(ToProto(q.health));
    if (q.health == vqp::QpHealth::kDead) p->set_death(engine::OutcomeName(q.death));
    p->set_outstanding_wrs(q.outstanding_wrs);
    p->set_bytes_written(q.traffic.write_bytes);
    p->set_bytes_read(q.traffic.read_bytes);
    p->set_recovery(engine::RecoveryPhaseName(q.recovery));
    p->set_recovery_attempts(q.recovery_attempts);
    p->set_recoveries(q.recoveries);
    p->set_drain_rate_bytes_per_second(q.drain_rate);
  }
  out->set_healthy_data_qps(v.healthy_data_qps);
  out->set_state(engine::VqpStateName(v.state));
  out->set_failure(v.failure);
  out->set_pending_sends(v.pending_sends);
  out->set_pending_recvs(v.pending_recvs);
  out->set_failovers(v.failovers);
  out->set_qps_died(v.qps_died);
  out->set_notifications(v.notifications);
  out->set_epoch(v.epoch);
}

void ToProto(const engine::RemoteRegion& r, v1::RemoteRegion* out) {
  out->set_agent_id(r.agent_id);
  out->set_region_id(r.region_id);
  out->set_vqp_id(r.vqp_id);
  out->set_addr(r.addr);
  out->set_length(r.length);
  for (const auto& [device, rkey] : r.keys) {
    auto* k = out->add_keys();
    k->set_device(device);
    k->set_rkey(rkey);
  }
}

engine::RemoteRegion FromProto(const v1::RemoteRegion& r) {
  engine::RemoteRegion out;
  out.agent_id = r.agent_id();
  out.region_id = r.region_id();
  out.vqp_id = r.vqp_id();
  out.addr = r.addr();
  out.length = r.length();
  for (const auto& k : r.keys()) out.keys.emplace_back(k.device(), k.rkey());
  return out;
}

void ToProto(const engine::RegionStatus& r, v1::RegionInfo* out) {
  out->set_region_id(r.id);
  out->set_label(r.label);
  out->set_length(r.length);
  out->set_path(r.path);
  for (const engine::RemoteRegion& g : r.grants) ToProto(g, out->add_grants());
  out->set_in_flight(r.in_flight);
}

Result<engine::CreateVqpRequest> FromProto(const v1::CreateVirtualQpRequest& r) {
  engine::CreateVqpRequest out;
  vqp::VirtualQpConfig& c = out.config;
  switch (r.scheme()) {
    case v1::SCHEME_SPRAY:
      c.scheme = vqp::Scheme::kSpray;
      break;
    case v1::SCHEME_DQPLB:
      c.scheme = vqp::Scheme::kDqplb;
      break;
    default:
      return Status::InvalidArgument("scheme must be SCHEME_SPRAY or SCHEME_DQPLB");
  }
  c.num_qps = r.num_qps();
  if (r.fragment_size() != 0) c.fragment_size = r.fragment_size();
  if (r.qp_capacity() != 0) c.qp_capacity = r.qp_capacity();
  if (r.max_virtual_wrs() != 0) c.max_virtual_wrs = r.max_virtual_wrs();
  c.failover = !r.disable_failover();
  if (r.timeout() > 31) return Status::InvalidArgument("timeout must be a verbs code in [0, 31]");
  if (r.retry_cnt() > 7) return Status::InvalidArgument("retry_cnt must be in [0, 7]");
  if (r.timeout() != 0) c.timeout = static_cast<uint8_t>(r.timeout());
  if (r.retry_cnt() != 0) c.retry_cnt = static_cast<uint8_t>(r.retry_cnt());
  for (const std::string& d : r.devices()) out.devices.push_back(d);
  out.label = r.label();
  return out;
}

Result<engine::TransferRequest> FromProto(const v1::TransferOp& r) {
  engine::TransferRequest out;
  out.op_id = r.op_id();
  out.vqp_id = r.vqp_id();
  switch (r.op()) {
    case v1::OP_WRITE:
      out.op = engine::TransferOp::kWrite;
      break;
    case v1::OP_WRITE_WITH_IMM:
      out.op = engine::TransferOp::kWriteWithImm;
      break;
    case v1::OP_READ:
      out.op = engine::TransferOp::kRead;
      break;
    default:
      return Status::InvalidArgument("op must be OP_WRITE, OP_WRITE_WITH_IMM or OP_READ");
  }
  out.local_region = r.local_region_id();
  out.local_offset = r.local_offset();
  out.remote = FromProto(r.remote());
  out.remote_offset = r.remote_offset();
  out.length = r.length();
  out.imm = r.imm();
  out.timeout_ms = r.timeout_ms();
  return out;
}

void ToProto(const engine::TransferResult& r, v1::TransferCompletion* out) {
  out->set_op_id(r.op_id);
  const grpc::Status g = ToGrpc(r.status);
  out->set_code(static_cast<int32_t>(g.error_code()));
  out->set_message(g.error_message());
  if (r.posted) out->set_wc_status(engine::OutcomeName(r.wc_status));
  out->set_bytes(r.bytes);
  out->set_latency_ns(r.latency_ns);
}

void ToProto(const engine::Notification& n, v1::Notification* out) {
  out->set_vqp_id(n.vqp_id);
  out->set_seq(n.seq);
  out->set_imm(n.imm);
  out->set_byte_len(n.byte_len);
  out->set_wc_status(engine::OutcomeName(n.status));
}

void ToProto(const engine::EngineEvent& e, v1::Event* out) {
  out->set_seq(e.seq);
  out->set_time_unix_ns(e.time_unix_ns);
  out->set_kind(engine::EventKindName(e.kind));
  out->set_vqp_id(e.vqp_id);
  out->set_qp_index(e.qp_index);
  out->set_device(e.device);
  out->set_cause(e.cause);
}

}  // namespace braid::server
