// The engine thread: its devices (health, drain, fault injection), snapshots, and the names of
// device states and outcomes.
#include <algorithm>
#include <string>

#include "dataplane/common/quote.h"
#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

const char* DeviceStateName(DeviceState state) {
  switch (state) {
    case DeviceState::kHealthy:
      return "healthy";
    case DeviceState::kDrained:
      return "drained";
    case DeviceState::kFaulted:
      return "faulted";
  }
  return "unknown";
}

const char* TransferOpName(TransferOp op) {
  switch (op) {
    case TransferOp::kWrite:
      return "write";
    case TransferOp::kWriteWithImm:
      return "write_with_imm";
    case TransferOp::kRead:
      return "read";
  }
  return "unknown";
}

void Engine::PublishDeviceHealth() {
  uint32_t healthy = 0;
  for (const auto& d : devices_) healthy += d->state == DeviceState::kHealthy ? 1 : 0;
  published_.healthy_devices.store(healthy, std::memory_order_relaxed);
}

Result<size_t> Engine::FindDevice(const std::string& name) const {
  for (size_t i = 0; i < devices_.size(); ++i) {
    if (devices_[i]->device->info().name == name) return i;
  }
  return Status::NotFound("no device named " + common::Quote(name) + " on agent " +
                          options_.agent_id + "; ListDevices shows the agent's devices");
}

DeviceStatus Engine::DescribeDevice(size_t index) const {
  const DeviceSlot& slot = *devices_[index];
  const verbs::DeviceInfo& info = slot.device->info();
  DeviceStatus s;
  s.name = info.name;
  s.provider = info.provider;
  s.gid = info.gid.ToString();
  s.state = slot.state;
  s.port_active = slot.port_active;  // as last read (FollowPorts), not as opened
  s.state_when_port_up = slot.port_active ? slot.state : slot.state_before_port_down;
  s.mtu_bytes = 128u << static_cast<int>(info.active_mtu);
  s.traffic = slot.retired;
  for (const auto& [id, v] : vqps_) {
    const vqp::VirtualQp& q = *v->vqp;
    for (int i = 0; i < q.num_physical_qps(); ++i) {
      if (q.physical_device(i) != static_cast<int>(index)) continue;
      ++s.qps_by_health[static_cast<size_t>(q.health(i))];
      s.outstanding_wrs += q.outstanding(i);
      const vqp::QpTraffic& t = q.traffic(i);
      s.traffic.write_bytes += t.write_bytes;
      s.traffic.write_fragments += t.write_fragments;
      s.traffic.read_bytes += t.read_bytes;
      s.traffic.read_fragments += t.read_fragments;
    }
  }
  return s;
}

EngineSnapshot::Vqp Engine::SnapshotVqp(const VqpSlot& v) const {
  EngineSnapshot::Vqp out;
  out.id = v.id;
  out.label = v.label;
  out.pending_sends = v.vqp->pending_sends();
  out.pending_recvs = v.vqp->pending_recvs();
  out.backlog = static_cast<uint32_t>(v.backlog.size());
  out.state = v.state;
  out.qps = DescribeVqp(v).qps;
  out.failovers = v.vqp->counters().failovers;
  out.qps_died = v.vqp->counters().qps_died;
  return out;
}

EngineSnapshot Engine::TakeSnapshot() const {
  EngineSnapshot s = stats_;
  s.command_queue_full = room_.full_count.load(std::memory_order_relaxed);
  s.sessions = static_cast<uint32_t>(sessions_->by_id.size());
  for (size_t i = 0; i < devices_.size(); ++i) s.devices.push_back(DescribeDevice(i));
  s.transfers_in_flight = transfers_.in_flight;
  s.transfers_refused = !transfers_.stopped.empty();
  s.regions = static_cast<uint32_t>(regions_.by_id.size());
  for (const auto& [id, r] : regions_.by_id) s.registered_bytes += r->shm->length();
  options_.provider->ReadCounters(&s.provider_counters);
  return s;
}

// A port that goes down faults its device (no new VQP uses it; the QPs there die of their own
// retries and are recovered elsewhere or later); one that comes back returns the device to what
// it was, healthy, drained or faulted by injection, or to what the operator or an injection made
// it meanwhile (SetDeviceDrained, DoInjectFault). Only changes act, so a fault injected on a
// device whose port stays up is left alone. `ports`: PortWatcher's readings, in devices_' order.
void Engine::FollowPorts(const PortWatcher::Readings& ports) {
  for (size_t i = 0; i < devices_.size() && i < ports.size(); ++i) {
    DeviceSlot& slot = *devices_[i];
    // A port that cannot be read (a device gone fatal or removed) carries nothing either.
    const Result<bool>& port = ports[i];
    const bool active = port.ok() && *port;
    if (active == slot.port_active) continue;
    slot.port_active = active;
    const std::string& name = slot.device->info().name;
    if (!slot.port_active) {
      slot.state_before_port_down = slot.state;
      if (slot.state != DeviceState::kFaulted) {
        slot.state = DeviceState::kFaulted;
        Emit(EventKind::kDeviceFaulted, 0, -1, name,
             port.ok() ? "port down: its link is lost"
                       : "port cannot be read, taken as down: " + port.status().ToString());
      }
    } else if (slot.state == DeviceState::kFaulted &&
               slot.state_before_port_down != DeviceState::kFaulted) {
      slot.state = slot.state_before_port_down;  // healthy or drained (a fault injected stays)
      Emit(EventKind::kDeviceHealthy, 0, -1, name, "port active again: its link is back");
    }
    PublishDeviceHealth();
  }
}

