#include "server/proto_mapping.h"

#include <string>

namespace braid::server {

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

v1::DeviceState ToProto(engine::DeviceState state) {
  switch (state) {
    case engine::DeviceState::kHealthy:
      return v1::DEVICE_STATE_HEALTHY;
    case engine::DeviceState::kDrained:
      return v1::DEVICE_STATE_DRAINED;
    case engine::DeviceState::kFaulted:
      return v1::DEVICE_STATE_FAULTED;
  }
  return v1::DEVICE_STATE_UNSPECIFIED;
}

}  // namespace

void ToProto(const engine::DeviceStatus& d, v1::Device* out) {
  out->set_name(d.name);
  out->set_provider(d.provider);
  out->set_gid(d.gid);
  out->set_state(ToProto(d.state));
  out->set_state_when_port_up(ToProto(d.state_when_port_up));
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

void ToProto(const engine::RegionStatus& r, v1::RegionInfo* out) {
  out->set_region_id(r.id);
  out->set_label(r.label);
  out->set_length(r.length);
  out->set_path(r.path);
  for (const engine::RemoteRegion& g : r.grants) ToProto(g, out->add_grants());
  out->set_in_flight(r.in_flight);
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
