// RingIdle: how an SDK thread that reaps a local session's ring waits when the ring runs dry.
// It spins a short while (more tends to follow), giving the core away between looks (on a small
// machine the engine that must produce the next completion may be waiting for it), then sleeps on
// the client's doorbell and the session socket until a completion, the agent's end of the socket
// closing or SessionClient::Interrupt (how its owner stops it) wakes it, so an idle session costs
// no wakeups; in busy-poll mode it never sleeps (and still yields between looks). Used by the
// ring transport's reader and by NotificationStream's. Threading: one per reaping thread.
#ifndef BRAID_CLIENT_SDK_SRC_RING_IDLE_H_
#define BRAID_CLIENT_SDK_SRC_RING_IDLE_H_

#include <sched.h>

#include <chrono>

#include "dataplane/session/session_client.h"

namespace braid::client::internal {

class RingIdle {
 public:
  explicit RingIdle(bool busy_poll) : busy_poll_(busy_poll) {}

  // A reap found entries.
  void Busy() { idle_since_ = std::chrono::steady_clock::now(); }
  // A reap found nothing: spins or sleeps a little. False when the agent ended the session.
  bool Idle(session::SessionClient& client) {
    if (busy_poll_ || std::chrono::steady_clock::now() - idle_since_ < kSpin) {
      sched_yield();  // spinning, the core goes to whoever is ready on it: often the agent's engine
      return true;
    }
    return client.Wait(kSleepMs) || !client.AgentGone();
  }

 private:
  // How long the reader spins on an empty ring before it sleeps.
  static constexpr auto kSpin = std::chrono::microseconds(50);
  // How long it sleeps at most: a backstop, since the doorbell, the socket and Interrupt wake it.
  static constexpr int kSleepMs = 1000;

  const bool busy_poll_;
  std::chrono::steady_clock::time_point idle_since_ = std::chrono::steady_clock::now();
};

}  // namespace braid::client::internal

#endif  // BRAID_CLIENT_SDK_SRC_RING_IDLE_H_
