#include "dataplane/soft/wire_format.h"

#include <cstring>

namespace braid::soft::wire {

namespace {

// Little-endian field access at fixed offsets (the layout table is in doc/soft_wire_format.md).
template <typename T>
void Put(uint8_t* base, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    base[offset + i] = static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i));
  }
}

template <typename T>
T Get(const uint8_t* base, size_t offset) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t{base[offset + i]} << (8 * i);
  return static_cast<T>(v);
}

constexpr uint16_t kKindFrame = 1;
constexpr uint16_t kKindHello = 2;
constexpr uint16_t kKindChallenge = 3;

bool ValidOpcode(uint8_t op) {
  switch (op) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_RDMA_READ:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      return true;
    default:
      return false;
  }
}

DecodeError CheckPrologue(const uint8_t* b, uint16_t kind) {
  if (Get<uint32_t>(b, 0) != kFrameMagic) return DecodeError::kBadMagic;
  if (Get<uint16_t>(b, 4) != kVersion) return DecodeError::kBadVersion;
  if (Get<uint16_t>(b, 6) != kind) return DecodeError::kBadType;
  return DecodeError::kOk;
}

}  // namespace

const char* DecodeErrorName(DecodeError e) {
  switch (e) {
    case DecodeError::kOk:
      return "ok";
    case DecodeError::kTruncated:
      return "truncated";
    case DecodeError::kBadMagic:
      return "bad magic";
    case DecodeError::kBadVersion:
      return "unsupported version";
    case DecodeError::kBadType:
      return "bad type";
    case DecodeError::kBadOpcode:
      return "bad opcode";
    case DecodeError::kBadNak:
      return "bad NAK code";
    case DecodeError::kOversized:
      return "oversized payload";
    case DecodeError::kBadLength:
      return "payload length does not fit the message";
    case DecodeError::kBadSegment:
      return "bad segment header";
  }
  return "?";
}

// Layout (offsets in bytes): 0 magic u32 | 4 version u16 | 6 kind u16 | 8 type u8 | 9 opcode u8 |
// 10 nak u8 | 11 rnr_timer u8 | 12 src_qpn u32 | 16 dst_qpn u32 | 20 psn u32 | 24 length u32 |
// 28 payload_len u32 | 32 remote_addr u64 | 40 rkey u32 | 44 imm_data u32 (network order bytes as
// received) | 48 compare_add or atomic_orig u64 | 56 swap u64.
void EncodeFrameHeader(const PacketHeader& h, FrameHeaderBytes* out) {
  uint8_t* b = out->data();
  Put<uint32_t>(b, 0, kFrameMagic);
  Put<uint16_t>(b, 4, kVersion);
  Put<uint16_t>(b, 6, kKindFrame);
  Put<uint8_t>(b, 8, static_cast<uint8_t>(h.type));
  Put<uint8_t>(b, 9, static_cast<uint8_t>(h.opcode));
  Put<uint8_t>(b, 10, static_cast<uint8_t>(h.nak));
  Put<uint8_t>(b, 11, h.rnr_timer);
  Put<uint32_t>(b, 12, h.src_qpn);
  Put<uint32_t>(b, 16, h.dst_qpn);
  Put<uint32_t>(b, 20, h.psn);
  Put<uint32_t>(b, 24, h.length);
  Put<uint32_t>(b, 28, h.payload_len);
  Put<uint64_t>(b, 32, h.remote_addr);
  Put<uint32_t>(b, 40, h.rkey);
  std::memcpy(b + 44, &h.imm_data, 4);  // already in network order: carried verbatim
  Put<uint64_t>(b, 48, h.type == PacketType::kAtomicResponse ? h.atomic_orig : h.compare_add);
  Put<uint64_t>(b, 56, h.swap);
}

