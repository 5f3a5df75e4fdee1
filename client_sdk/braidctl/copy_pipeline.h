// CopyPipeline: `braidctl copy`'s file → region → wire → region → file pipeline.
//
// The source and destination regions are cut into the same slots. Three stages run at once, each
// over the file's chunks in order: a reader thread reads chunk c into source slot c % slots, the
// calling thread writes that slot to the peer's (one operation per `op_size`), and a writer
// thread writes the destination slot into the output file, which frees the slot for chunk
// c + slots. So file reads, transfers and file writes overlap instead of following one another.
// The first failure (a read, a transfer, a write, or `stop` set) stops every stage; Run reports it
// with the file offset of its chunk. The output file is written in chunk order, so what it holds
// is always a prefix of the source: the outcome's `bytes`.
// Threading: Run on one thread; it starts and joins the other two. Progress is drawn by the writer.
#ifndef BRAID_CLIENT_SDK_BRAIDCTL_COPY_PIPELINE_H_
#define BRAID_CLIENT_SDK_BRAIDCTL_COPY_PIPELINE_H_

#include <atomic>
#include <cstdint>

#include "braid/agent_client.h"
#include "braid/transfer_session.h"
#include "client_sdk/braidctl/progress.h"

namespace braid::ctl {

struct CopyPlan {
  int in_fd = -1;   // read with pread
  int out_fd = -1;  // written with pwrite
  uint64_t size = 0;
  uint64_t slot_size = 0;  // src and dst regions hold size() / slot_size slots (at least 2)
  uint64_t op_size = 0;    // the largest operation a slot is written with
  uint32_t timeout_ms = 0;
  // When set (a signal handler may set it), the copy stops within ~50 ms as a failure (kCancelled).
  const std::atomic<bool>* stop = nullptr;
};

// How large a copy's slots, operations and regions are for a file of `file_size` bytes: eight
// slots a side of at most 16 MiB each, but no larger than the file needs (a page at least), so a
// small file asks each agent's region directory for about its own size instead of 128 MiB (a
// container's /dev/shm is often 64 MiB, and an agent's region limits may be lower).
struct CopyStaging {
  static constexpr uint64_t kSlots = 8;
  static constexpr uint64_t kMaxSlot = uint64_t{16} << 20;
  static constexpr uint64_t kMaxOp = uint64_t{4} << 20;
  static CopyStaging For(uint64_t file_size);
  uint64_t region_bytes() const { return kSlots * slot_size; }

  uint64_t slot_size = 0;
  uint64_t op_size = 0;
};

struct CopyOutcome {
  client::Status status;   // OK, or the first failure
  uint64_t failed_at = 0;  // the file offset of the chunk that failed
  uint64_t bytes = 0;      // written to the output file: the source's first `bytes`
};

CopyOutcome RunCopyPipeline(const CopyPlan& plan, client::TransferSession& session,
                            const client::Region& src, const client::Region& dst,
                            const v1::RemoteRegion& dst_remote, Progress* progress);

}  // namespace braid::ctl

#endif  // BRAID_CLIENT_SDK_BRAIDCTL_COPY_PIPELINE_H_
