#include "dataplane/session/ring_entry.h"

namespace braid::session {

SubmitField DecodeSubmit(const SubmitEntry& e, SubmitCommand* out) {
  if (e.op < static_cast<uint8_t>(RingOp::kWrite) || e.op > static_cast<uint8_t>(RingOp::kWatch)) {
    return SubmitField::kOp;
  }
  if (e.flags != 0) return SubmitField::kFlags;
  for (uint8_t b : e.reserved) {
    if (b != 0) return SubmitField::kReserved;
  }
  if (e.op == static_cast<uint8_t>(RingOp::kWatch)) {  // names the VQP and nothing else
    if (e.length != 0) return SubmitField::kLength;
    if (e.local_region != 0 || e.local_offset != 0) return SubmitField::kLocalRange;
    if (e.remote_region != 0 || e.remote_offset != 0) return SubmitField::kRemoteRange;
    if (e.imm != 0) return SubmitField::kImm;
    if (e.timeout_ms != 0) return SubmitField::kTimeout;
    *out = SubmitCommand{RingOp::kWatch, e.user_data, e.vqp_id, 0, 0, 0, 0, 0, 0, 0};
    return SubmitField::kNone;
  }
  if (e.length == 0 || e.length > kMaxSubmitLength) return SubmitField::kLength;
  if (e.local_offset > UINT64_MAX - e.length) return SubmitField::kLocalRange;
  if (e.remote_offset > UINT64_MAX - e.length) return SubmitField::kRemoteRange;
  const auto op = static_cast<RingOp>(e.op);
  if (op != RingOp::kWriteWithImm && e.imm != 0) return SubmitField::kImm;
  if (e.timeout_ms > kMaxTimeoutMs) return SubmitField::kTimeout;
  *out = SubmitCommand{op,
                       e.user_data,
                       e.vqp_id,
                       e.local_region,
                       e.local_offset,
                       e.remote_region,
                       e.remote_offset,
                       e.length,
                       e.imm,
                       e.timeout_ms};
  return SubmitField::kNone;
}

std::string_view Describe(SubmitField field) {
  switch (field) {
    case SubmitField::kNone:
      return "the entry is well formed";
    case SubmitField::kOp:
      return "unknown operation: use 1 (WRITE), 2 (READ), 3 (WRITE_WITH_IMM) or 4 (WATCH)";
    case SubmitField::kFlags:
      return "unknown flags: no flag is defined, send 0";
    case SubmitField::kReserved:
      return "reserved bytes are not zero: clear the entry before filling it";
    case SubmitField::kLength:
      return "length must be 1 byte to 1 TiB (0 for WATCH)";
    case SubmitField::kLocalRange:
      return "local offset + length wraps around (WATCH: local region and offset must be 0)";
    case SubmitField::kRemoteRange:
      return "remote offset + length wraps around (WATCH: remote region and offset must be 0)";
    case SubmitField::kImm:
      return "an immediate is only carried by WRITE_WITH_IMM: send 0";
    case SubmitField::kTimeout:
      return "timeout above 24 hours (WATCH: must be 0)";
    case SubmitField::kVqp:
      return "no connected VQP of this session's owner has this id: create and connect it first";
    case SubmitField::kLocalRegion:
      return "no region of this session's owner has this id, or the range is past its end";
    case SubmitField::kRemoteRegion:
      return "no remote region is bound to this handle for this VQP, or the range is past its "
             "end: bind it first";
  }
  return "unknown field";
}

}  // namespace braid::session
