#include "dataplane/engine/port_watcher.h"

#include <utility>

#include "dataplane/common/named_thread.h"

namespace braid::engine {

PortWatcher::PortWatcher(std::vector<verbs::Device*> devices, std::chrono::milliseconds period,
                         std::function<void(Readings)> deliver)
    : devices_(std::move(devices)), period_(period), deliver_(std::move(deliver)) {
  thread_ = common::NamedThread("braid-ports", [this] { Loop(); });
}

PortWatcher::~PortWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

PortWatcher::Readings PortWatcher::Read(const std::vector<verbs::Device*>& devices) {
  Readings out;
  out.reserve(devices.size());
  for (verbs::Device* d : devices) out.push_back(d->QueryPortActive());
  return out;
}

void PortWatcher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, period_, [this] { return stop_; })) {
    lock.unlock();
    deliver_(Read(devices_));
    lock.lock();
  }
}

}  // namespace braid::engine
