#include "server/transfer_stream.h"

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/proto_mapping.h"
#include "server/relay_link.h"

namespace braid::server {

namespace {

class TransferStream;
using Link = RelayLink<TransferStream, engine::TransferSink::Queue>;

class TransferStream final
    : public grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse> {
 public:
  TransferStream(engine::Engine& engine, StreamRelay& relay, const Caller& caller,
                 CallerBudget::Lease lease, bool shutting_down)
      : engine_(engine),
        relay_(relay),
        owner_(caller.scope()),
        lease_(std::move(lease)),
        window_(lease_.size()),
        link_(std::make_shared<Link>()),
        shutting_down_(shutting_down) {}
  ~TransferStream() override { relay_.Remove(link_.get()); }

  // Keeps itself alive until OnDone; sends the window, starts reading.
  void Start(std::shared_ptr<TransferStream> self) {
    self_ = self;
    link_->stream = self;
    // The engine rings the relay when it queues a result while the stream waits for one.
    bell_ = relay_.Add(link_);
    // Reading stops at `window` outstanding, but the message read last may carry up to `window`.
    sink_ = std::make_shared<engine::TransferSink>(2 * size_t{window_} + 16, bell_);
    link_->queue = &sink_->results;
    response_.mutable_window()->set_max_in_flight(window_);
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      writing_ = true;  // the hello
      read_pending_ = true;
      calls_ += 2;
    }
    StartWrite(&response_);
    StartRead(&request_);
    Called(2);
  }

  // Submits a held message, writes what is queued, or ends the stream when nothing is left to do.
  // Any thread.
  void Kick() {
    RetryHeld();
    WriteOrFinish();
  }

