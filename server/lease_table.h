// LeaseTable: what each open lease (a Hold call, proto/braid/v1/agent.proto) holds.
//
// A lease belongs to the owner that opened it. A VQP or region created with a lease joins it;
// destroyed through the API, it leaves it; when the lease ends, End returns what it still held,
// for the Reclaimer to give back. An id is in at most one lease. Lease ids are random (63 bits
// from the kernel's generator, never 0): a client resuming its lease after the agent restarted
// finds none, rather than another client's lease that got the same number, and no client can
// guess another's.
//
// A lease is held by one Hold call at a time. When that call ends, the lease ends with it, or,
// with a grace period, waits detached: a Hold call of the same owner naming it takes it over
// (Resume), and Expire ends it if none did. Resume also takes a lease over from a call still
// open (a client often sees its connection drop before the agent does); the older call is told
// (LeaseCall::Release) and its end then changes nothing. End ends a lease at its owner's word. A
// ticket names the lease and the call. Threading: any thread (one mutex, held for a map operation;
// LeaseCall::Release is called without it).
#ifndef BRAID_SERVER_LEASE_TABLE_H_
#define BRAID_SERVER_LEASE_TABLE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/engine/engine_types.h"

namespace braid::server {

// The Hold call holding a lease, told when another call took the lease over or the lease ended.
class LeaseCall {
 public:
  virtual ~LeaseCall() = default;
  // The lease was taken over by another call, or ended (`why`): the call ends.
  virtual void Release(const char* why) = 0;
};

class LeaseTable {
 public:
  explicit LeaseTable(uint32_t per_owner) : per_owner_(per_owner) {}

  enum class Kind : uint8_t { kVqp, kRegion };
  // What an ended lease still held.
  struct Held {
    engine::OwnerId owner = engine::kAnyOwner;
    std::vector<uint64_t> vqps;
    std::vector<uint64_t> regions;
  };

  struct Ticket {
    uint64_t lease = 0;
    uint64_t call = 0;  // which of the lease's calls
  };

  // A new lease of `owner`, held by `call`; kNoResource when it has `per_owner` open.
  common::Result<Ticket> Open(engine::OwnerId owner, std::weak_ptr<LeaseCall> call);
  // `call` takes over `lease` (`owner`'s, open); NOT_FOUND otherwise. The call that held it
  // is told.
  common::Result<Ticket> Resume(uint64_t lease, engine::OwnerId owner,
                                std::weak_ptr<LeaseCall> call);
  // OK when `lease` is open and `owner`'s; NOT_FOUND otherwise (another's is not disclosed).
  common::Status Check(uint64_t lease, engine::OwnerId owner) const;
  // Puts resource `id` in `lease`; false when the lease ended since Check (the caller then gives
  // the resource back itself).
  bool Add(uint64_t lease, Kind kind, uint64_t id);
  // Resource `id` was destroyed through the API: no lease holds it any more.
  void Forget(Kind kind, uint64_t id);
  // The call of `ticket` ended. Unless another call took the lease over: with `keep` the lease
  // waits detached (nothing returned), otherwise it ends and what it still held is returned.
  Held CallEnded(Ticket ticket, bool keep);
  // The grace of `ticket`'s call is over: the lease ends unless a call took it over since.
  Held Expire(Ticket ticket);
  // Ends `lease` (`owner`'s) now; what it held. NOT_FOUND when it is not open or not `owner`'s.
  // The call holding it is told.
  common::Result<Held> End(uint64_t lease, engine::OwnerId owner);
  size_t open() const;

 private:
  struct Lease {
    engine::OwnerId owner;
    std::unordered_set<uint64_t> ids[2];  // by Kind
    uint64_t call = 0;                    // the call holding it, or the last one
    bool detached = false;                // its last call ended: waiting out the grace
    std::weak_ptr<LeaseCall> holder;
  };
  Held EndLocked(std::unordered_map<uint64_t, Lease>::iterator it);
  const uint32_t per_owner_;
  mutable std::mutex mu_;
  uint64_t next_call_ = 1;
  std::unordered_map<engine::OwnerId, uint32_t> open_of_;  // leases open, by owner
  std::unordered_map<uint64_t, Lease> leases_;
  std::unordered_map<uint64_t, uint64_t> lease_of_[2];  // by Kind: resource id -> lease id
};

}  // namespace braid::server

#endif  // BRAID_SERVER_LEASE_TABLE_H_
