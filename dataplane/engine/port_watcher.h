// PortWatcher: reads every device's port once a period, on a thread of its own, and hands the
// readings to `deliver` (the engine runs them as a command: Engine::FollowPorts).
//
// A port query may be slow, and the data-plane thread must never wait for one: a soft NIC's walks
// the host's interfaces (getifaddrs: 2.9 ms with 500 of them, as on a node full of pods' veths,
// once a second per NIC), and an HCA's ioctl may wait on a device that is being reset.
// Threading: Read() from any thread; the watcher's own thread ("braid-ports") queries the devices
// and calls `deliver`. Ownership: the devices are not owned and must outlive the watcher (its
// destructor joins the thread). Devices' QueryPortActive must be safe beside the data-plane
// thread's use of them (verbs::Device says so).
#ifndef BRAID_DATAPLANE_ENGINE_PORT_WATCHER_H_
#define BRAID_DATAPLANE_ENGINE_PORT_WATCHER_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/verbs/provider.h"

namespace braid::engine {

class PortWatcher {
 public:
  using Readings = std::vector<common::Result<bool>>;  // one per device, in the devices' order

  PortWatcher(std::vector<verbs::Device*> devices, std::chrono::milliseconds period,
              std::function<void(Readings)> deliver);
  ~PortWatcher();
  PortWatcher(const PortWatcher&) = delete;
  PortWatcher& operator=(const PortWatcher&) = delete;

  // Each device's port now (QueryPortActive).
  static Readings Read(const std::vector<verbs::Device*>& devices);

 private:
  void Loop();

  const std::vector<verbs::Device*> devices_;
  const std::chrono::milliseconds period_;
  const std::function<void(Readings)> deliver_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_PORT_WATCHER_H_