DecodeError DecodeFrameHeader(std::span<const uint8_t> bytes, PacketHeader* h) {
  if (bytes.size() < kFrameHeaderBytes) return DecodeError::kTruncated;
  const uint8_t* b = bytes.data();
  if (DecodeError e = CheckPrologue(b, kKindFrame); e != DecodeError::kOk) return e;
  const uint8_t type = Get<uint8_t>(b, 8);
  if (type > static_cast<uint8_t>(PacketType::kAtomicResponse)) return DecodeError::kBadType;
  const uint8_t opcode = Get<uint8_t>(b, 9);
  const uint8_t nak = Get<uint8_t>(b, 10);
  if (nak > static_cast<uint8_t>(NakCode::kRemoteOperational)) return DecodeError::kBadNak;
  PacketHeader out;
  out.type = static_cast<PacketType>(type);
  if (out.type == PacketType::kRequest && !ValidOpcode(opcode)) return DecodeError::kBadOpcode;
  out.opcode = ValidOpcode(opcode) ? static_cast<ibv_wr_opcode>(opcode) : IBV_WR_RDMA_WRITE;
  out.nak = static_cast<NakCode>(nak);
  out.rnr_timer = Get<uint8_t>(b, 11);
  out.src_qpn = Get<uint32_t>(b, 12);
  out.dst_qpn = Get<uint32_t>(b, 16);
  out.psn = Get<uint32_t>(b, 20);
  out.length = Get<uint32_t>(b, 24);
  out.payload_len = Get<uint32_t>(b, 28);
  out.remote_addr = Get<uint64_t>(b, 32);
  out.rkey = Get<uint32_t>(b, 40);
  std::memcpy(&out.imm_data, b + 44, 4);
  const uint64_t word = Get<uint64_t>(b, 48);
  if (out.type == PacketType::kAtomicResponse) {
    out.atomic_orig = word;
  } else {
    out.compare_add = word;
  }
  out.swap = Get<uint64_t>(b, 56);
  if (out.payload_len > kMaxPayload) return DecodeError::kOversized;
  // Only requests that carry data and READ responses have a payload.
  const bool may_carry =
      out.type == PacketType::kReadResponse ||
      (out.type == PacketType::kRequest &&
       (out.opcode == IBV_WR_RDMA_WRITE || out.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ||
        out.opcode == IBV_WR_SEND || out.opcode == IBV_WR_SEND_WITH_IMM));
  if (!may_carry && out.payload_len != 0) return DecodeError::kBadLength;
  if (out.psn > kPsnMask || out.src_qpn > kPsnMask || out.dst_qpn > kPsnMask) {
    return DecodeError::kBadLength;
  }
  *h = out;
  return DecodeError::kOk;
}

// Hello layout: 0 magic u32 | 4 version u16 | 6 kind u16 | 8 src_gid 16 bytes | 24 src_qpn u32 |
// 28 dst_qpn u32 | 32 dst_send_psn u32 | 36 reserved u32 | 40 epoch u64 | 48 reserved 16 bytes.
void EncodeHello(const Hello& hello, HelloBytes* out) {
  out->fill(0);
  uint8_t* b = out->data();
  Put<uint32_t>(b, 0, kFrameMagic);
  Put<uint16_t>(b, 4, kVersion);
  Put<uint16_t>(b, 6, kKindHello);
  std::memcpy(b + 8, hello.src_gid.raw.data(), 16);
  Put<uint32_t>(b, 24, hello.src_qpn);
  Put<uint32_t>(b, 28, hello.dst_qpn);
  Put<uint32_t>(b, 32, hello.dst_send_psn);
  Put<uint64_t>(b, 40, hello.epoch);
  std::memcpy(b + kHelloFieldBytes, hello.mac.data(), hello.mac.size());
}

void EncodeChallenge(const Challenge& challenge, ChallengeBytes* out) {
  out->fill(0);
  uint8_t* b = out->data();
  Put<uint32_t>(b, 0, kFrameMagic);
  Put<uint16_t>(b, 4, kVersion);
  Put<uint16_t>(b, 6, kKindChallenge);
  std::memcpy(b + 8, challenge.nonce.data(), challenge.nonce.size());
}

