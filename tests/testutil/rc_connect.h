// Connects two RC QPs with each other (RESET→INIT→RTR→RTS on both), for tests and benchmarks.
#ifndef BRAID_TESTS_TESTUTIL_RC_CONNECT_H_
#define BRAID_TESTS_TESTUTIL_RC_CONNECT_H_

#include "dataplane/verbs/provider.h"

namespace braid::testing {

struct RcOptions {
  uint8_t timeout = 14;
  uint8_t retry_cnt = 7;
  uint8_t rnr_retry = 7;
  uint8_t min_rnr_timer = 1;
  unsigned int access = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                        IBV_ACCESS_REMOTE_ATOMIC;
  // PSNs near the top of the 24-bit range, so traffic crosses the wrap.
  uint32_t psn_a = 0xFFFFF0;
  uint32_t psn_b = 0xFFFFFA;
};

common::Status ConnectRc(verbs::Qp& a, const verbs::DeviceInfo& device_a, verbs::Qp& b,
                         const verbs::DeviceInfo& device_b, const RcOptions& options = {});

// Posts one signaled RDMA WRITE / WRITE_WITH_IMM / READ of `length` bytes (no SGE when 0).
common::Status PostRdma(verbs::Qp& qp, ibv_wr_opcode opcode, uint64_t local_addr, uint32_t length,
                        uint32_t lkey, uint64_t remote_addr, uint32_t rkey, uint64_t wr_id,
                        uint32_t imm = 0);

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_RC_CONNECT_H_