Result<DeviceStatus> Engine::SetDeviceDrained(const std::string& name, bool drained) {
  BRAID_ASSIGN_OR_RETURN(size_t index, FindDevice(name));
  DeviceSlot& slot = *devices_[index];
  // Faulted because its port is down, the device takes the operator's word for when the link is
  // back (a flapping NIC drained during an outage stays drained); an injected fault is refused.
  // (While its port is down a device is faulted; FollowPorts keeps it so.)
  const bool port_down = !slot.port_active && slot.state_before_port_down != DeviceState::kFaulted;
  if (slot.state == DeviceState::kFaulted && !port_down) {
    return Status::FailedPrecondition("device " + common::Quote(name) +
                                      " is faulted by an injected fault; clear it (InjectFault "
                                      "DEVICE_UP) before draining or re-admitting the device");
  }
  DeviceState& kept = port_down ? slot.state_before_port_down : slot.state;
  const DeviceState before = kept;
  kept = drained ? DeviceState::kDrained : DeviceState::kHealthy;
  PublishDeviceHealth();
  if (kept != before) {
    std::string cause = drained ? "drained by the operator" : "re-admitted by the operator";
    if (port_down) cause += " (its link is down: this holds once the link is back)";
    Emit(drained ? EventKind::kDeviceDrained : EventKind::kDeviceHealthy, 0, -1, name, cause);
  }
  for (auto& [id, v] : vqps_) {
    // kNotFound: the VQP has no QP there in the state to change; nothing to do.
    Status s = drained ? v->vqp->DrainDevice(static_cast<int>(index))
                       : v->vqp->UndrainDevice(static_cast<int>(index));
    (void)s;
    Attend(*v);
  }
  return DescribeDevice(index);
}

Status Engine::DoInjectFault(const FaultRequest& request) {
  switch (request.kind) {
    case FaultKind::kStallEngine:
      if (request.duration_ms == 0 || request.duration_ms > 600000) {
        return Status::InvalidArgument("stall duration_ms must be in [1, 600000]");
      }
      loop_.stall_until_ns = NowNs() + uint64_t{request.duration_ms} * 1000000;
      return Status::Ok();
    case FaultKind::kDeviceDown:
    case FaultKind::kDeviceUp: {
      BRAID_ASSIGN_OR_RETURN(size_t index, FindDevice(request.device));
      DeviceSlot& slot = *devices_[index];
      // What the device returns to once its port is back (FollowPorts) is set here too: a fault
      // injected while the port is down stays when it comes back, and one cleared then does not.
      if (request.kind == FaultKind::kDeviceUp) {
        slot.state_before_port_down = DeviceState::kHealthy;
        const DeviceState now = slot.port_active ? DeviceState::kHealthy : DeviceState::kFaulted;
        if (slot.state != now) {
          Emit(EventKind::kDeviceHealthy, 0, -1, request.device, "fault cleared");
        }
        slot.state = now;
        PublishDeviceHealth();
        return Status::Ok();
      }
      // The device's link goes down: every connected QP on it breaks.
      BRAID_RETURN_IF_ERROR(slot.device->InjectLinkDown());
      for (auto& [id, v] : vqps_) Attend(*v);
      slot.state = DeviceState::kFaulted;
      slot.state_before_port_down = DeviceState::kFaulted;
      PublishDeviceHealth();
      Emit(EventKind::kDeviceFaulted, 0, -1, request.device, "injected fault: device down");
      return Status::Ok();
    }
    case FaultKind::kBreakQp: {
      BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, FindVqp(request.vqp_id));
      if (request.qp_index >= static_cast<uint32_t>(slot->vqp->num_physical_qps())) {
        return Status::OutOfRange("VQP " + std::to_string(request.vqp_id) + " has " +
                                  std::to_string(slot->vqp->num_physical_qps()) + " physical QPs");
      }
      Attend(*slot);
      return slot->vqp->physical_qp(static_cast<int>(request.qp_index)).InjectBreak();
    }
  }
  return Status::InvalidArgument("unknown fault kind");
}

}  // namespace braid::engine
