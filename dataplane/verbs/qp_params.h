// Parameters of RC QP creation and of each state transition (RESET→INIT→RTR→RTS, →ERR, →RESET).
//
// These are plain values; providers translate them (the ibverbs provider into ibv_qp_attr + mask,
// see ibverbs_attr.h). Defaults follow common RDMA practice (NCCL_IB_TIMEOUT=20 is also common;
// 14 ≈ 67 ms per try is ours). Timer encodings are the verbs ones:
//   timeout:       local ACK timeout = 4.096 µs × 2^timeout; 0 means "wait forever".
//   retry_cnt:     transport retries after a timeout, 0..7.
//   rnr_retry:     retries after a receiver-not-ready NAK, 0..6; 7 means "retry forever".
//   min_rnr_timer: the responder's RNR back-off code, 0..31 (see ibv_modify_qp(3)).
#ifndef BRAID_DATAPLANE_VERBS_QP_PARAMS_H_
#define BRAID_DATAPLANE_VERBS_QP_PARAMS_H_

#include <infiniband/verbs.h>

#include <array>
#include <cstdint>

#include "dataplane/verbs/gid.h"

namespace braid::verbs {

class Cq;

enum class QpState : uint8_t { kReset, kInit, kRtr, kRts, kError };
const char* QpStateName(QpState state);

struct QpCaps {
  uint32_t max_send_wr = 256;
  uint32_t max_recv_wr = 256;
  uint32_t max_send_sge = 4;
  uint32_t max_recv_sge = 4;
  uint32_t max_inline_data = 256;
};

struct QpCreateParams {
  Cq* send_cq = nullptr;  // REQUIRED; must outlive the QP
  Cq* recv_cq = nullptr;  // REQUIRED; may equal send_cq
  QpCaps caps;
  bool sq_sig_all = false;  // when true every send WR completes as if IBV_SEND_SIGNALED
};

struct QpInitParams {
  uint8_t port_num = 1;
  uint16_t pkey_index = 0;
  // IBV_ACCESS_* the remote side may use through this QP.
  unsigned int access_flags =
      IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
};

// What one side must know of the other to connect (a subset of the business card).
struct RemoteQpAddress {
  Gid gid;           // RoCE / soft: required; IB: used only when routed globally
  uint16_t lid = 0;  // IB only
  uint32_t qp_num = 0;
  uint32_t psn = 0;  // the remote's send PSN = our expected receive PSN (24 bits)
};

// A secret shared by the two ends of a connection (QpRtrParams::link_key).
using LinkKey = std::array<uint8_t, 32>;

struct QpRtrParams {
  RemoteQpAddress remote;
  ibv_mtu path_mtu = IBV_MTU_4096;
  uint8_t min_rnr_timer = 12;  // 0.64 ms
  uint8_t max_dest_rd_atomic = 16;
  uint8_t sgid_index = 0;  // local GID index (RoCE / global routing)
  uint8_t traffic_class = 0;
  uint8_t hop_limit = 64;
  uint8_t service_level = 0;
  bool force_global_route = false;  // IB: route by GID even on a LID fabric
  // The connection epoch both ends agreed on out of band (the VQP's epoch, bumped on every
  // recovery). The soft TCP link sends it in its hello and refuses a caller whose epoch differs;
  // an HCA has no such field (fresh PSNs do that job there) and ibverbs ignores it.
  uint64_t epoch = 0;
  // The connection's link key, agreed out of band (the VQP derives it from both business cards'
  // secrets). The soft TCP link's caller proves it knows the key (an HMAC over the callee's
  // challenge) before it may attach to the QP; an HCA has no such field and ibverbs ignores it.
  LinkKey link_key{};
};

struct QpRtsParams {
  uint32_t sq_psn = 0;  // 24 bits; the remote's RTR `remote.psn` must equal this
  uint8_t timeout = 14;
  uint8_t retry_cnt = 7;
  uint8_t rnr_retry = 7;
  uint8_t max_rd_atomic = 16;
};

// Nanoseconds of a local ACK timeout code (0 → 0 meaning infinite).
inline uint64_t AckTimeoutNs(uint8_t timeout) {
  if (timeout == 0) return 0;
  return 4096ull << (timeout > 31 ? 31 : timeout);  // 4.096 µs × 2^timeout
}

// Nanoseconds of an RNR timer code, per the table in ibv_modify_qp(3) (code 0 = 655.36 ms).
uint64_t RnrTimerNs(uint8_t code);

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_QP_PARAMS_H_
