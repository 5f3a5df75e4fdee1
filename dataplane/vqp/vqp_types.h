// Vocabulary of the virtual layer: configuration, virtual work requests and completions.
//
// A virtual QP (VQP) is N physical RC data QPs, possibly on several devices, that act as one QP.
// Lengths are 64-bit; `fragment_size` is validated ([4 KiB, 1 GiB], default
// 512 KiB). Completion outcomes stay ibv_wc_status.
#ifndef BRAID_DATAPLANE_VQP_VQP_TYPES_H_
#define BRAID_DATAPLANE_VQP_VQP_TYPES_H_

#include <infiniband/verbs.h>

#include <cstdint>

#include "dataplane/common/status.h"

namespace braid::vqp {

enum class Scheme : uint8_t {
  kSpray,  // fragments are plain writes; a notify follows once all are acknowledged
  kDqplb,  // every write-with-imm fragment carries a sequence number; the receiver reorders
};
const char* SchemeName(Scheme scheme);

// Health of one physical QP. Healthy → Dead on its first error completion; an operator may
// drain a device (Healthy → Draining: in-flight work finishes, no new work) and re-admit it. A QP
// that stalls with work outstanding, or keeps dying, cools down (Cooling: no new work) and is
// re-admitted after a probe once its cooldown, which doubles with every strike, has passed.
enum class QpHealth : uint8_t { kHealthy, kDraining, kDead, kCooling };
inline constexpr int kNumQpHealths = 4;
const char* QpHealthName(QpHealth health);

inline constexpr uint64_t kMinFragmentSize = 4096;
inline constexpr uint64_t kMaxFragmentSize = 1ull << 30;
inline constexpr uint64_t kDefaultFragmentSize = 512 * 1024;
inline constexpr uint32_t kMaxDataQps = 128;
inline constexpr uint32_t kMaxDevices = 32;

// An error caused by the operation itself (a bad key, range or request), not by the path: it fails
// that operation alone and is never replayed on another QP, where it would only fail again and
// take that QP down too. The QP it hit still goes to error (RC semantics) and is recovered, but it
// is no strike against the path (cooldown).
inline bool IsOperationFault(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
    case IBV_WC_MW_BIND_ERR:
      return true;
    default:
      return false;
  }
}

struct VirtualQpConfig {
  Scheme scheme = Scheme::kSpray;
  uint32_t num_qps = 4;                           // data QPs, [1, 128]
  uint64_t fragment_size = kDefaultFragmentSize;  // [4 KiB, 1 GiB]
  uint32_t qp_capacity = 128;                     // outstanding WRs per physical QP, [2, 4096];
                                                  // also the receive pool per data QP
  uint32_t max_virtual_wrs = 1024;                // outstanding virtual WRs per direction,
                                                  // [1, 65536]
  bool failover = true;  // re-post idempotent fragments of a dead QP on a healthy one (idempotent
                         // pieces fail over)
  uint32_t retry_budget = 4;  // re-posts per fragment
  uint32_t max_keys = 64;     // local and remote key-table entries
  // Physical QP timers (verbs encodings, see qp_params.h).
  uint8_t timeout = 14;
  uint8_t retry_cnt = 7;
  uint8_t rnr_retry = 7;
  // Cooldown of a data QP that stalls (work outstanding, no completion for the longer of
  // `stall_ms` and 32 fragments' time at its device's measured rate: the link completed
  // nothing for the VQP) or dies: it takes no new work for
  // `cooldown_ms`, doubled with every further strike (at most `cooldown_cap_ms`); strikes are
  // forgiven after 10 s without one. The last healthy data QP is never cooled.
  uint32_t stall_ms = 100;
  uint32_t cooldown_ms = 100;
  uint32_t cooldown_cap_ms = 5000;
  // The clock of the scheduler's drain rates (nanoseconds); null = common::MonotonicNs. Tests
  // pass a fake one.
  uint64_t (*clock_ns)() = nullptr;
};
common::Status ValidateConfig(const VirtualQpConfig& config);

struct VirtualSendWr {
  uint64_t wr_id = 0;
  ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;  // WRITE, WRITE_WITH_IMM, READ, SEND,
                                             // SEND_WITH_IMM, ATOMIC_FETCH_AND_ADD, CMP_AND_SWP
  unsigned int send_flags = IBV_SEND_SIGNALED;
  uint64_t local_addr = 0;
  uint64_t length = 0;
  uint32_t local_keys = 0;  // handle from VirtualQp::AddLocalKeys
  uint64_t remote_addr = 0;
  uint32_t remote_keys = 0;  // handle from VirtualQp::AddRemoteKeys
  uint32_t imm_data = 0;     // network byte order, as in ibv_send_wr
  uint64_t compare_add = 0;
  uint64_t swap = 0;
};

// A receive. Length 0: the notification of one incoming write-with-imm message. Length > 0: the
// buffer of one incoming SEND.
struct VirtualRecvWr {
  uint64_t wr_id = 0;
  uint64_t local_addr = 0;
  uint64_t length = 0;
  uint32_t local_keys = 0;
};

struct VirtualWc {
  uint64_t wr_id = 0;
  ibv_wc_status status = IBV_WC_SUCCESS;
  ibv_wc_opcode opcode = IBV_WC_RDMA_WRITE;  // from the virtual WR, valid on errors too
  uint32_t vqp_num = 0;
  uint32_t imm_data = 0;  // receive side: the sender's immediate (network order)
  uint64_t byte_len = 0;  // receive side: the message's byte count; send side: its length
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_VQP_TYPES_H_
