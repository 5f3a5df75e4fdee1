#include "braid/transfer_session.h"

namespace braid::client {

TransferSession::TransferSession(std::shared_ptr<AgentClient> agent, uint64_t vqp_id,
                                 SessionOptions options)
    : agent_(std::move(agent)), vqp_id_(vqp_id), options_(options) {}

Result<std::unique_ptr<TransferSession>> TransferSession::Open(std::shared_ptr<AgentClient> agent,
                                                               uint64_t vqp_id,
                                                               SessionOptions options) {
  auto session = std::make_unique<TransferSession>(std::move(agent), vqp_id, options);
  BRAID_RETURN_IF_ERROR(session->Start());
  return session;
}

Status TransferSession::Start() {
  stream_ = agent_->stub().Transfer(&context_);
  v1::TransferResponse first;
  if (!stream_->Read(&first) || !first.has_window()) {
    const grpc::Status s = stream_->Finish();
    return s.ok() ? Status::IoError("the agent sent no Transfer window") : FromGrpc(s);
  }
  window_ = first.window().max_in_flight();
  if (options_.max_in_flight != 0) window_ = std::min(window_, options_.max_in_flight);
  reader_ = std::thread([this] { ReadLoop(); });
  watchdog_ = std::thread([this] { WatchLoop(); });
  return Status::Ok();
}

TransferSession::~TransferSession() {
  if (stream_ == nullptr) return;
  {
    // In flight: each op ends by its deadline at the latest (the watchdog sees to it).
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return Idle(); });
    if (broken_.ok()) broken_ = Status::FailedPrecondition("the transfer session is closed");
  }
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_->WritesDone();
  }
  reader_.join();  // the agent ends the stream once nothing is outstanding
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

size_t TransferSession::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

void TransferSession::Submit(const TransferOp& op, std::function<void(TransferResult)> done) {
  Send(std::span<const TransferOp>(&op, 1), [&done](size_t) { return std::move(done); });
}

size_t TransferSession::Send(
    std::span<const TransferOp> ops,
    const std::function<std::function<void(TransferResult)>(size_t)>& done) {
  const auto now = std::chrono::steady_clock::now();
  auto timeout_of = [this](const TransferOp& op) {
    return op.timeout.count() != 0 ? op.timeout : options_.default_timeout;
  };
  v1::TransferRequest request;
  size_t taken = 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Wait for room in the window, at most the first op's own deadline.
    const bool room = cv_.wait_until(lock, now + timeout_of(ops[0]),
                                     [this] { return !broken_.ok() || pending_.size() < window_; });
    Status refuse;
    if (!broken_.ok()) {
      refuse = broken_;
    } else if (!room) {
      refuse = Status::DeadlineExceeded("the transfer window stayed full past the deadline");
    }
    if (!refuse.ok()) {
      // A broken session refuses them all; a full window, the one whose deadline passed.
      const size_t refused = broken_.ok() ? 1 : ops.size();
      lock.unlock();
      for (size_t i = 0; i < refused; ++i) {
        TransferResult r;
        r.status = refuse;
        done(i)(std::move(r));
      }
      return refused;
    }
    // As many as the window has room for go in one message.
    taken = std::min(ops.size(), window_ - pending_.size());
    for (size_t i = 0; i < taken; ++i) {
      const TransferOp& op = ops[i];
      const auto timeout = timeout_of(op);
      const uint64_t op_id = next_op_id_++;
      pending_[op_id] = {done(i), now + timeout + options_.grace};
      v1::TransferOp* out = request.add_ops();
      out->set_op_id(op_id);
      out->set_vqp_id(vqp_id_);
      out->set_op(op.op);
      out->set_local_region_id(op.local_region);
      out->set_local_offset(op.local_offset);
      *out->mutable_remote() = op.remote;
      out->set_remote_offset(op.remote_offset);
      out->set_length(op.length);
      out->set_imm(op.imm);
      out->set_timeout_ms(static_cast<uint32_t>(timeout.count()));
    }
  }
  bool written;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    written = stream_->Write(request);
  }
  // A failed write means the stream is ending: the reader fails everything still pending.
  (void)written;
  return taken;
}

