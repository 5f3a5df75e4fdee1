// The engine's event stream: state changes of physical QPs, VQPs and devices (WatchEvents).
//
// Device and VQP events are emitted where the change happens. Physical QP health lives in the
// VQP, which has no clock of its own; the engine turns the changes it sees on its recovery tick
// (every 10 ms) into events, in the order died → recovering → recovered for one QP.
#include <chrono>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Status;

const char* VqpStateName(VqpState state) {
  switch (state) {
    case VqpState::kCreated:
      return "created";
    case VqpState::kConnected:
      return "connected";
    case VqpState::kFailed:
      return "failed";
  }
  return "unknown";
}

const char* EventKindName(EventKind kind) {
  switch (kind) {
    case EventKind::kQpDied:
      return "qp_died";
    case EventKind::kQpCoolingDown:
      return "qp_cooling_down";
    case EventKind::kQpRecovering:
      return "qp_recovering";
    case EventKind::kQpRecovered:
      return "qp_recovered";
    case EventKind::kQpReadmitted:
      return "qp_readmitted";
    case EventKind::kQpDraining:
      return "qp_draining";
    case EventKind::kVqpConnected:
      return "vqp_connected";
    case EventKind::kVqpFailed:
      return "vqp_failed";
    case EventKind::kVqpDestroyed:
      return "vqp_destroyed";
    case EventKind::kDeviceDrained:
      return "device_drained";
    case EventKind::kDeviceFaulted:
      return "device_faulted";
    case EventKind::kDeviceHealthy:
      return "device_healthy";
    case EventKind::kAccessRevoked:
      return "access_revoked";
  }
  return "unknown";
}

Status Engine::WatchEvents(std::shared_ptr<EventWatcher> watcher) {
  return CallStatus([w = std::move(watcher)](Engine& e) -> Status {
    e.events_.watchers.push_back(w);
    return Status::Ok();
  });
}

void Engine::PruneWatchers(uint64_t vqp_id) {
  (void)commands_.Push([vqp_id](Engine& e) {
    auto closed = [](const auto& w) { return w->closed.load(std::memory_order_relaxed); };
    if (vqp_id == 0) {
      std::erase_if(e.events_.watchers, closed);
      return;
    }
    auto it = e.vqps_.find(vqp_id);
    if (it != e.vqps_.end()) std::erase_if(it->second->watchers, closed);
  });
}

void Engine::Emit(EventKind kind, uint64_t vqp_id, int32_t qp_index, std::string device,
                  std::string cause) {
  EngineEvent event;
  event.seq = ++events_.seq;
  event.time_unix_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  event.kind = kind;
  event.vqp_id = vqp_id;
  event.qp_index = qp_index;
  event.device = std::move(device);
  event.cause = std::move(cause);
  FanOut(events_.watchers, event);
}

void Engine::TrackQpHealth(VqpSlot& slot) {
  const vqp::VirtualQp& q = *slot.vqp;
  for (uint32_t i = 0; i < slot.recovery.size(); ++i) {
    QpRecovery& r = slot.recovery[i];
    const int index = static_cast<int>(i);
    const vqp::QpHealth now = q.health(index);
    if (now == r.reported) continue;
    // A reconnected QP waits for its probe in Draining (or Cooling): not yet back in service.
    if (q.probing(index)) continue;
    const std::string device = cq_->device(q.physical_device(index)).info().name;
    switch (now) {
      case vqp::QpHealth::kDead:
        Emit(EventKind::kQpDied, slot.id, index, device,
             q.death(index) != IBV_WC_SUCCESS ? OutcomeName(q.death(index))
                                              : "reset (recovery or VQP failure)");
        break;
      case vqp::QpHealth::kCooling:
        Emit(EventKind::kQpCoolingDown, slot.id, index, device, q.cooling_cause(index));
        break;
      case vqp::QpHealth::kDraining:
        Emit(EventKind::kQpDraining, slot.id, index, device, "its device is drained");
        break;
      case vqp::QpHealth::kHealthy:
        Emit(
            r.reported == vqp::QpHealth::kDead ? EventKind::kQpRecovered : EventKind::kQpReadmitted,
            slot.id, index, device,
            r.reported == vqp::QpHealth::kDead ? "reconnected with the peer; probe answered"
                                               : "back in service");
        break;
    }
    r.reported = now;
  }
}

}  // namespace braid::engine
