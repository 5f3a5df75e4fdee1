// The small VQP configuration the virtual-layer tests share: 16 KiB fragments, 16 WRs per QP,
// 64 virtual WRs, short (virtual) timeouts.
#ifndef BRAID_TESTS_TESTUTIL_SMALL_VQP_CONFIG_H_
#define BRAID_TESTS_TESTUTIL_SMALL_VQP_CONFIG_H_

#include "dataplane/vqp/vqp_types.h"

namespace braid::testing {

inline vqp::VirtualQpConfig SmallVqpConfig(vqp::Scheme scheme, uint32_t qps, bool failover = true) {
  vqp::VirtualQpConfig c;
  c.scheme = scheme;
  c.num_qps = qps;
  c.fragment_size = 16384;
  c.qp_capacity = 16;
  c.max_virtual_wrs = 64;
  c.failover = failover;
  c.timeout = 4;
  c.retry_cnt = 1;
  return c;
}

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_SMALL_VQP_CONFIG_H_
