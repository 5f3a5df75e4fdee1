// HoldStream: a Hold call (proto/braid/v1/agent.proto) on gRPC's callback API.
//
// Opens a lease in the LeaseTable and writes its id; then the call stays open, writing nothing,
// until the client cancels it, exits or is killed, its connection drops, or the agent shuts down.
// When it ends (OnDone), the lease ends and what it still held goes to the Reclaimer. No thread or
// descriptor of its own; the StreamRelay knows it only to end it at shutdown.
// Threading: gRPC's reactions and the stopping thread, serialized by one mutex never held while
// calling into gRPC. Ownership: keeps itself alive until OnDone; the relay holds it weakly. The
// table, reclaimer and relay outlive every Hold call (the service's).
#ifndef BRAID_SERVER_HOLD_STREAM_H_
#define BRAID_SERVER_HOLD_STREAM_H_

#include <memory>
#include <mutex>
#include <string>

#include "braid/v1/agent.grpc.pb.h"
#include "server/lease_table.h"
#include "server/reclaimer.h"
#include "server/stream_relay.h"

namespace braid::server {

class HoldStream final : public grpc::ServerWriteReactor<v1::HoldResponse>,
                         public Relayed,
                         public std::enable_shared_from_this<HoldStream> {
 public:
  // Starts the call of `lease` (open in `leases`; its owner is named `identity` in the log).
  static grpc::ServerWriteReactor<v1::HoldResponse>* Start(StreamRelay& relay, LeaseTable& leases,
                                                           Reclaimer& reclaimer, uint64_t lease,
                                                           std::string identity,
                                                           bool shutting_down);

  HoldStream(StreamRelay& relay, LeaseTable& leases, Reclaimer& reclaimer, std::string identity)
      : relay_(relay), leases_(leases), reclaimer_(reclaimer), identity_(std::move(identity)) {}

  void OnReady() override {}
  void OnShutdown() override { End("the agent is shutting down"); }
  void OnWriteDone(bool ok) override;
  void OnCancel() override { End("cancelled"); }
  void OnDone() override;

 private:
  // Finishes the call (CANCELLED, `why`) once no write is outstanding.
  void End(const char* why);

  StreamRelay& relay_;
  LeaseTable& leases_;
  Reclaimer& reclaimer_;
  const std::string identity_;
  uint64_t lease_ = 0;
  v1::HoldResponse response_;
  std::shared_ptr<HoldStream> self_;  // until OnDone
  std::mutex mu_;
  bool writing_ = false;          // guarded by mu_
  const char* ending_ = nullptr;  // guarded by mu_: why the call is to end
  bool finished_ = false;         // guarded by mu_
};

}  // namespace braid::server

#endif  // BRAID_SERVER_HOLD_STREAM_H_
