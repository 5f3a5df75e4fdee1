// CallerBudget: how many entries one caller's streams may have the agent hold for them together.
//
// What a stream queues for its client stays in the agent until the client reads it: a Transfer
// stream's results (up to its window, about 170 bytes an operation with gRPC's copy of the
// response it cannot deliver) and a WatchNotifications stream's backlog (up to its capacity, 40
// bytes a notification). A caller that opens many streams and reads nothing made the agent hold
// all of it: 1,000 Transfer streams with a full window of 1,024 took 194 MB, which the allocator
// then kept, and more streams meant more, until the agent, and every other caller with it, ran
// out of memory. So each stream's size is taken from its caller's budget when the stream starts:
// the full size while the budget has that much left, what is left otherwise, and `floor` once
// nothing is (a stream always moves). It is given back when the lease is destroyed, with its
// stream.
// Threading: any thread (one mutex, held for a map lookup). Ownership: a Lease holds the budget's
// state, so it may outlive the CallerBudget.
#ifndef BRAID_SERVER_CALLER_BUDGET_H_
#define BRAID_SERVER_CALLER_BUDGET_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "dataplane/engine/engine_types.h"

namespace braid::server {

class CallerBudget {
 public:
  // `full`: one stream's size; `per_caller`: the sizes of one caller's open streams together;
  // `floor` (at most `full`): a stream's size once its caller's budget is spent (not counted).
  CallerBudget(uint32_t full, uint32_t per_caller, uint32_t floor);

  // One stream's size, taken from its caller's budget until destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    uint32_t size() const { return size_; }

   private:
    friend class CallerBudget;
    struct State;
    void Return();
    std::shared_ptr<State> state_;
    engine::OwnerId owner_ = engine::kAnyOwner;
    uint32_t size_ = 0;
    uint32_t taken_ = 0;  // from the budget (0 for a stream past it)
  };

  Lease Take(engine::OwnerId owner);

 private:
  const uint32_t full_;
  const uint32_t per_caller_;
  const uint32_t floor_;
  std::shared_ptr<Lease::State> state_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_CALLER_BUDGET_H_
