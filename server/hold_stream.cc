#include "server/hold_stream.h"

#include <spdlog/spdlog.h>

namespace braid::server {

grpc::ServerWriteReactor<v1::HoldResponse>* HoldStream::Start(StreamRelay& relay,
                                                              LeaseTable& leases,
                                                              Reclaimer& reclaimer, uint64_t lease,
                                                              std::string identity,
                                                              bool shutting_down) {
  auto stream = std::make_shared<HoldStream>(relay, leases, reclaimer, std::move(identity));
  stream->self_ = stream;
  stream->lease_ = lease;
  (void)relay.Add(stream);  // ShutdownAll reaches it; it rings nothing
  if (shutting_down) {
    stream->End("the agent is shutting down");
    return stream.get();
  }
  stream->response_.set_lease_id(stream->lease_);
  {
    std::lock_guard<std::mutex> lock(stream->mu_);
    stream->writing_ = true;
  }
  stream->StartWrite(&stream->response_);
  return stream.get();
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
  Finish({grpc::StatusCode::CANCELLED, std::string("the lease ended: ") + ending_});
}

void HoldStream::OnDone() {
  LeaseTable::Held held = leases_.End(lease_);
  if (!held.vqps.empty() || !held.regions.empty()) {
    spdlog::info(
        "lease={} identity=\"{}\" msg=\"its Hold call ended: giving back {} VQPs and {} "
        "regions\"",
        lease_, identity_, held.vqps.size(), held.regions.size());
  }
  reclaimer_.Release(held.owner, std::move(held.vqps), std::move(held.regions));
  relay_.Remove(this);
  std::shared_ptr<HoldStream> last = std::move(self_);  // may free this on return
}

}  // namespace braid::server
