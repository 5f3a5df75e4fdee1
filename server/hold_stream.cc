#include "server/hold_stream.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "server/log_sink.h"
#include "server/proto_mapping.h"

namespace braid::server {

void HoldStream::GiveBack(LeaseTable::Held held, uint64_t lease, const std::string& identity,
                          Reclaimer& reclaimer, bool now) {
  if (!held.vqps.empty() || !held.regions.empty()) {
    spdlog::info(
        "lease={} identity=\"{}\" msg=\"the lease ended: giving back {} VQPs and {} regions\"",
        lease, LogValue(identity), held.vqps.size(), held.regions.size());
  }
  if (now) {
    reclaimer.ReleaseNow(held.owner, std::move(held.vqps), std::move(held.regions));
  } else {
    reclaimer.Release(held.owner, std::move(held.vqps), std::move(held.regions));
  }
}

grpc::ServerWriteReactor<v1::HoldResponse>* HoldStream::Start(StreamRelay& relay,
                                                              LeaseTable& leases,
                                                              Reclaimer& reclaimer, Params params) {
  auto stream = std::make_shared<HoldStream>(relay, leases, reclaimer, std::move(params));
  stream->self_ = stream;
  (void)relay.Add(stream);  // ShutdownAll reaches it; it rings nothing
  const Params& p = stream->params_;
  if (p.shutting_down) {
    stream->Refuse({grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"});
    return stream.get();
  }
  common::Result<LeaseTable::Ticket> ticket =
      p.resume != 0 ? leases.Resume(p.resume, p.owner, stream) : leases.Open(p.owner, stream);
  if (!ticket.ok()) {
    stream->Refuse(p.resume != 0 ? ToGrpc(ticket.status())
                                 : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                                p.identity + " has " + std::to_string(p.per_owner) +
                                                    " leases open, its limit "
                                                    "(max_leases_per_caller): end one before "
                                                    "opening another (a client needs only one)"));
    return stream.get();
  }
  stream->ticket_ = *ticket;
  stream->response_.set_lease_id(ticket->lease);
  stream->response_.set_grace_ms(p.grace_ms);
  {
    std::lock_guard<std::mutex> lock(stream->mu_);
    stream->writing_ = true;
  }
  stream->StartWrite(&stream->response_);
  return stream.get();
}

void HoldStream::Refuse(grpc::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ending_ = "refused";
    finished_ = true;
  }
  Finish(std::move(status));
}

void HoldStream::OnWriteDone(bool ok) {
  const char* why = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    why = ending_ != nullptr ? ending_ : ok ? nullptr : "client went away";
  }
  if (why != nullptr) End(why);
}

void HoldStream::End(const char* why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ending_ == nullptr) ending_ = why;
    if (writing_ || finished_) return;  // OnWriteDone ends it
    finished_ = true;
  }
  Finish({grpc::StatusCode::CANCELLED, std::string("the Hold call ended: ") + ending_});
}

void HoldStream::OnDone() {
  if (ticket_.lease != 0) {
    const bool keep = params_.grace_ms > 0;
    LeaseTable::Held held = leases_.CallEnded(ticket_, keep);
    if (keep) {
      // The lease waits out its grace; a call may take it over meanwhile.
      reclaimer_.At(std::chrono::steady_clock::now() + std::chrono::milliseconds(params_.grace_ms),
                    [&leases = leases_, &reclaimer = reclaimer_, ticket = ticket_,
                     identity = params_.identity] {
                      GiveBack(leases.Expire(ticket), ticket.lease, identity, reclaimer);
                    });
    } else {
      GiveBack(std::move(held), ticket_.lease, params_.identity, reclaimer_);
    }
  }
  relay_.Remove(this);
  std::shared_ptr<HoldStream> last = std::move(self_);  // may free this on return
}

}  // namespace braid::server
