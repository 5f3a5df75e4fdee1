#include "client_sdk/braidctl/copy_pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/common/memory_file.h"

namespace braid::ctl {

namespace {

enum class SlotState { kFree, kRead, kMoved };

struct Slot {
  SlotState state = SlotState::kFree;
  uint64_t chunk = 0;
  uint32_t ops_left = 0;
};

// pread or pwrite of all `n` bytes at `offset`, which a file may take in parts (a write that
// fills the file system is short, and the next one says why). The bytes done; fewer than `n`
// with `*err` the errno, or 0 when a read found the end of the file.
template <typename Io>
uint64_t Whole(Io io, int fd, uint8_t* data, uint64_t n, uint64_t offset, int* err) {
  uint64_t done = 0;
  *err = 0;
  while (done < n) {
    const ssize_t moved = io(fd, data + done, n - done, static_cast<off_t>(offset + done));
    if (moved < 0 && errno == EINTR) continue;
    if (moved <= 0) {
      *err = moved < 0 ? errno : 0;
      break;
    }
    done += static_cast<uint64_t>(moved);
  }
  return done;
}

class Pipeline {
 public:
  Pipeline(const CopyPlan& plan, client::TransferSession& session, const client::Region& src,
           const client::Region& dst, const v1::RemoteRegion& dst_remote, Progress* progress)
      : plan_(plan),
        session_(session),
        src_(src),
        dst_(dst),
        dst_remote_(dst_remote),
        progress_(progress),
        slots_(src.size() / plan.slot_size),
        chunks_((plan.size + plan.slot_size - 1) / plan.slot_size) {}

  CopyOutcome Run() {
    std::thread reader([this] { ReadStage(); });
    std::thread writer([this] { WriteStage(); });
    TransferStage();
    reader.join();
    writer.join();
    // After a failure, operations may still be in flight; each ends by its deadline, and their
    // callbacks refer to this pipeline.
    (void)session_.Flush(std::chrono::milliseconds(2 * uint64_t{plan_.timeout_ms}) +
                         std::chrono::seconds(10));
    std::lock_guard<std::mutex> lock(mu_);
    outcome_.bytes = written_;
    return outcome_;
  }

 private:
  uint64_t Length(uint64_t chunk) const {
    return std::min(plan_.slot_size, plan_.size - chunk * plan_.slot_size);
  }
  uint64_t SlotOffset(uint64_t chunk) const { return (chunk % slots_.size()) * plan_.slot_size; }

  // Waits until slot of `chunk` is in `state` holding `chunk` (kFree: any chunk); false once
  // the copy failed.
  bool WaitFor(uint64_t chunk, SlotState state) {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& s = slots_[chunk % slots_.size()];
    auto ready = [&] {
      return !outcome_.status.ok() ||
             (s.state == state && (state == SlotState::kFree || s.chunk == chunk));
    };
    // A signal handler cannot notify the condition variable: look at `stop` every 50 ms.
    while (!cv_.wait_for(lock, std::chrono::milliseconds(50), ready)) {
      if (Stopped()) break;
    }
    if (Stopped() && outcome_.status.ok()) {
      outcome_.status = client::Status::Cancelled("interrupted");
      outcome_.failed_at = chunk * plan_.slot_size;
      cv_.notify_all();
    }
    return outcome_.status.ok();
  }

  bool Stopped() const { return plan_.stop != nullptr && plan_.stop->load(); }

  void Fail(uint64_t chunk, client::Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (outcome_.status.ok()) {
        outcome_.status = std::move(status);
        outcome_.failed_at = chunk * plan_.slot_size;
      }
    }
    cv_.notify_all();
  }

  void ReadStage() {
    for (uint64_t c = 0; c < chunks_; ++c) {
      if (!WaitFor(c, SlotState::kFree)) return;
      const uint64_t n = Length(c);
      int err = 0;
      if (Whole(pread, plan_.in_fd, src_.data() + SlotOffset(c), n, c * plan_.slot_size, &err) <
          n) {
        return Fail(c, err != 0 ? client::Status::FromErrno(err, "read the source file")
                                : client::Status::IoError(
                                      "the source file ended early: it shrank during the copy"));
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        Slot& s = slots_[c % slots_.size()];
        s.state = SlotState::kRead;
        s.chunk = c;
      }
      cv_.notify_all();
    }
  }

  void TransferStage() {
    std::vector<client::TransferOp> ops;
    for (uint64_t c = 0; c < chunks_; ++c) {
      if (!WaitFor(c, SlotState::kRead)) return;
      const uint64_t n = Length(c), base = SlotOffset(c);
      ops.clear();
      for (uint64_t off = 0; off < n; off += plan_.op_size) {
        client::TransferOp op;
        op.op = v1::OP_WRITE;
        op.local_region = src_.id();
        op.local_offset = base + off;
        op.remote = dst_remote_;
        op.remote_offset = base + off;
        op.length = std::min(plan_.op_size, n - off);
        op.timeout = std::chrono::milliseconds(plan_.timeout_ms);
        ops.push_back(op);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        slots_[c % slots_.size()].ops_left = static_cast<uint32_t>(ops.size());
      }
      session_.SubmitBatch(
          ops, [this, c](size_t) { return [this, c](client::TransferResult r) { Moved(c, r); }; });
    }
  }

  // One operation of `chunk` completed (the session's thread).
  void Moved(uint64_t chunk, const client::TransferResult& r) {
    if (!r.status.ok()) return Fail(chunk, r.status);
    {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& s = slots_[chunk % slots_.size()];
      if (--s.ops_left > 0) return;
      s.state = SlotState::kMoved;
    }
    cv_.notify_all();
  }

  void WriteStage() {
    for (uint64_t c = 0; c < chunks_; ++c) {
      if (!WaitFor(c, SlotState::kMoved)) return;
      const uint64_t n = Length(c);
      int err = 0;
      if (Whole(pwrite, plan_.out_fd, dst_.data() + SlotOffset(c), n, c * plan_.slot_size, &err) <
          n) {
        return Fail(c, err != 0 ? client::Status::FromErrno(err, "write the output file")
                                : client::Status::IoError("the output file took no more bytes"));
      }
      uint64_t written;
      {
        std::lock_guard<std::mutex> lock(mu_);
        slots_[c % slots_.size()].state = SlotState::kFree;
        written = written_ += n;
      }
      cv_.notify_all();
      if (progress_ != nullptr) progress_->Update(written);
    }
  }

  const CopyPlan& plan_;
  client::TransferSession& session_;
  const client::Region& src_;
  const client::Region& dst_;
  const v1::RemoteRegion& dst_remote_;
  Progress* progress_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;  // guarded by mu_
  const uint64_t chunks_;
  uint64_t written_ = 0;  // guarded by mu_
  CopyOutcome outcome_;   // guarded by mu_
};

}  // namespace

CopyStaging CopyStaging::For(uint64_t file_size) {
  constexpr uint64_t kPage = 4096;
  const uint64_t per_slot = (file_size + kSlots - 1) / kSlots;
  const uint64_t slot = std::clamp(common::WholePages(per_slot, kPage), kPage, kMaxSlot);
  return {.slot_size = slot, .op_size = std::min(slot, kMaxOp)};
}

CopyOutcome RunCopyPipeline(const CopyPlan& plan, client::TransferSession& session,
                            const client::Region& src, const client::Region& dst,
                            const v1::RemoteRegion& dst_remote, Progress* progress) {
  return Pipeline(plan, session, src, dst, dst_remote, progress).Run();
}

}  // namespace braid::ctl
