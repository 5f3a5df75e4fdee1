#include "lease_holder.h"

#include <grpcpp/alarm.h>

#include <memory>
#include <mutex>

#include "braid/agent_client.h"

namespace braid::client {

// One Hold call. Lives until the holder goes (the holder keeps every call it made).
class LeaseHolder::Call final : public grpc::ClientReadReactor<v1::HoldResponse> {
 public:
  Call(LeaseHolder& holder, uint64_t resume) : holder_(holder) {
    request_.set_resume_lease_id(resume);
    // A resume waits for the agent to be reachable again (no deadline: the call is the lease's
    // from then on; the alarm gives up on it).
    if (resume != 0) context_.set_wait_for_ready(true);
    pending_->context = &context_;
  }
  // Starts the call; a resume not granted by `until` is cancelled.
  void Start(v1::Agent::Stub& stub, std::chrono::system_clock::time_point until) {
    stub.async()->Hold(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
    if (request_.resume_lease_id() == 0) return;
    // The alarm's callback may run after OnDone (even after this call is gone): it reaches the
    // call only through `pending_`, which OnDone clears.
    give_up_.Set(until, [pending = pending_](bool fired) {
      std::lock_guard<std::mutex> lock(pending->mu);
      if (fired && pending->context != nullptr && !pending->granted) pending->context->TryCancel();
    });
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the call is ending: OnDone follows
    {
      std::lock_guard<std::mutex> lock(pending_->mu);
      pending_->granted = true;
    }
    holder_.Granted(response_.lease_id(), response_.grace_ms());
    StartRead(&response_);  // completes (not ok) when the call ends
  }
  void OnDone(const grpc::Status& status) override {
    bool granted = false;
    {
      std::lock_guard<std::mutex> lock(pending_->mu);
      pending_->context = nullptr;
      granted = pending_->granted;
    }
    give_up_.Cancel();
    holder_.CallEnded(status, granted);
  }

 private:
  LeaseHolder& holder_;
  grpc::ClientContext context_;
  v1::HoldRequest request_;
  v1::HoldResponse response_;
  struct Pending {
    std::mutex mu;
    grpc::ClientContext* context = nullptr;  // guarded by mu: null once the call is done
    bool granted = false;                    // guarded by mu
  };
  std::shared_ptr<Pending> pending_ = std::make_shared<Pending>();
  grpc::Alarm give_up_;
};

common::Result<std::unique_ptr<LeaseHolder>> LeaseHolder::Open(v1::Agent::Stub& stub,
                                                               const std::string& target,
                                                               std::chrono::milliseconds timeout) {
  auto h = std::make_unique<LeaseHolder>(stub, target);
  h->StartCall();
  std::unique_lock<std::mutex> lock(h->mu_);
  if (!h->cv_.wait_for(lock, timeout, [&] { return h->lease_ != 0 || h->ended_; })) {
    return Status::DeadlineExceeded("agent " + target + " did not open a lease (Hold) within " +
                                    std::to_string(timeout.count()) + " ms");
  }
  if (h->lease_ == 0) {
    const Status why = FromGrpc(h->status_);
    return Status::FailedPrecondition(
        "agent " + target + " did not open a lease (Hold): " + std::string(why.message()));
  }
  return h;
}

LeaseHolder::LeaseHolder(v1::Agent::Stub& stub, std::string target)
    : stub_(stub), target_(std::move(target)) {}

void LeaseHolder::StartCall() {
  Call* call = nullptr;
  bool closing = false;
  std::chrono::system_clock::time_point until;
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::make_unique<Call>(*this, lease_));
    call = calls_.back().get();
    open_ = true;
    closing = closing_;  // the destructor may have looked at the call before this one
    until = resume_until_;
  }
  call->Start(stub_, until);
  if (closing) call->Cancel();
}

LeaseHolder::~LeaseHolder() { (void)Close(false, std::chrono::seconds(1)); }

Status LeaseHolder::End(std::chrono::milliseconds timeout) { return Close(true, timeout); }

Status LeaseHolder::Close(bool give_back, std::chrono::milliseconds timeout) {
  Call* open = nullptr;
  bool tell = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closing_) {
      closing_ = true;
      if (open_) open = calls_.back().get();
      // Ending the call alone would leave a lease with a grace to run out its grace.
      tell = lease_ != 0 && !ended_ && (give_back || grace_ms_ > 0);
      ended_here_ = give_back && !ended_;
    }
  }
  Status told = Status::Ok();
  if (tell) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::EndLeaseRequest request;
    request.set_lease_id(lease_);
    v1::EndLeaseResponse response;
    const grpc::Status s = stub_.EndLease(&context, request, &response);
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {  // NOT_FOUND: already gone
      told = Status::IoError("agent " + target_ + " was not told to end the lease (" +
                             s.error_message() + "): it gives it back once it notices the " +
                             "client went");
    }
  }
  if (open != nullptr) open->Cancel();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !open_; });
  return told;
}

Status LeaseHolder::Ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ended_) return Status::Ok();
  if (ended_here_) {
    return Status::FailedPrecondition("this client ended its lease with agent " + target_ +
                                      " (EndHold): open a new client to create more");
  }
  return Status::FailedPrecondition(
      "the lease of this connection to agent " + target_ + " ended (" + status_.error_message() +
      "): what it held was given back; open a new client to create more");
}

void LeaseHolder::Granted(uint64_t lease, uint32_t grace_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lease_ == 0) lease_ = lease;  // a resume grants the same lease
    grace_ms_ = grace_ms;
  }
  cv_.notify_all();
}

void LeaseHolder::CallEnded(const grpc::Status& status, bool was_granted) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A dropped connection (UNAVAILABLE) within the grace: take the lease over with a new call.
    // The grace counts from the drop of the call that held the lease.
    const auto now = std::chrono::system_clock::now();
    if (was_granted) resume_until_ = now + std::chrono::milliseconds(grace_ms_);
    const bool resume = !closing_ && lease_ != 0 && grace_ms_ > 0 &&
                        status.error_code() == grpc::StatusCode::UNAVAILABLE && now < resume_until_;
    if (!resume) {
      open_ = false;
      ended_ = true;
      status_ = status;
      cv_.notify_all();  // under the lock: the destructor may run as soon as it is released
      return;
    }
  }
  StartCall();
}

}  // namespace braid::client
