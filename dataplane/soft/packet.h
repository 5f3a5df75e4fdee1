// Packet: one RC transport message between two soft QPs.
//
// The soft RC protocol is message-based: one request per send WR (one PSN per message, 24 bits),
// answered by a cumulative ACK, a NAK, a READ response or an ATOMIC response. PacketHeader is the
// in-memory form of a message's header; the byte-level encoding for stream links is wire_format.h.
#ifndef BRAID_DATAPLANE_SOFT_PACKET_H_
#define BRAID_DATAPLANE_SOFT_PACKET_H_

#include <infiniband/verbs.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <vector>

namespace braid::soft {

enum class PacketType : uint8_t { kRequest, kAck, kNak, kReadResponse, kAtomicResponse };

// Why a responder refused a request (the AETH NAK codes of the IB spec).
enum class NakCode : uint8_t {
  kRnr,                // no receive WQE: retry after the RNR timer
  kRemoteAccess,       // rkey, bounds or access-flag violation → IBV_WC_REM_ACCESS_ERR
  kInvalidRequest,     // malformed request or receive too small → IBV_WC_REM_INV_REQ_ERR
  kRemoteOperational,  // responder-side failure (bad receive lkey) → IBV_WC_REM_OP_ERR
};

// Everything of a message but its payload. `payload_len` bytes of payload follow it on the wire
// (WRITE/SEND data, READ response data); `length` is the operation's length (for a READ request,
// the bytes asked for, with no payload).
struct PacketHeader {
  PacketType type = PacketType::kRequest;
  uint32_t src_qpn = 0;
  uint32_t dst_qpn = 0;
  uint32_t psn = 0;  // request: its PSN; response: the PSN it answers
  // Requests.
  ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
  uint32_t length = 0;
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  uint32_t imm_data = 0;  // network byte order, verbatim from the WR
  uint64_t compare_add = 0;
  uint64_t swap = 0;
  // NAK.
  NakCode nak = NakCode::kRnr;
  uint8_t rnr_timer = 0;  // the responder's min_rnr_timer code
  // ATOMIC response: the value found at the target before the operation.
  uint64_t atomic_orig = 0;
  uint32_t payload_len = 0;
};

// A stored message (the in-memory link keeps its copies in these).
struct Packet {
  PacketHeader header;
  std::vector<uint8_t> payload;
};

// Where an inbound message's payload goes, decided by the receiving QP after its checks: up to
// `count` byte ranges, filled in order. Bytes beyond them (or all of them, when count is 0) are
// discarded by the link.
struct Placement {
  static constexpr uint32_t kMaxRanges = 17;
  std::array<iovec, kMaxRanges> iov;  // only the first `count` are meaningful (left uninitialized)
  uint32_t count = 0;
};

// 24-bit PSN arithmetic.
constexpr uint32_t kPsnMask = 0xFFFFFF;
inline uint32_t PsnNext(uint32_t psn) { return (psn + 1) & kPsnMask; }
// Signed distance a - b on the 24-bit ring, in [-2^23, 2^23).
inline int32_t PsnDiff(uint32_t a, uint32_t b) {
  return static_cast<int32_t>(((a - b) & kPsnMask) << 8) >> 8;
}

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_PACKET_H_
