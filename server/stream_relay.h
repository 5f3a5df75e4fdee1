// StreamRelay: one thread that hands what the engine delivers to the gRPC streams waiting for it.
//
// A stream (a callback-API reactor) registers the eventfd of the queue the engine fills (an
// EventQueue armed by the stream when it runs dry) with a Relayed target; when the fd turns
// readable the relay calls target->OnReady() on its thread, and the stream writes what is queued.
// So streams cost no thread each: one relay serves them all, and gRPC's own threads do the
// writing. OnShutdown() is called once per registered target by ShutdownAll().
// Threading: Add, Remove and ShutdownAll from any thread; the targets' callbacks run on the relay
// thread (OnReady) or the caller's (OnShutdown), never under the relay's lock.
// Ownership: holds shared references to the targets until they are removed.
#ifndef BRAID_SERVER_STREAM_RELAY_H_
#define BRAID_SERVER_STREAM_RELAY_H_

#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "dataplane/common/status.h"

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

  common::Status Add(int fd, std::shared_ptr<Relayed> target);
  void Remove(int fd);
  void ShutdownAll();
  size_t size() const;

 private:
  void Run();

  const int epoll_fd_;
  const int stop_fd_;
  mutable std::mutex mu_;
  std::map<int, std::shared_ptr<Relayed>> targets_;
  std::thread thread_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_STREAM_RELAY_H_
