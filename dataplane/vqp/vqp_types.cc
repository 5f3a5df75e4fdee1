#include "dataplane/vqp/vqp_types.h"

#include <string>

namespace braid::vqp {

const char* SchemeName(Scheme scheme) { return scheme == Scheme::kSpray ? "SPRAY" : "DQPLB"; }

const char* QpHealthName(QpHealth health) {
  switch (health) {
    case QpHealth::kHealthy: return "Healthy";
    case QpHealth::kDraining: return "Draining";
    case QpHealth::kDead: return "Dead";
    case QpHealth::kCooling: return "Cooling";
  }
  return "?";
}

common::Status ValidateConfig(const VirtualQpConfig& c) {
  using common::Status;
  if (c.num_qps == 0 || c.num_qps > kMaxDataQps) {
    return Status::InvalidArgument("num_qps must be in [1, 128], got " + std::to_string(c.num_qps));
  }
  if (c.fragment_size < kMinFragmentSize || c.fragment_size > kMaxFragmentSize) {
    return Status::InvalidArgument("fragment_size must be in [4 KiB, 1 GiB], got " +
                                   std::to_string(c.fragment_size));
  }
  if (c.qp_capacity < 2 || c.qp_capacity > 4096) {
    return Status::InvalidArgument("qp_capacity must be in [2, 4096], got " +
                                   std::to_string(c.qp_capacity));
  }
  if (c.max_virtual_wrs == 0 || c.max_virtual_wrs > 65536) {
    return Status::InvalidArgument("max_virtual_wrs must be in [1, 65536]");
  }
  if (c.max_keys == 0 || c.max_keys > 65536) {
    return Status::InvalidArgument("max_keys must be in [1, 65536]");
  }
  if (c.timeout > 31 || c.retry_cnt > 7 || c.rnr_retry > 7) {
    return Status::InvalidArgument("timeout ≤ 31, retry_cnt ≤ 7, rnr_retry ≤ 7");
  }
  if (c.retry_budget > 255) return Status::InvalidArgument("retry_budget must be ≤ 255");
  return Status::Ok();
}

}  // namespace braid::vqp
