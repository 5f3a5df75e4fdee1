// The wire vocabulary between two VQPs: immediate-data bits and the 16-byte notify/tail payload.
// See doc/vqp.md ("Wire protocol between two VQPs").
#ifndef BRAID_DATAPLANE_VQP_VQP_WIRE_H_
#define BRAID_DATAPLANE_VQP_VQP_WIRE_H_

#include <cstdint>

namespace braid::vqp::wire {

inline constexpr uint32_t kSeqMask = 0xFFFFFF;  // DQPLB sequence number (host order before htonl)
inline constexpr uint32_t kTailBit = 1u << 31;  // DQPLB: this SEND_WITH_IMM ends a message
inline constexpr uint32_t kVoidBit = 1u << 30;  // DQPLB: a sequence number without its data
inline constexpr uint32_t kAbortedFlag = 1;     // Payload::flags: the sender failed the message

// A SPRAY notify or DQPLB tail, in the control region of both sides.
struct Payload {
  uint64_t bytes;  // the message's byte count
  uint32_t value;  // SPRAY: the notify sequence number; DQPLB: the user's immediate
  uint32_t flags;
};
static_assert(sizeof(Payload) == 16);

}  // namespace braid::vqp::wire

#endif  // BRAID_DATAPLANE_VQP_VQP_WIRE_H_
