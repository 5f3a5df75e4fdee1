// The send path's bookkeeping, shared by VirtualQp and its protocols: one SendEntry per virtual
// send WR (a ring slot), one Fragment per physical WR in flight (a fragment slot, the WrTag's
// slot), and what the peer's stream is owed.
//
// Threading: the owning VQP's (engine) thread. Plain data; no allocation.
#ifndef BRAID_DATAPLANE_VQP_SEND_ENTRY_H_
#define BRAID_DATAPLANE_VQP_SEND_ENTRY_H_

#include <infiniband/verbs.h>

#include <cstdint>

#include "dataplane/vqp/vqp_types.h"
#include "dataplane/vqp/wr_tag.h"

namespace braid::vqp {

// A virtual send WR's steps. kData and kTail are taken in posting order; the steps after kWaitData
// belong to the protocol (a SPRAY notify's fences and notify).
enum class SendStage : uint8_t {
  kData,
  kTail,
  kWaitData,
  kFence,
  kWaitFence,
  kNotify,
  kWaitNotify,
  kDone
};

struct SendEntry {
  VirtualSendWr wr;
  uint64_t next_offset = 0;
  uint32_t inflight = 0;
  uint32_t devices_used = 0;  // bit per device that carried data (fences)
  uint32_t notify_seq = 0;
  int notify_qp = -1;
  ibv_wc_status status = IBV_WC_SUCCESS;
  SendStage stage = SendStage::kData;
  bool aborted = false;
  bool stalled = false;
  bool op_fault = false;    // one of its pieces failed through its own fault: no more replays
  bool seq_taken = false;   // DQPLB: a fragment took a sequence number (the tail must follow)
  bool after_data = false;  // the protocol has steps once the data is acknowledged
  // SPRAY: a one-fragment message whose notify rides right behind its fragment on the same QP
  // (while set, `notify_qp` is that QP); cleared when it falls back to the acknowledged path.
  bool express = false;
};

struct Fragment {
  uint32_t send_slot = 0;
  uint16_t qp = 0;
  WrKind kind = WrKind::kFragment;
  uint8_t replays = 0;
  bool tail = false;    // DQPLB tail (SEND_WITH_IMM)
  bool stream = false;  // carries a sequence number of the peer's reorder window
  bool owed = false;    // a void paying an owed sequence number (no send entry)
  ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t seq = 0;  // DQPLB sequence number; SPRAY notify sequence number
  int fence_device = -1;
};

// A sequence number the peer's stream is waiting for, whose piece could not be sent because no
// data QP was left. It is paid (as a void) as soon as one is back, so the peer's reorder window
// never waits forever; the virtual WR it belonged to has already failed.
enum class OwedKind : uint8_t { kVoid, kVoidTail, kVoidNotify };
struct Owed {
  uint32_t seq = 0;
  OwedKind kind = OwedKind::kVoid;
};

// kNoQp: no QP could take the piece (or the one tried died on post).
enum class PostResult : uint8_t { kPosted, kBlocked, kNoQp };

// A SPRAY express message goes the acknowledged way from here: its notify follows the data's
// acknowledgement (and fences), on the QP chosen then.
inline void LeaveExpress(SendEntry& e) {
  e.express = false;
  e.notify_qp = -1;
  e.after_data = true;
}

// The first real error wins; a flush only stands when nothing better is known.
inline ibv_wc_status MergeStatus(ibv_wc_status current, ibv_wc_status incoming) {
  if (current == IBV_WC_SUCCESS) return incoming;
  if (current == IBV_WC_WR_FLUSH_ERR && incoming != IBV_WC_SUCCESS) return incoming;
  return current;
}

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_SEND_ENTRY_H_