DecodeError DecodeChallenge(std::span<const uint8_t> bytes, Challenge* challenge) {
  if (bytes.size() < kChallengeBytes) return DecodeError::kTruncated;
  const uint8_t* b = bytes.data();
  if (DecodeError e = CheckPrologue(b, kKindChallenge); e != DecodeError::kOk) return e;
  std::memcpy(challenge->nonce.data(), b + 8, challenge->nonce.size());
  return DecodeError::kOk;
}

DecodeError DecodeHello(std::span<const uint8_t> bytes, Hello* hello) {
  if (bytes.size() < kHelloBytes) return DecodeError::kTruncated;
  const uint8_t* b = bytes.data();
  if (DecodeError e = CheckPrologue(b, kKindHello); e != DecodeError::kOk) return e;
  Hello out;
  std::memcpy(out.src_gid.raw.data(), b + 8, 16);
  out.src_qpn = Get<uint32_t>(b, 24);
  out.dst_qpn = Get<uint32_t>(b, 28);
  out.dst_send_psn = Get<uint32_t>(b, 32);
  out.epoch = Get<uint64_t>(b, 40);
  std::memcpy(out.mac.data(), b + kHelloFieldBytes, out.mac.size());
  if (out.src_qpn > kPsnMask || out.dst_qpn > kPsnMask || out.dst_send_psn > kPsnMask) {
    return DecodeError::kBadLength;
  }
  *hello = out;
  return DecodeError::kOk;
}

// Segment layout: 0 type u8 | 1 reason u8 | 2 reserved u16 | 4 dst_qpn u32 | 8 src_qpn u32 |
// 12 length u32.
void EncodeSegmentHeader(const Segment& s, SegmentHeaderBytes* out) {
  out->fill(0);
  uint8_t* b = out->data();
  Put<uint8_t>(b, 0, static_cast<uint8_t>(s.type));
  Put<uint8_t>(b, 1, static_cast<uint8_t>(s.reason));
  Put<uint32_t>(b, 4, s.dst_qpn);
  Put<uint32_t>(b, 8, s.src_qpn);
  Put<uint32_t>(b, 12, s.length);
}

DecodeError DecodeSegmentHeader(std::span<const uint8_t> bytes, Segment* s) {
  if (bytes.size() < kSegmentHeaderBytes) return DecodeError::kTruncated;
  const uint8_t* b = bytes.data();
  Segment out;
  const uint8_t type = Get<uint8_t>(b, 0);
  const uint8_t reason = Get<uint8_t>(b, 1);
  out.dst_qpn = Get<uint32_t>(b, 4);
  out.src_qpn = Get<uint32_t>(b, 8);
  out.length = Get<uint32_t>(b, 12);
  if (type < static_cast<uint8_t>(SegmentType::kData) ||
      type > static_cast<uint8_t>(SegmentType::kDetach) || Get<uint16_t>(b, 2) != 0 ||
      out.dst_qpn > kPsnMask || out.src_qpn > kPsnMask) {
    return DecodeError::kBadSegment;
  }
  out.type = static_cast<SegmentType>(type);
  if (reason > static_cast<uint8_t>(DetachReason::kBroken) ||
      (reason != 0 && out.type != SegmentType::kDetach)) {
    return DecodeError::kBadSegment;
  }
  out.reason = static_cast<DetachReason>(reason);
  switch (out.type) {
    case SegmentType::kData:
      if (out.length == 0 || out.length > kMaxSegmentBytes) return DecodeError::kBadSegment;
      break;
    case SegmentType::kAttach:
      if (out.length != kHelloBytes) return DecodeError::kBadSegment;
      break;
    case SegmentType::kAttached:
    case SegmentType::kDetach:
      if (out.length != 0) return DecodeError::kBadSegment;
      break;
  }
  *s = out;
  return DecodeError::kOk;
}

}  // namespace braid::soft::wire
