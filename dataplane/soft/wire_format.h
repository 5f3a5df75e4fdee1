// The soft RC wire format for stream links (TCP). A connection between two soft NICs carries all
// their QP pairs: it is a sequence of segments (a 16-byte header, then a body), each for one QP
// pair; a QP pair's data segments, concatenated, are its frames: a fixed 64-byte frame header,
// little-endian, followed by `payload_len` bytes of payload. Versioned; specified in
// doc/soft_wire_format.md.
//
// Parsing never trusts its input: DecodeFrameHeader() checks magic, version, type, opcode, NAK
// code and lengths and returns a reason for every refusal; it never aborts or reads past `bytes`.
// Threading: pure functions.
#ifndef BRAID_DATAPLANE_SOFT_WIRE_FORMAT_H_
#define BRAID_DATAPLANE_SOFT_WIRE_FORMAT_H_

#include <array>
#include <cstdint>
#include <span>

#include "dataplane/soft/packet.h"
#include "dataplane/verbs/gid.h"

namespace braid::soft::wire {

inline constexpr uint32_t kFrameMagic = 0x44494142;  // "BAID" little-endian
// 2: challenge, and the hello's MAC; 3: one connection per pair of soft NICs, in segments.
inline constexpr uint16_t kVersion = 3;
inline constexpr size_t kFrameHeaderBytes = 64;
inline constexpr uint32_t kMaxPayload = 1u << 31;  // one message, as the soft QP's max_msg_sz

enum class DecodeError : uint8_t {
  kOk,
  kTruncated,  // fewer than kFrameHeaderBytes
  kBadMagic,
  kBadVersion,
  kBadType,
  kBadOpcode,
  kBadNak,
  kOversized,   // payload_len above kMaxPayload
  kBadLength,   // payload_len inconsistent with the message type
  kBadSegment,  // a segment header with an unknown type, reserved bits set or a wrong length
};
const char* DecodeErrorName(DecodeError error);

using FrameHeaderBytes = std::array<uint8_t, kFrameHeaderBytes>;

void EncodeFrameHeader(const PacketHeader& header, FrameHeaderBytes* out);
DecodeError DecodeFrameHeader(std::span<const uint8_t> bytes, PacketHeader* out);

// The first message of a connection, from the callee as soon as it accepts: a fresh random nonce
// the caller's hello must answer. 32 bytes.
struct Challenge {
  std::array<uint8_t, 24> nonce{};
};
inline constexpr size_t kChallengeBytes = 32;
using ChallengeBytes = std::array<uint8_t, kChallengeBytes>;
void EncodeChallenge(const Challenge& challenge, ChallengeBytes* out);
DecodeError DecodeChallenge(std::span<const uint8_t> bytes, Challenge* out);

// The caller's answer: who is calling whom, and a MAC proving it knows the connection's link key
// (HelloMac, link_auth.h). 96 bytes: 64 of fields, then the MAC.
struct Hello {
  verbs::Gid src_gid;
  uint32_t src_qpn = 0;
  uint32_t dst_qpn = 0;
  uint32_t dst_send_psn = 0;  // the PSN the caller expects the callee to start sending at
  uint64_t epoch = 0;         // bumped by the upper layer on every reconnect (0: none)
  std::array<uint8_t, 32> mac{};
};
inline constexpr size_t kHelloFieldBytes = 64;  // what the MAC covers (with the nonce)
inline constexpr size_t kHelloBytes = kHelloFieldBytes + 32;
using HelloBytes = std::array<uint8_t, kHelloBytes>;
void EncodeHello(const Hello& hello, HelloBytes* out);
DecodeError DecodeHello(std::span<const uint8_t> bytes, Hello* out);

// A segment: the unit a connection carries. kAttach (the caller's QP asks to join its peer; the
// body is its hello), kAttached (the callee's QP accepted), kDetach (the sender's QP is gone,
// broken, or refused the attach: the pair is over), kData (the next bytes of the sender's QP's
// frames, at most kMaxSegmentBytes, so that QPs sharing a connection take turns).
enum class SegmentType : uint8_t { kData = 1, kAttach = 2, kAttached = 3, kDetach = 4 };
enum class DetachReason : uint8_t { kClosed = 0, kRefused = 1, kBroken = 2 };
struct Segment {
  SegmentType type = SegmentType::kData;
  DetachReason reason = DetachReason::kClosed;  // kDetach only
  uint32_t dst_qpn = 0;                         // the receiver's QP
  uint32_t src_qpn = 0;                         // the sender's QP
  uint32_t length = 0;                          // body bytes that follow
};
inline constexpr size_t kSegmentHeaderBytes = 16;
inline constexpr uint32_t kMaxSegmentBytes = 128 << 10;
using SegmentHeaderBytes = std::array<uint8_t, kSegmentHeaderBytes>;
void EncodeSegmentHeader(const Segment& segment, SegmentHeaderBytes* out);
DecodeError DecodeSegmentHeader(std::span<const uint8_t> bytes, Segment* out);

}  // namespace braid::soft::wire

#endif  // BRAID_DATAPLANE_SOFT_WIRE_FORMAT_H_