  // Writes what is queued, or ends the stream when nothing is left to do. Any thread.
  void WriteOrFinish() {
    grpc::Status status;
    Next next;
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      next = NextLocked(&status);
    }
    if (next == Next::kWrite) {
      StartWrite(&response_);
      Called(1);
    } else if (next == Next::kFinish) {
      Finish(std::move(status));
    }
  }

  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      shutting_down_ = true;
    }
    Kick();
  }

  void OnReadDone(bool ok) override {
    const int n = ok ? request_.ops_size() : 0;
    if (!ok || n == 0 || static_cast<uint32_t>(n) > window_) {
      {
        std::lock_guard<std::mutex> lock(link_->mu);
        read_pending_ = false;
        reading_done_ = true;
        if (ok) {
          invalid_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "a TransferRequest carries " + std::to_string(n) +
                                      " operations; send 1 to " + std::to_string(window_) +
                                      " (the window) per message");
        }
      }
      Kick();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      outstanding_ += static_cast<uint64_t>(n);
      submitting_ = true;
    }
    // The read stays pending until the message's operations are with the engine: a write
    // finishing meanwhile (OnWriteDone, another thread) must not start the next read, whose
    // operations could then reach the engine first. Operations start in the order sent.
    batch_.clear();
    batch_.reserve(static_cast<size_t>(n));  // the last one went to the engine with its storage
    for (const v1::TransferOp& op : request_.ops()) {
      common::Result<engine::TransferRequest> parsed = FromProto(op);
      if (!parsed.ok()) {
        Refuse(op.op_id(), parsed.status());
        continue;
      }
      parsed->owner = owner_;
      batch_.push_back(std::move(*parsed));
    }
    if (!SubmitBatch()) {  // held: the engine rings when it has room
      WriteOrFinish();     // what was refused meanwhile goes out
      return;
    }
    ReadDone();
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      writing_ = false;
      if (!hello_written_) {
        hello_written_ = true;
      } else {
        outstanding_ -= in_write_;
      }
      if (!ok) broken_ = true;
    }
    MaybeRead();
    Kick();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      cancelled_ = true;
    }
    Kick();
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      done_ = true;
    }
    std::shared_ptr<TransferStream> last = std::move(self_);  // may free this on return
  }

 private:
  enum class Next { kNothing, kWrite, kFinish };

  // Hands batch_ to the engine, in order, as one command. False when its command queue is full
  // (the engine is stalled): the batch is held, nothing more is read, and the engine rings the
  // relay once it takes commands again (Kick goes on then). A ring that comes while this runs is
  // not lost: it makes this try once more. REQUIRES: submitting_ was set by the caller.
  bool SubmitBatch() {
    for (;;) {
      // Taken whole (batch_ left empty) or refused whole for a full queue (batch_ as it was).
      if (!batch_.empty()) (void)engine_.SubmitTransfers(batch_, sink_, bell_);
      std::lock_guard<std::mutex> lock(link_->mu);
      if (!batch_.empty() && room_rang_) {
        room_rang_ = false;
        continue;
      }
      submitting_ = false;
      held_ = !batch_.empty();
      return !held_;
    }
  }

  // Goes on with held operations, if any; then reading resumes. At shutdown (or with the client
  // gone) they are refused instead. Any thread.
  void RetryHeld() {
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      if (submitting_) {
        room_rang_ = true;
        return;
      }
      if (!held_) return;
      held_ = false;
      submitting_ = true;
      stopping = shutting_down_ || cancelled_ || broken_;
    }
    if (stopping) {
      for (const engine::TransferRequest& request : batch_) {
        Refuse(request.op_id,
               common::Status::Cancelled("the stream is ending (client gone or agent stopping); "
                                         "the operation was not started"));
      }
      batch_.clear();
      std::lock_guard<std::mutex> lock(link_->mu);
      submitting_ = false;
    } else if (!SubmitBatch()) {
      return;
    }
    ReadDone();
  }

  // The operations just read are with the engine (or refused): the next message may be read.
  void ReadDone() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      read_pending_ = false;
    }
    MaybeRead();
    Kick();
  }

  // An operation that never reaches the engine: its result waits with the stream's own (the sink
  // has one producer, the engine). The caller kicks the stream afterwards.
  void Refuse(uint64_t op_id, common::Status status) {
    engine::TransferResult r;
    r.op_id = op_id;
    r.status = std::move(status);
    std::lock_guard<std::mutex> lock(link_->mu);
    refused_.push_back(std::move(r));
  }

  // Reads the next operation while the window has room.
  void MaybeRead() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      if (read_pending_ || reading_done_ || finishing_ || shutting_down_ || cancelled_ || broken_ ||
          outstanding_ >= window_) {
        return;
      }
      read_pending_ = true;
      ++calls_;
    }
    StartRead(&request_);
    Called(1);
  }

  // A StartRead or StartWrite decided under the lock has been made: the stream may finish now.
  void Called(int n) {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      calls_ -= n;
    }
    Kick();
  }

  Next NextLocked(grpc::Status* status) {
    if (done_ || finishing_ || writing_) return Next::kNothing;
    auto& results = sink_->results;
    if (!cancelled_ && !broken_) {
      for (;;) {
        response_.Clear();
        uint64_t n = 0;
        for (; n < refused_.size() && n < kMaxCompletionsPerMessage; ++n) {
          ToProto(refused_[n], response_.add_completions());
        }
        refused_.erase(refused_.begin(), refused_.begin() + static_cast<ptrdiff_t>(n));
        while (n < kMaxCompletionsPerMessage) {
          std::optional<engine::TransferResult> r = results.TryPop();
          if (!r) break;
          ToProto(*r, response_.add_completions());
          ++n;
        }
        if (n > 0) {
          writing_ = true;
          in_write_ = n;
          ++calls_;
          return Next::kWrite;
        }
        if (outstanding_ == 0 && (reading_done_ || shutting_down_)) break;
        if (results.ArmWait()) return Next::kNothing;  // the relay calls back when one comes
      }
    }
    // Never while a StartRead or StartWrite decided elsewhere is still to be made.
    if (calls_ > 0) return Next::kNothing;
    finishing_ = true;
    if (cancelled_ || broken_) {
      *status = {grpc::StatusCode::CANCELLED, "the client cancelled the stream"};
    } else if (!invalid_.ok()) {
      *status = invalid_;
    } else if (shutting_down_) {
      *status = {grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"};
    } else {
      *status = grpc::Status::OK;
    }
    return Next::kFinish;
  }

  // Completions gathered into one response at most (a burst of results costs one write).
  static constexpr uint64_t kMaxCompletionsPerMessage = 256;

  engine::Engine& engine_;
  StreamRelay& relay_;
  const engine::OwnerId owner_;
  const CallerBudget::Lease lease_;  // window_, from the caller's budget
  const uint32_t window_;
  std::shared_ptr<Link> link_;
  std::shared_ptr<common::Doorbell> bell_;  // the relay's, for this stream
  std::shared_ptr<engine::TransferSink> sink_;
  std::shared_ptr<TransferStream> self_;  // until OnDone
  v1::TransferRequest request_;
  v1::TransferResponse response_;
  // The message read last, parsed, until the engine takes it; touched only by whoever set
  // submitting_ (or found held_).
  std::vector<engine::TransferRequest> batch_;
  // Guarded by link_->mu.
  uint64_t outstanding_ = 0;  // read, not yet written back
  uint64_t in_write_ = 0;     // completions in the write under way
  int calls_ = 0;             // StartRead/StartWrite decided, not yet made
  bool writing_ = false;
  bool hello_written_ = false;
  bool read_pending_ = false;
  bool reading_done_ = false;
  bool cancelled_ = false;
  bool broken_ = false;
  bool finishing_ = false;
  bool done_ = false;
  bool shutting_down_;
  bool submitting_ = false;  // a thread is handing batch_ to the engine
  bool room_rang_ = false;   // the engine rang while submitting_: try once more
  bool held_ = false;        // batch_ waits for room in the engine's command queue
  grpc::Status invalid_;     // a malformed message: the stream ends with this once drained
  std::vector<engine::TransferResult> refused_;  // results of operations the engine never took
};

}  // namespace

grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse>* StartTransferStream(
    engine::Engine& engine, StreamRelay& relay, const Caller& caller, CallerBudget::Lease window,
    bool shutting_down) {
  auto stream =
      std::make_shared<TransferStream>(engine, relay, caller, std::move(window), shutting_down);
  stream->Start(stream);
  return stream.get();
}

}  // namespace braid::server
