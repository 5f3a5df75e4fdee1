// FdBudget: admission against the process's file-descriptor limit.
//
// Soft NICs hold a descriptor per pair of NICs they connect, and a QP being connected may be the
// first of its pair (a VQP not yet connected is counted at its most); a process at its limit can
// no longer accept a gRPC connection or open a region file, and its control plane stops
// answering. FdBudget keeps a
// reserve below the soft limit for that: work that would eat into it is refused up front with a
// message naming the limit, instead of failing later with EMFILE somewhere else.
// RaiseSoftLimit lifts the soft limit to the hard one (as a server should at start).
// Threading: one owner (the engine thread). Admit reads /proc (the descriptor table's size, and
// near the limit the descriptors themselves): slow paths only.
#ifndef BRAID_DATAPLANE_ENGINE_FD_BUDGET_H_
#define BRAID_DATAPLANE_ENGINE_FD_BUDGET_H_

#include <cstdint>
#include <string>

#include "dataplane/common/result.h"

namespace braid::engine {

class FdBudget {
 public:
  struct Limits {
    uint64_t soft = 0;
    uint64_t hard = 0;
  };
  // Sets the soft limit to the hard one; returns the limits before and after.
  static common::Result<std::pair<Limits, Limits>> RaiseSoftLimit();
  static Limits Current();
  // Descriptors open in this process now.
  static common::Result<uint64_t> CountOpen();
  // The size of this process's descriptor table (FDSize in /proc/self/status): at least one more
  // than the highest open descriptor, so at least the count (UINT64_MAX when unknown).
  static uint64_t TableSize();

  explicit FdBudget(uint32_t reserve) : reserve_(reserve) {}

  // Whether `needed` more descriptors (on top of `promised`, not yet opened) leave the reserve
  // free; kNoResource naming the limit when not. `what` names the request ("this VQP").
  common::Status Admit(uint64_t needed, uint64_t promised, const std::string& what) const;
  uint32_t reserve() const { return reserve_; }
  // Whether the limit leaves at least kMinUsable descriptors above the reserve (checked at start:
  // a reserve as large as the limit would refuse every VQP, region and session); InvalidArgument
  // naming both when not.
  common::Status CheckRoom() const;
  static constexpr uint64_t kMinUsable = 64;

 private:
  uint32_t reserve_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_FD_BUDGET_H_