std::future<TransferResult> TransferSession::Submit(const TransferOp& op) {
  auto promise = std::make_shared<std::promise<TransferResult>>();
  auto future = promise->get_future();
  Submit(op, [promise](TransferResult r) { promise->set_value(std::move(r)); });
  return future;
}

std::vector<std::future<TransferResult>> TransferSession::SubmitBatch(
    const std::vector<TransferOp>& ops) {
  std::vector<std::future<TransferResult>> out;
  out.reserve(ops.size());
  SubmitBatch(ops, [&out](size_t) {
    auto promise = std::make_shared<std::promise<TransferResult>>();
    out.push_back(promise->get_future());
    return [promise](TransferResult r) { promise->set_value(std::move(r)); };
  });
  return out;
}

void TransferSession::SubmitBatch(
    std::span<const TransferOp> ops,
    const std::function<std::function<void(TransferResult)>(size_t)>& done) {
  size_t sent = 0;
  while (sent < ops.size()) {
    sent += Send(ops.subspan(sent), [&done, sent](size_t i) { return done(sent + i); });
  }
}

Status TransferSession::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [this] { return Idle(); })) {
    return Status::DeadlineExceeded(std::to_string(pending_.size()) + " transfers still in flight");
  }
  return Status::Ok();
}

void TransferSession::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = Status::Cancelled("the transfer session was cancelled");
  }
  context_.TryCancel();
  FailAll(Status::Cancelled("the transfer session was cancelled"));
}

void TransferSession::Deliver(std::function<void(TransferResult)>& done, TransferResult result) {
  done(std::move(result));
  {
    std::lock_guard<std::mutex> lock(mu_);
    --delivering_;
  }
  cv_.notify_all();
}

void TransferSession::FailAll(const Status& status) {
  std::map<uint64_t, Pending> failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed.swap(pending_);
    delivering_ += static_cast<int>(failed.size());
  }
  for (auto& [op_id, p] : failed) {
    TransferResult r;
    r.op_id = op_id;
    r.status = status;
    Deliver(p.done, std::move(r));
  }
  cv_.notify_all();
}

void TransferSession::ReadLoop() {
  v1::TransferResponse response;
  while (stream_->Read(&response)) {
    for (const v1::TransferCompletion& c : response.completions()) {
      std::function<void(TransferResult)> done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = pending_.find(c.op_id());
        if (it == pending_.end()) continue;  // already given up on (deadline) or cancelled
        done = std::move(it->second.done);
        pending_.erase(it);
        ++delivering_;
      }
      TransferResult r;
      r.op_id = c.op_id();
      r.status = FromGrpc(grpc::Status(static_cast<grpc::StatusCode>(c.code()), c.message()));
      r.wc_status = c.wc_status();
      r.bytes = c.bytes();
      r.latency_ns = c.latency_ns();
      Deliver(done, std::move(r));
    }
  }
  const grpc::Status end = stream_->Finish();
  Status why = end.ok() ? Status::IoError("the agent closed the transfer stream")
                        : FromGrpc(end).WithContext("transfer stream to " + agent_->target());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = why;
  }
  FailAll(why);
}

void TransferSession::WatchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(20));
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<uint64_t, std::function<void(TransferResult)>>> expired;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.give_up <= now) {
        expired.emplace_back(it->first, std::move(it->second.done));
        it = pending_.erase(it);
        ++delivering_;
      } else {
        ++it;
      }
    }
    if (expired.empty()) continue;
    lock.unlock();
    for (auto& [op_id, done] : expired) {
      TransferResult r;
      r.op_id = op_id;
      r.status = Status::DeadlineExceeded("no completion from agent " + agent_->target() +
                                          " by the transfer's deadline");
      Deliver(done, std::move(r));
    }
    lock.lock();
  }
}

}  // namespace braid::client
