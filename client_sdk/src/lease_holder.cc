#include "lease_holder.h"

#include "braid/agent_client.h"

namespace braid::client {

common::Result<std::unique_ptr<LeaseHolder>> LeaseHolder::Open(v1::Agent::Stub& stub,
                                                               const std::string& target,
                                                               std::chrono::milliseconds timeout) {
  std::unique_ptr<LeaseHolder> h(new LeaseHolder(target));
  stub.async()->Hold(&h->context_, &h->request_, h.get());
  h->StartRead(&h->response_);
  h->StartCall();
  std::unique_lock<std::mutex> lock(h->mu_);
  if (!h->cv_.wait_for(lock, timeout, [&] { return h->lease_ != 0 || h->done_; })) {
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

LeaseHolder::~LeaseHolder() {
  context_.TryCancel();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return done_; });
}

Status LeaseHolder::Ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!done_) return Status::Ok();
  return Status::FailedPrecondition(
      "the lease of this connection to agent " + target_ + " ended (" + status_.error_message() +
      "): what it held was given back; open a new client to create more");
}

void LeaseHolder::OnReadDone(bool ok) {
  if (!ok) return;  // the call is ending: OnDone follows
  {
    std::lock_guard<std::mutex> lock(mu_);
    lease_ = response_.lease_id();
  }
  cv_.notify_all();
  StartRead(&response_);  // completes (not ok) when the call ends
}

void LeaseHolder::OnDone(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = true;
  status_ = status;
  cv_.notify_all();  // under the lock: the destructor may run as soon as it is released
}

}  // namespace braid::client
