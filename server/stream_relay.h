// StreamRelay: one thread that hands what the engine delivers to the gRPC streams waiting for it.
//
// A stream (a callback-API reactor) registers a Relayed target and gets a Doorbell, which it gives
// to the queue the engine fills (an EventQueue it arms when it runs dry). When the engine rings
// it, the target joins the relay's ready list, the relay's one eventfd wakes the relay thread, and
// the thread calls target->OnReady(); the stream then writes what is queued. So streams cost no
// thread and no file descriptor each. ShutdownAll() calls OnShutdown() on every registered target.
// Threading: Add, Remove and ShutdownAll from any thread, Ring from any thread (the engine's);
// OnReady runs on the relay thread, OnShutdown on the caller's, never under the relay's lock.
// Ownership: holds targets weakly; a doorbell outlives its stream (the engine's queue holds it)
// and rings nothing once its target is gone. REQUIRES: the relay outlives every queue that holds
// one of its doorbells (the engine is stopped before the service is destroyed).
#ifndef BRAID_SERVER_STREAM_RELAY_H_
#define BRAID_SERVER_STREAM_RELAY_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dataplane/common/event_queue.h"

namespace braid::server {

class Relayed {
 public:
  virtual ~Relayed() = default;
  virtual void OnReady() = 0;
  virtual void OnShutdown() = 0;
};

class StreamRelay {
 public:
  StreamRelay();
  ~StreamRelay();
  StreamRelay(const StreamRelay&) = delete;
  StreamRelay& operator=(const StreamRelay&) = delete;

  // Registers `target` until Remove; returns the doorbell that makes the relay call it.
  std::shared_ptr<common::Doorbell> Add(const std::shared_ptr<Relayed>& target);
  void Remove(const Relayed* target);
  void ShutdownAll();
  // Targets registered (streams open).
  size_t registered() const;

 private:
  class Bell;
  void Ready(std::shared_ptr<Bell> bell);
  void Run();

  const int epoll_fd_;
  const int wake_fd_;
  const int stop_fd_;
  mutable std::mutex mu_;
  std::unordered_map<const Relayed*, std::weak_ptr<Relayed>> targets_;
  std::vector<std::shared_ptr<Bell>> ready_;
  bool signalled_ = false;  // wake_fd_ written since the relay last took the ready list
  std::thread thread_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_STREAM_RELAY_H_
