// HoldStream: a Hold call (proto/braid/v1/agent.proto) on gRPC's callback API.
//
// Opens a lease in the LeaseTable (or takes one over: resume_lease_id) and writes its id and
// grace; then the call stays open, writing nothing, until the client cancels it, exits or is
// killed, its connection drops, another call takes the lease over, or the agent shuts down. When
// it ends (OnDone), the lease ends and what it still held goes to the Reclaimer; with a grace
// period, that happens when the grace runs out unless a call took the lease over by then. No
// thread or descriptor of its own; the StreamRelay knows it only to end it at shutdown.
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
                         public LeaseCall,
                         public std::enable_shared_from_this<HoldStream> {
 public:
  struct Params {
    engine::OwnerId owner = engine::kAnyOwner;
    std::string identity;        // the owner's, for the log
    uint64_t resume = 0;         // the lease to take over; 0: a new one
    uint32_t grace_ms = 0;       // how long the lease outlives the call
    uint32_t per_owner = 0;      // the leases an owner may have (for the refusal's message)
    bool shutting_down = false;  // the agent is stopping: the call ends at once
  };
  // What an ended lease still held goes to `reclaimer` (logged when anything); `now`: given back
  // on the caller's thread before this returns, but for regions with transfers in flight
  // (Reclaimer::ReleaseNow; only where blocking is allowed).
  static void GiveBack(LeaseTable::Held held, uint64_t lease, const std::string& identity,
                       Reclaimer& reclaimer, bool now = false);
  // Starts the call; a refused one (limit reached, a lease not to be resumed) ends at once.
  static grpc::ServerWriteReactor<v1::HoldResponse>* Start(StreamRelay& relay, LeaseTable& leases,
                                                           Reclaimer& reclaimer, Params params);

  HoldStream(StreamRelay& relay, LeaseTable& leases, Reclaimer& reclaimer, Params params)
      : relay_(relay), leases_(leases), reclaimer_(reclaimer), params_(std::move(params)) {}

  void OnReady() override {}
  void OnShutdown() override { End("the agent is shutting down"); }
  void OnWriteDone(bool ok) override;
  void OnCancel() override { End("cancelled"); }
  void OnDone() override;
  void Release(const char* why) override { End(why); }

 private:
  // Finishes the call (CANCELLED, `why`) once no write is outstanding.
  void End(const char* why);
  // Finishes the call with `status` (nothing written; no lease was opened).
  void Refuse(grpc::Status status);

  StreamRelay& relay_;
  LeaseTable& leases_;
  Reclaimer& reclaimer_;
  const Params params_;
  LeaseTable::Ticket ticket_;  // lease 0: none was opened
  v1::HoldResponse response_;
  std::shared_ptr<HoldStream> self_;  // until OnDone
  std::mutex mu_;
  bool writing_ = false;          // guarded by mu_
  const char* ending_ = nullptr;  // guarded by mu_: why the call is to end
  bool finished_ = false;         // guarded by mu_
};

}  // namespace braid::server

#endif  // BRAID_SERVER_HOLD_STREAM_H_
