// LeaseTable: what each open lease (a Hold call, proto/braid/v1/agent.proto) holds.
//
// A lease belongs to the owner that opened it. A VQP or region created with a lease joins it;
// destroyed through the API, it leaves it; when the lease ends (its Hold call ended: the client
// went away), End returns what it still held, for the Reclaimer to give back. An id is in at most
// one lease. Lease ids count up from 1 and are never reused.
// Threading: any thread (one mutex, held for a map operation).
#ifndef BRAID_SERVER_LEASE_TABLE_H_
#define BRAID_SERVER_LEASE_TABLE_H_

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/engine/engine_types.h"

namespace braid::server {

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

  // A new lease of `owner`; kNoResource when it has `per_owner` open.
  common::Result<uint64_t> Open(engine::OwnerId owner);
  // OK when `lease` is open and `owner`'s; NOT_FOUND otherwise (another's is not disclosed).
  common::Status Check(uint64_t lease, engine::OwnerId owner) const;
  // Puts resource `id` in `lease`; false when the lease ended since Check (the caller then gives
  // the resource back itself).
  bool Add(uint64_t lease, Kind kind, uint64_t id);
  // Resource `id` was destroyed through the API: no lease holds it any more.
  void Forget(Kind kind, uint64_t id);
  // Ends `lease`; what it still held.
  Held End(uint64_t lease);
  size_t open() const;

 private:
  struct Lease {
    engine::OwnerId owner;
    std::unordered_set<uint64_t> ids[2];  // by Kind
  };
  const uint32_t per_owner_;
  mutable std::mutex mu_;
  uint64_t next_ = 1;
  std::unordered_map<engine::OwnerId, uint32_t> open_of_;  // leases open, by owner
  std::unordered_map<uint64_t, Lease> leases_;
  std::unordered_map<uint64_t, uint64_t> lease_of_[2];  // by Kind: resource id -> lease id
};

}  // namespace braid::server

#endif  // BRAID_SERVER_LEASE_TABLE_H_
