#include "server/transfer_stream.h"

#include <mutex>
#include <optional>

#include "server/proto_mapping.h"
#include "server/relay_link.h"

namespace braid::server {

namespace {

class TransferStream;
using Link = RelayLink<TransferStream, common::EventQueue<engine::TransferResult>>;

class TransferStream final
    : public grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse> {
 public:
  TransferStream(engine::Engine& engine, StreamRelay& relay, const Caller& caller, uint32_t window,
                 bool shutting_down)
      : engine_(engine),
        relay_(relay),
        owner_(caller.scope()),
        window_(window),
        link_(std::make_shared<Link>()),
        shutting_down_(shutting_down) {}
  ~TransferStream() override { relay_.Remove(link_.get()); }

  // Keeps itself alive until OnDone; sends the window, starts reading.
  void Start(std::shared_ptr<TransferStream> self) {
    self_ = self;
    link_->stream = self;
    // The engine rings the relay when it queues a result while the stream waits for one.
    bell_ = relay_.Add(link_);
    sink_ = std::make_shared<engine::TransferSink>(size_t{window_} + 16, bell_);
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

  // Submits a held operation, writes what is queued, or ends the stream when nothing is left to
  // do. Any thread.
  void Kick() {
    RetryHeld();
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
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(link_->mu);
        read_pending_ = false;
        reading_done_ = true;
      }
      Kick();
      return;
    }
    common::Result<engine::TransferRequest> parsed = FromProto(request_);
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      ++outstanding_;
    }
    // The read stays pending until the operation is with the engine: a write finishing meanwhile
    // (OnWriteDone, another thread) must not start the next read, whose operation could then reach
    // the engine first. Operations start in the order the client sent them.
    if (!parsed.ok()) {
      Refuse(request_.op_id(), parsed.status());
    } else {
      parsed->owner = owner_;
      if (!Submit(std::move(*parsed))) return;  // held: the engine rings when it has room
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
        --outstanding_;
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

  // Hands `request` to the engine. False when its command queue is full (the engine is stalled):
  // the operation is held, no further operation is read, and the engine rings the relay once it
  // takes commands again (Kick submits the held one then). At shutdown a held operation is
  // refused instead.
  bool Submit(engine::TransferRequest request) {
    const common::Status s = engine_.SubmitTransfer(request, sink_, bell_);
    if (s.code() != common::StatusCode::kNoResource) {
      if (!s.ok()) Refuse(request.op_id, s);
      return true;
    }
    std::lock_guard<std::mutex> lock(link_->mu);
    held_ = std::move(request);
    return false;
  }

  // Submits the held operation, if any; then reading resumes. Any thread.
  void RetryHeld() {
    std::optional<engine::TransferRequest> held;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      if (!held_) return;
      held = std::move(held_);
      held_.reset();
      stopping = shutting_down_ || cancelled_ || broken_;
    }
    if (stopping) {
      Refuse(held->op_id,
             common::Status::Cancelled("the stream is ending (client gone or agent stopping); the "
                                       "operation was not started"));
    } else if (!Submit(std::move(*held))) {
      return;
    }
    ReadDone();
  }

  // The operation just read is with the engine (or refused): the next may be read.
  void ReadDone() {
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      read_pending_ = false;
    }
    MaybeRead();
    Kick();
  }

  // Room is reserved: at most `window` operations are outstanding, the sink holds more.
  void Refuse(uint64_t op_id, common::Status status) {
    engine::TransferResult r;
    r.op_id = op_id;
    r.status = std::move(status);
    (void)sink_->results.Push(std::move(r));
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
        if (std::optional<engine::TransferResult> r = results.TryPop()) {
          response_.Clear();
          ToProto(*r, response_.mutable_completion());
          writing_ = true;
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
    } else if (shutting_down_) {
      *status = {grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"};
    } else {
      *status = grpc::Status::OK;
    }
    return Next::kFinish;
  }

  engine::Engine& engine_;
  StreamRelay& relay_;
  const engine::OwnerId owner_;
  const uint32_t window_;
  std::shared_ptr<Link> link_;
  std::shared_ptr<common::Doorbell> bell_;  // the relay's, for this stream
  std::shared_ptr<engine::TransferSink> sink_;
  std::shared_ptr<TransferStream> self_;  // until OnDone
  v1::TransferRequest request_;
  v1::TransferResponse response_;
  // Guarded by link_->mu.
  uint64_t outstanding_ = 0;  // read, not yet written back
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
  std::optional<engine::TransferRequest> held_;  // read, refused by a full engine queue
};

}  // namespace

grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse>* StartTransferStream(
    engine::Engine& engine, StreamRelay& relay, const Caller& caller, uint32_t window,
    bool shutting_down) {
  auto stream = std::make_shared<TransferStream>(engine, relay, caller, window, shutting_down);
  stream->Start(stream);
  return stream.get();
}

}  // namespace braid::server
