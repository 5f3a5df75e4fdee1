// WrTag: the physical wr_id of every work request the virtual layer posts ("route by tag, never by
// opcode", doc/vqp.md).
//
// Layout: bits 63..56 magic 0xB7, 55..52 kind, 31..0 slot. Users' wr_ids are never posted to a
// physical QP, so a physical completion is routed by (device, qp_num) to its VQP and then by this
// tag and the status, never by the opcode (undefined on error completions).
#ifndef BRAID_DATAPLANE_VQP_WR_TAG_H_
#define BRAID_DATAPLANE_VQP_WR_TAG_H_

#include <cstdint>

namespace braid::vqp {

enum class WrKind : uint8_t {
  kFragment = 1,  // a data fragment (WRITE, WRITE_WITH_IMM under DQPLB, READ) or a DQPLB tail
  kNotify = 2,    // a SPRAY notify
  kFence = 3,     // a 1-byte READ that flushes a device's earlier writes before a notify
  kMessage = 4,   // a SEND or atomic on the message QP (or the single QP)
  kPoolRecv = 5,  // a pre-posted receive of a data QP's pool
  kUserRecv = 6,  // a receive the user posted (SEND buffer, or single-QP notification)
  kProbe = 7,     // a zero-length WRITE proving a reconnected QP's path before it takes work
};

struct WrTag {
  static constexpr uint64_t kMagic = 0xB7;

  static uint64_t Encode(WrKind kind, uint32_t slot) {
    return (kMagic << 56) | (uint64_t{static_cast<uint8_t>(kind)} << 52) | slot;
  }
  static bool Valid(uint64_t wr_id) { return (wr_id >> 56) == kMagic; }
  static WrKind Kind(uint64_t wr_id) { return static_cast<WrKind>((wr_id >> 52) & 0xF); }
  static uint32_t Slot(uint64_t wr_id) { return static_cast<uint32_t>(wr_id); }
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_WR_TAG_H_
