// Reclaimer: gives back what a client that went away still held.
//
// Its clients are the ended leases (Hold calls) and the ended local sessions (SessionListener).
// VQPs are destroyed first (their in-flight work completes with WR_FLUSH_ERR into nothing), then
// regions are deregistered; a region the engine still has transfers on (kFailedPrecondition) is
// tried again every kRetryMs until they have completed. What is already gone (destroyed through
// the API meanwhile) is skipped. Counts what it gave back (the agent's metrics). It also runs
// tasks at a given time (a lease's grace running out), which may queue more with Release.
// Threading: Release and the counters from any thread; one thread of its own does the work.
// Ownership: the engine is not owned and must outlive Stop (what is left at Stop goes with the
// engine, which destroys everything when it stops).
#ifndef BRAID_SERVER_RECLAIMER_H_
#define BRAID_SERVER_RECLAIMER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "dataplane/engine/engine.h"

namespace braid::server {

class Reclaimer {
 public:
  static constexpr int kRetryMs = 20;

  explicit Reclaimer(engine::Engine& engine);
  ~Reclaimer() { Stop(); }
  Reclaimer(const Reclaimer&) = delete;
  Reclaimer& operator=(const Reclaimer&) = delete;

  // Queues `owner`'s VQPs and regions to be given back (non-blocking).
  void Release(engine::OwnerId owner, std::vector<uint64_t> vqps, std::vector<uint64_t> regions);
  // Gives them back on the caller's thread (blocking on the engine), and queues what cannot go
  // yet (a region with transfers in flight): for a caller that answers only once they are gone.
  // Not from a thread that must not block (gRPC reactions).
  void ReleaseNow(engine::OwnerId owner, std::vector<uint64_t> vqps, std::vector<uint64_t> regions);
  // Runs `task` on the reclaimer's thread at `when` (or soon after); dropped at Stop.
  void At(std::chrono::steady_clock::time_point when, std::function<void()> task);
  void Stop();

  uint64_t vqps_reclaimed() const { return vqps_.load(std::memory_order_relaxed); }
  uint64_t regions_reclaimed() const { return regions_.load(std::memory_order_relaxed); }
  // VQPs and regions queued and not yet given back.
  size_t pending() const;

 private:
  struct Item {
    engine::OwnerId owner;
    uint64_t id;
  };
  struct Timed {
    std::chrono::steady_clock::time_point when;
    std::function<void()> task;
  };
  void Run();
  // One try at each: erases what was given back (or is gone already) and keeps what is to be tried
  // again (the engine did not answer in time, or a region still has transfers in flight).
  void TryGiveBack(std::vector<Item>& vqps, std::vector<Item>& regions);
  // For the thread: what is left to give back (nothing after Stop).
  void Queue(std::vector<Item> vqps, std::vector<Item> regions);
  static std::vector<Item> Items(engine::OwnerId owner, const std::vector<uint64_t>& ids);

  engine::Engine& engine_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;             // guarded by mu_
  std::vector<Item> vqps_queued_;     // guarded by mu_
  std::vector<Item> regions_queued_;  // guarded by mu_
  size_t retrying_ = 0;               // guarded by mu_: regions the thread holds for a retry
  std::vector<Timed> timed_;          // guarded by mu_
  std::atomic<uint64_t> vqps_{0};
  std::atomic<uint64_t> regions_{0};
  std::thread thread_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_RECLAIMER_H_
