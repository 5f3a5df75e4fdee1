#include "server/reclaimer.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "dataplane/common/named_thread.h"

namespace braid::server {

using common::StatusCode;

Reclaimer::Reclaimer(engine::Engine& engine)
    : engine_(engine), thread_(common::NamedThread("braid-reclaim", [this] { Run(); })) {}

std::vector<Reclaimer::Item> Reclaimer::Items(engine::OwnerId owner,
                                              const std::vector<uint64_t>& ids) {
  std::vector<Item> out;
  out.reserve(ids.size());
  for (uint64_t id : ids) out.push_back({owner, id});
  return out;
}

void Reclaimer::Release(engine::OwnerId owner, std::vector<uint64_t> vqps,
                        std::vector<uint64_t> regions) {
  Queue(Items(owner, vqps), Items(owner, regions));
}

void Reclaimer::ReleaseNow(engine::OwnerId owner, std::vector<uint64_t> vqps,
                           std::vector<uint64_t> regions) {
  std::vector<Item> v = Items(owner, vqps), r = Items(owner, regions);
  TryGiveBack(v, r);
  Queue(std::move(v), std::move(r));
}

void Reclaimer::Queue(std::vector<Item> vqps, std::vector<Item> regions) {
  if (vqps.empty() && regions.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    vqps_queued_.insert(vqps_queued_.end(), vqps.begin(), vqps.end());
    regions_queued_.insert(regions_queued_.end(), regions.begin(), regions.end());
  }
  cv_.notify_one();
}

void Reclaimer::TryGiveBack(std::vector<Item>& vqps, std::vector<Item>& regions) {
  auto done = [](const common::Status& s) {
    return s.code() != StatusCode::kFailedPrecondition && s.code() != StatusCode::kDeadlineExceeded;
  };
  // The VQPs first: destroying them flushes what they had in flight on the regions.
  std::erase_if(vqps, [&](const Item& v) {
    const common::Status s = engine_.DestroyVirtualQp(v.id, v.owner);
    if (s.ok()) vqps_.fetch_add(1, std::memory_order_relaxed);
    return done(s);
  });
  std::erase_if(regions, [&](const Item& r) {
    const common::Status s = engine_.DeregisterMemory(r.id, r.owner);
    if (s.ok()) regions_.fetch_add(1, std::memory_order_relaxed);
    return done(s);
  });
}

void Reclaimer::At(std::chrono::steady_clock::time_point when, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    timed_.push_back({when, std::move(task)});
  }
  cv_.notify_one();
}

void Reclaimer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

size_t Reclaimer::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return vqps_queued_.size() + regions_queued_.size() + retrying_;
}

void Reclaimer::Run() {
  // The thread's: what is queued joins them; what could not be given back yet stays.
  std::vector<Item> vqps;
  std::vector<Item> regions;
  std::vector<std::function<void()>> due;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      retrying_ = vqps.size() + regions.size();
      const auto now = std::chrono::steady_clock::now();
      auto wake = now + std::chrono::hours(1);
      if (retrying_ > 0) wake = now + std::chrono::milliseconds(kRetryMs);
      for (const Timed& t : timed_) wake = std::min(wake, t.when);
      const size_t timed = timed_.size();
      cv_.wait_until(lock, wake, [&] {
        return stopping_ || !vqps_queued_.empty() || !regions_queued_.empty() ||
               timed_.size() != timed;
      });
      if (stopping_) return;
      vqps.insert(vqps.end(), vqps_queued_.begin(), vqps_queued_.end());
      regions.insert(regions.end(), regions_queued_.begin(), regions_queued_.end());
      vqps_queued_.clear();
      regions_queued_.clear();
      std::erase_if(timed_, [&](Timed& t) {
        if (t.when > std::chrono::steady_clock::now()) return false;
        due.push_back(std::move(t.task));
        return true;
      });
    }
    for (auto& task : due) task();  // may Release: taken on the next turn
    due.clear();
    TryGiveBack(vqps, regions);
  }
}

}  // namespace braid::server
