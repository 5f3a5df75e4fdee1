// libFuzzer target for the soft provider's frame parser (segment headers, frame headers, hellos,
// challenges).
// Built with clang (`make fuzz`); `make test` runs it for a bounded time (FUZZ_SECONDS).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "dataplane/soft/wire_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace braid::soft;
  const std::span<const uint8_t> bytes(data, size);
  PacketHeader h;
  if (wire::DecodeFrameHeader(bytes, &h) == wire::DecodeError::kOk) {
    // Whatever is accepted is in range and encodes back to a header that decodes the same.
    if (h.payload_len > wire::kMaxPayload || h.psn > kPsnMask) std::abort();
    wire::FrameHeaderBytes again;
    wire::EncodeFrameHeader(h, &again);
    PacketHeader h2;
    if (wire::DecodeFrameHeader(again, &h2) != wire::DecodeError::kOk) std::abort();
    if (h2.type != h.type || h2.payload_len != h.payload_len || h2.psn != h.psn ||
        h2.remote_addr != h.remote_addr || h2.imm_data != h.imm_data) {
      std::abort();
    }
  }
  wire::Hello hello;
  if (wire::DecodeHello(bytes, &hello) == wire::DecodeError::kOk) {
    if (hello.src_qpn > kPsnMask || hello.dst_qpn > kPsnMask) std::abort();
    // The MAC survives a round trip.
    wire::HelloBytes again;
    wire::EncodeHello(hello, &again);
    wire::Hello h2;
    if (wire::DecodeHello(again, &h2) != wire::DecodeError::kOk || h2.mac != hello.mac)
      std::abort();
  }
  wire::Segment seg;
  if (wire::DecodeSegmentHeader(bytes, &seg) == wire::DecodeError::kOk) {
    // Accepted: QPNs in range, a length its type allows, and it round-trips.
    if (seg.dst_qpn > kPsnMask || seg.src_qpn > kPsnMask) std::abort();
    if (seg.type == wire::SegmentType::kData &&
        (seg.length == 0 || seg.length > wire::kMaxSegmentBytes)) {
      std::abort();
    }
    if (seg.type == wire::SegmentType::kAttach && seg.length != wire::kHelloBytes) std::abort();
    wire::SegmentHeaderBytes again;
    wire::EncodeSegmentHeader(seg, &again);
    wire::Segment s2;
    if (wire::DecodeSegmentHeader(again, &s2) != wire::DecodeError::kOk || s2.type != seg.type ||
        s2.reason != seg.reason || s2.length != seg.length || s2.dst_qpn != seg.dst_qpn) {
      std::abort();
    }
  }
  wire::Challenge challenge;
  if (wire::DecodeChallenge(bytes, &challenge) == wire::DecodeError::kOk && size < 32) std::abort();
  return 0;
}
