// VirtualQp: which physical QP takes the next piece (doc/vqp.md, "Scheduling").
//
// Fragments go to the healthy data QP with room whose device would drain its queue first: the
// device's outstanding bytes for this VQP times its measured drain rate (DrainRate), interleaving
// devices; within a device, the QP with the fewest bytes. SEND and atomics go to the message QP.
#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

bool VirtualQp::AnyHealthyFor(WrKind kind, int device) const {
  if (kind == WrKind::kMessage) {
    return qps_[static_cast<size_t>(message_qp())].health == QpHealth::kHealthy;
  }
  if (device < 0) return healthy_data_qps_ > 0;
  for (uint32_t i = 0; i < config_.num_qps; ++i) {
    if (qps_[i].health == QpHealth::kHealthy && (device < 0 || qps_[i].device == device)) {
      return true;
    }
  }
  return false;
}

// The QP for the next piece of `length` bytes (on `device` when >= 0); ties go to the next QP in
// rotation, and QPs alternate devices, so equal load interleaves devices.
// Returns -1 when healthy QPs exist but none has room, -2 when none is healthy.
int VirtualQp::PickQp(WrKind kind, int device, uint64_t length) const {
  if (kind == WrKind::kMessage) {
    const PhysQp& q = qps_[static_cast<size_t>(message_qp())];
    if (q.health != QpHealth::kHealthy) return -2;
    return q.outstanding < config_.qp_capacity ? message_qp() : -1;
  }
  const uint32_t n = config_.num_qps;
  // The QPs of one device share its link, so the weight is the device's: its outstanding bytes
  // times its measured drain rate (an unknown rate counts as the fastest, none more than
  // DrainRate::kMaxSkew times the fastest, so a misjudged device still gets work and relearns; no
  // rate measured at all: plain bytes). Within a device, the QP with the fewest bytes.
  double fastest = 0;
  for (int d : devices_.used) {
    const double r = devices_.load[static_cast<size_t>(d)].rate.ns_per_byte();
    if (r > 0 && (fastest == 0 || r < fastest)) fastest = r;
  }
  if (fastest == 0) fastest = 1;
  int best = -1;
  double best_cost = 0;
  uint64_t best_bytes = 0;
  bool any = false;
  for (uint32_t k = 0, i = rr_; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
    const PhysQp& q = qps_[i];
    if (q.health != QpHealth::kHealthy || (device >= 0 && q.device != device)) continue;
    any = true;
    if (q.outstanding >= config_.qp_capacity) continue;
    const DeviceLoad& load = devices_.load[static_cast<size_t>(q.device)];
    const double cost =
        static_cast<double>(load.outstanding_bytes + length) * load.rate.Weight(fastest);
    if (best < 0 || cost < best_cost || (cost == best_cost && q.outstanding_bytes < best_bytes)) {
      best = static_cast<int>(i);
      best_cost = cost;
      best_bytes = q.outstanding_bytes;
    }
  }
  if (best >= 0) return best;
  return any ? -1 : -2;
}

}  // namespace braid::vqp
