#include "server/transfer_stream.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <thread>

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
    sink_ = std::make_shared<engine::TransferSink>(size_t{window_} + 16, relay_.Add(link_));
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

  // Writes what is queued, or ends the stream when nothing is left to do. Any thread.
  void Kick() {
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
    const uint64_t op_id = request_.op_id();
    common::Result<engine::TransferRequest> parsed = FromProto(request_);
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      ++outstanding_;
    }
    // The read stays pending until the operation is with the engine: a write finishing meanwhile
    // (OnWriteDone, another thread) must not start the next read, whose operation could then reach
    // the engine first. Operations start in the order the client sent them.
    common::Status refused;
    if (!parsed.ok()) {
      refused = parsed.status();
    } else {
      parsed->owner = owner_;
      refused = Submit(*parsed);
    }
    if (!refused.ok()) {
      engine::TransferResult r;
      r.op_id = op_id;
      r.status = std::move(refused);
      // Room is reserved: at most `window` operations are outstanding, the sink holds more.
      (void)sink_->results.Push(std::move(r));
    }
    {
      std::lock_guard<std::mutex> lock(link_->mu);
      read_pending_ = false;
    }
    MaybeRead();
    Kick();
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

  // The engine's command queue is full only while the engine is stalled; wait for it a while.
  common::Status Submit(const engine::TransferRequest& request) {
    common::Status s = engine_.SubmitTransfer(request, sink_);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (s.code() == common::StatusCode::kNoResource &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      s = engine_.SubmitTransfer(request, sink_);
    }
    if (s.code() == common::StatusCode::kNoResource) {
      return common::Status::DeadlineExceeded(
          "the engine took no command for 5 s (stalled); the operation was not started");
    }
    return s;
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
