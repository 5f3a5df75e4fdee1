// SessionSegment: the shared memory of one local session. A header, then the submission ring
// (SubmitEntry, client -> engine), the completion ring (CompletionEntry, engine -> client) and the
// notification ring (NotifyEntry, engine -> client), each a RingControl and its entries, at 64-byte
// aligned offsets the header states.
//
// The agent creates the segment (a memfd, its size sealed so that no process can shrink it under
// the other's mapping) and hands its descriptor to the client over the Unix socket; the client
// attaches to it and checks the header before it trusts any offset. After that, the rings treat
// everything the other side writes as untrusted (spsc_ring.h).
//
// Threading: create/attach and destroy on any thread; the rings from their one producer and one
// consumer thread each. Ownership: the object owns the mapping and the descriptor.
#ifndef BRAID_DATAPLANE_SESSION_SESSION_SEGMENT_H_
#define BRAID_DATAPLANE_SESSION_SESSION_SEGMENT_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dataplane/common/result.h"
#include "dataplane/session/ring_entry.h"
#include "dataplane/session/spsc_ring.h"

namespace braid::session {

inline constexpr uint32_t kSegmentMagic = 0x47455342;  // "BSEG"
inline constexpr uint32_t kMaxRingEntries = 1u << 16;

struct SegmentHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t header_bytes;
  uint32_t sq_entries;
  uint32_t cq_entries;
  uint32_t nq_entries;
  uint32_t reserved;
  uint64_t sq_control;  // offsets from the start of the segment
  uint64_t sq_ring;
  uint64_t cq_control;
  uint64_t cq_ring;
  uint64_t nq_control;
  uint64_t nq_ring;
  uint64_t total_bytes;
};

// The sizes of a session's rings: powers of two, 2 to kMaxRingEntries each.
struct RingSizes {
  uint32_t sq = 1024;  // submissions
  uint32_t cq = 1024;  // completions: the session's window
  uint32_t nq = 1024;  // notifications
  bool Valid() const;
  // Valid(), or kInvalidArgument saying what sizes are.
  common::Status Check() const;
};

class SessionSegment {
 public:
  // The agent's side: a new segment with rings of these sizes.
  static common::Result<std::unique_ptr<SessionSegment>> Create(const RingSizes& sizes);
  // The client's side: maps the segment behind `fd` (taken over: closed with the object) and
  // checks its header (magic, version, ring sizes, offsets, and that it is sealed at full size).
  static common::Result<std::unique_ptr<SessionSegment>> Attach(int fd);
  // The layout of a segment with these ring sizes (the one both sides must agree on).
  static SegmentHeader Layout(const RingSizes& sizes);

  struct Token {  // only Create and Attach make one
   private:
    friend class SessionSegment;
    explicit Token() = default;
  };
  SessionSegment(Token, int fd, uint8_t* base, const SegmentHeader& layout)
      : fd_(fd), base_(base), layout_(layout) {}
  ~SessionSegment();
  SessionSegment(const SessionSegment&) = delete;
  SessionSegment& operator=(const SessionSegment&) = delete;

  int fd() const { return fd_; }
  const SegmentHeader& layout() const { return layout_; }
  // A view of each ring; each side keeps one per ring it uses (producer or consumer).
  SpscRing<SubmitEntry> SubmitRing() const;
  SpscRing<CompletionEntry> CompletionRing() const;
  SpscRing<NotifyEntry> NotifyRing() const;

 private:
  int fd_;
  uint8_t* base_;
  SegmentHeader layout_;  // a private copy: the shared header is never read again
};

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_SESSION_SEGMENT_H_
