// RelayLink: what the StreamRelay calls for one stream (TransferStream, WatchStream).
//
// It reaches the stream through a weak reference (the stream may be gone: then it only consumes
// the wakeup) and owns the mutex that serializes the stream's state and the consumer side of the
// queue the engine fills. OnReady disarms that queue and has the stream look at it (Kick);
// OnShutdown tells the stream the agent is stopping (Shutdown). The queue is the stream's: it is
// touched only while the stream is held alive.
// Threading: the relay's thread (OnReady) or the stopping one (OnShutdown).
#ifndef BRAID_SERVER_RELAY_LINK_H_
#define BRAID_SERVER_RELAY_LINK_H_

#include <memory>
#include <mutex>

#include "server/stream_relay.h"

namespace braid::server {

template <typename Stream, typename Queue>
struct RelayLink final : Relayed {
  void OnReady() override {
    std::shared_ptr<Stream> s;
    {
      std::lock_guard<std::mutex> lock(mu);
      // The queue belongs to the stream: touched only while the stream is held alive (a bell may
      // ring after the stream is gone, e.g. the engine's room waiters).
      s = stream.lock();
      if (s && queue != nullptr) queue->DisarmWait();
    }
    if (s) s->Kick();
  }
  void OnShutdown() override {
    std::shared_ptr<Stream> s;
    {
      std::lock_guard<std::mutex> lock(mu);
      s = stream.lock();
    }
    if (s) s->Shutdown();
  }

  std::mutex mu;  // guards the stream's state and the queue's consumer side
  std::weak_ptr<Stream> stream;
  Queue* queue = nullptr;  // set once, before the engine can fill it
};

}  // namespace braid::server

#endif  // BRAID_SERVER_RELAY_LINK_H_
