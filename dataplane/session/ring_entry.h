// The entries of a session's rings, as they lie in shared memory, and the check of a submitted one.
//
// SubmitEntry (64 bytes): one operation from the client. Everything in it is client input: the
// engine copies it out of the ring (SpscRing::Pop) and decodes it with DecodeSubmit, which checks
// the entry's own shape (operation, flags, reserved bytes, lengths and offsets that do not wrap).
// Whether its VQP and regions exist and belong to the session's owner is the engine's question,
// asked where those facts live. A bad entry fails alone: its completion carries the refusal.
//
// CompletionEntry (32 bytes): one outcome, written by the engine thread.
// NotifyEntry (32 bytes): one write-with-immediate that arrived on a VQP the session watches (a
// kWatch entry subscribes), or the end of the session's watches; written by the engine thread.
// The layout is part of the session protocol (doc/local_data_path.md); kSessionVersion changes
// with it.
#ifndef BRAID_DATAPLANE_SESSION_RING_ENTRY_H_
#define BRAID_DATAPLANE_SESSION_RING_ENTRY_H_

#include <cstdint>
#include <string_view>

namespace braid::session {

inline constexpr uint16_t kSessionVersion = 2;

// kWatch subscribes the session to the VQP's notifications (the notification ring); its
// completion says whether it did. It names only the VQP: every other field is 0.
enum class RingOp : uint8_t { kWrite = 1, kRead = 2, kWriteWithImm = 3, kWatch = 4 };

struct SubmitEntry {
  uint64_t user_data;  // returned in the completion
  uint64_t vqp_id;
  uint64_t local_offset;   // into the local region
  uint64_t remote_offset;  // into the remote region
  uint64_t length;         // bytes, at least 1
  uint32_t local_region;
  uint32_t remote_region;
  uint32_t imm;         // kWriteWithImm only, host order
  uint32_t timeout_ms;  // 0: the agent's default
  uint8_t op;           // RingOp
  uint8_t flags;        // none defined yet: 0
  uint8_t reserved[6];  // 0
};
static_assert(sizeof(SubmitEntry) == 64);

struct CompletionEntry {
  uint64_t user_data;
  uint64_t length;     // bytes moved (0 on failure)
  uint32_t status;     // common::StatusCode
  uint32_t wc_status;  // ibv_wc_status when the operation reached the wire, else 0
  uint32_t detail;     // which field a refused entry got wrong (SubmitField), else 0
  uint32_t reserved;
};
static_assert(sizeof(CompletionEntry) == 32);

enum class NotifyKind : uint8_t {
  kNotification = 1,  // a write-with-immediate arrived on vqp_id
  // The session's watch of vqp_id ended: status kOk when the VQP was destroyed; kNoResource when
  // the client fell behind (the ring had one slot left: this entry took it, and every watch of the
  // session ended with it; vqp_id is then 0).
  kWatchEnded = 2,
};

struct NotifyEntry {
  uint64_t vqp_id;
  uint64_t seq;       // 0, 1, 2 ... per VQP (kNotification)
  uint64_t byte_len;  // bytes the write placed
  uint32_t imm;       // host order
  uint8_t kind;       // NotifyKind
  uint8_t wc_status;  // ibv_wc_status of the receive (kNotification)
  uint16_t status;    // common::StatusCode (kWatchEnded)
};
static_assert(sizeof(NotifyEntry) == 32);

// The field of a SubmitEntry that DecodeSubmit refused.
enum class SubmitField : uint32_t {
  kNone = 0,
  kOp,
  kFlags,
  kReserved,
  kLength,
  kLocalRange,
  kRemoteRange,
  kImm,
  kTimeout,
  // Refused by the engine, which owns these facts (not by DecodeSubmit):
  kVqp,           // no such VQP for this session's owner, or not connected, or failed
  kLocalRegion,   // no such region for this session's owner, or the range is past its end
  kRemoteRegion,  // no such bound remote region, bound to another VQP, or the range is past it
};

// A submitted entry whose shape is valid.
struct SubmitCommand {
  RingOp op;
  uint64_t user_data;
  uint64_t vqp_id;
  uint32_t local_region;
  uint64_t local_offset;
  uint32_t remote_region;
  uint64_t remote_offset;
  uint64_t length;
  uint32_t imm;
  uint32_t timeout_ms;
};

inline constexpr uint64_t kMaxSubmitLength = 1ull << 40;  // 1 TiB
inline constexpr uint32_t kMaxTimeoutMs = 24u * 3600 * 1000;

// Checks `e` (already copied out of shared memory) and fills `*out`. Returns kNone when the entry
// is well formed, else the first field found wrong (`*out` is then unspecified). Allocates nothing.
SubmitField DecodeSubmit(const SubmitEntry& e, SubmitCommand* out);
// What is wrong with a field DecodeSubmit refused, and what to do (a fixed text).
std::string_view Describe(SubmitField field);

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_RING_ENTRY_H_
