#include "braid/transfer_session.h"

#include <filesystem>
#include <string_view>
#include <thread>

#include "client_sdk/src/transfer_transport.h"
#include "dataplane/common/named_thread.h"

namespace braid::client {

class TransferSession::Sink final : public internal::CompletionSink {
 public:
  explicit Sink(TransferSession* session) : session_(session) {}
  void Complete(TransferResult result) override { session_->OnComplete(std::move(result)); }
  void End(Status why) override { session_->OnEnd(why); }

 private:
  TransferSession* session_;
};

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
  BRAID_RETURN_IF_ERROR(agent_->Usable());
  // A VQP that does not exist (or is not the caller's) is refused now, not at the first operation.
  BRAID_RETURN_IF_ERROR(agent_->GetVqp(vqp_id_).status());
  BRAID_ASSIGN_OR_RETURN(const bool local, agent_->UseSession(options_.path));
  if (local) {
    const std::string socket = agent_->SessionSocket();
    auto ring =
        internal::OpenRingTransport(agent_, socket, options_.ring_entries, options_.busy_poll);
    if (ring.ok()) {
      transport_ = std::move(ring).value();
    } else if (options_.path == TransferPath::kRing) {
      return ring.status().WithContext("local session at " + socket);
    }
  }
  if (transport_ == nullptr) {
    BRAID_ASSIGN_OR_RETURN(transport_, internal::OpenGrpcTransport(agent_));
  }
  window_ = transport_->window();
  if (options_.max_in_flight != 0) window_ = std::min(window_, options_.max_in_flight);
  sink_ = std::make_unique<Sink>(this);
  transport_->Start(sink_.get());
  watchdog_ = common::NamedThread("braid-deadline", [this] { WatchLoop(); });
  return Status::Ok();
}

const char* TransferSession::path() const { return transport_->kind(); }

TransferSession::~TransferSession() {
  if (transport_ == nullptr) return;
  if (agent_->Inherited()) {  // its threads stayed in the parent: wait for nothing
    ForkGuard::Abandon(std::move(transport_));
    ForkGuard::Abandon(std::move(watchdog_));
    ForkGuard::ForgetWaiters(cv_);
    return;
  }
  {
    // In flight: each op ends by its deadline at the latest (the watchdog sees to it).
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return Idle(); });
    if (broken_.ok()) broken_ = Status::FailedPrecondition("the transfer session is closed");
  }
  CloseTransport();
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
  if (agent_->Inherited()) {
    for (size_t i = 0; i < ops.size(); ++i) {
      TransferResult r;
      r.status = agent_->Usable();
      done(i)(std::move(r));
    }
    return ops.size();
  }
  const auto now = std::chrono::steady_clock::now();
  auto timeout_of = [this](const TransferOp& op) {
    return op.timeout.count() != 0 ? op.timeout : options_.default_timeout;
  };
  std::vector<internal::WireOp> wire;
  size_t taken = 0;
  bool wake_watchdog = false;
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
    wire.reserve(taken);
    for (size_t i = 0; i < taken; ++i) {
      const auto timeout = timeout_of(ops[i]);
      const uint64_t op_id = next_op_id_++;
      pending_[op_id] = {done(i), now + timeout + options_.grace};
      regions_used_.insert(ops[i].local_region);  // no allocation once the region is known
      // One past what the wire holds (negative too) is sent as the most it holds, which the
      // agent refuses (at most 24 hours), rather than wrapped around into a shorter deadline.
      const int64_t ms = timeout.count();
      const uint32_t wire_ms = ms < 0 || ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
      wire.push_back({op_id, &ops[i], wire_ms});
    }
    wake_watchdog = watchdog_asleep_;
  }
  if (wake_watchdog) cv_.notify_all();
  std::vector<std::pair<uint64_t, Status>> refused;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    refused = transport_->Send(vqp_id_, wire);
  }
  for (auto& [op_id, status] : refused) {
    TransferResult r;
    r.op_id = op_id;
    r.status = std::move(status);
    OnComplete(std::move(r));
  }
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
  if (agent_->Inherited()) return agent_->Usable();
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [this] { return Idle(); })) {
    return Status::DeadlineExceeded(std::to_string(pending_.size()) + " transfers still in flight");
  }
  return Status::Ok();
}

void TransferSession::Cancel() {
  if (agent_->Inherited()) return;  // what is in flight is the parent's
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = Status::Cancelled("the transfer session was cancelled");
  }
  transport_->Cancel();
  FailAll(Status::Cancelled("the transfer session was cancelled"));
}

void TransferSession::CloseTransport() {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (!transport_closed_) transport_->Close();
  transport_closed_ = true;
}

Status TransferSession::CancelAndWait(std::chrono::milliseconds timeout) {
  if (agent_->Inherited()) return agent_->Usable();
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  Cancel();
  CloseTransport();  // the agent takes nothing more from us
  std::set<uint64_t> regions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    regions = regions_used_;
  }
  for (;;) {
    BRAID_ASSIGN_OR_RETURN(std::vector<v1::RegionInfo> listed, agent_->ListRegions());
    uint32_t busy = 0;
    for (const v1::RegionInfo& r : listed) {
      if (regions.count(r.region_id()) != 0) busy += r.in_flight();
    }
    if (busy == 0) return Status::Ok();
    if (std::chrono::steady_clock::now() >= give_up) {
      return Status::DeadlineExceeded(
          "agent " + agent_->target() + " still has " + std::to_string(busy) +
          " transfers on this session's regions: it cannot yet promise that no more bytes reach "
          "them (wait longer, or destroy the VQP)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
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

void TransferSession::OnComplete(TransferResult result) {
  std::function<void(TransferResult)> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(result.op_id);
    if (it == pending_.end()) return;  // already given up on (deadline) or cancelled
    done = std::move(it->second.done);
    pending_.erase(it);
    ++delivering_;
  }
  Deliver(done, std::move(result));
}

void TransferSession::OnEnd(const Status& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = why;
  }
  FailAll(why);
}

void TransferSession::WatchLoop() {
  // It looks every 20 ms while ops are pending; after a second with none it sleeps until Send
  // brings one, so an idle session wakes no thread, while one that keeps ops going pays no wakeup
  // per op.
  constexpr auto kTick = std::chrono::milliseconds(20);
  constexpr int kIdleTicks = 50;
  std::unique_lock<std::mutex> lock(mu_);
  int idle_ticks = 0;
  while (!stopping_) {
    idle_ticks = pending_.empty() ? idle_ticks + 1 : 0;
    if (idle_ticks > kIdleTicks) {
      watchdog_asleep_ = true;
      cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      watchdog_asleep_ = false;
      idle_ticks = 0;
      continue;
    }
    cv_.wait_for(lock, kTick);
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
