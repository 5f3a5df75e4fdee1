// SessionClient: the client's side of a local session (doc/local_data_path.md): the producer of
// the submission ring and the consumer of the completion and notification rings, over a segment
// and two doorbells received from the agent.
//
// Submit copies entries in and rings the engine's doorbell only when the engine announced that it
// sleeps; Reap copies completions out (and rings the engine when submissions wait behind a full
// window while it sleeps); Wait sleeps on the client's doorbell with the same no-lost-wakeup
// protocol (it wakes for a completion or a notification). The engine takes an entry only when its
// completion is sure to find a slot, so a client that stops reaping only stops its own
// submissions. Notifications of the VQPs the session watches (Watch) come through their own ring;
// a client that stops reaping them loses its watches, not other work (ring_entry.h, kWatchEnded).
// Threading: each ring has one producer and one consumer: one thread submits, one reaps
// completions, one reaps notifications (any of them may be the same thread). Wait from the thread
// that reaps. Ownership: owns the mapping and the descriptors.
#ifndef BRAID_DATAPLANE_SESSION_SESSION_CLIENT_H_
#define BRAID_DATAPLANE_SESSION_SESSION_CLIENT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "dataplane/common/result.h"
#include "dataplane/common/unique_fd.h"
#include "dataplane/session/doorbell.h"
#include "dataplane/session/ring_entry.h"
#include "dataplane/session/session_segment.h"
#include "dataplane/session/spsc_ring.h"

namespace braid::session {

class SessionClient {
 public:
  // Takes over the three descriptors (closed with the object, also on failure).
  static common::Result<std::unique_ptr<SessionClient>> Attach(int segment_fd, int submit_bell_fd,
                                                               int complete_bell_fd);
  // Opens a session with the agent behind the session socket at `path` (session_wire.h). The
  // connection is the session: closing the client (or exiting) ends it.
  static common::Result<std::unique_ptr<SessionClient>> Connect(const std::string& path,
                                                                RingSizes sizes = {});
  // Registers `length` bytes at `offset` of the file behind `fd` (a memfd, or a file in /dev/shm
  // or on hugetlbfs, opened read-write) where they lie, granted to `grant_vqps`; returns the region
  // id. Connected clients only; the region is deregistered when the session ends (once nothing of
  // it is in flight).
  common::Result<uint64_t> RegisterFd(int fd, uint64_t offset, uint64_t length,
                                      std::span<const uint64_t> grant_vqps,
                                      const std::string& label = "");
  // The agent's id for this session (Connect; 0 for an attached one).
  uint64_t id() const { return id_; }

  // Copies up to `entries.size()` entries in; returns how many fit (the rest: submit again).
  uint32_t Submit(std::span<const SubmitEntry> entries);
  // Copies up to `out.size()` completions out; returns how many.
  uint32_t Reap(std::span<CompletionEntry> out);
  // Copies up to `out.size()` notifications out; returns how many.
  uint32_t ReapNotifications(std::span<NotifyEntry> out);
  // A kWatch entry for `vqp_id` (submit it; its completion says whether the watch began).
  static SubmitEntry Watch(uint64_t vqp_id, uint64_t user_data);
  // Sleeps until a completion or a notification is ready, the agent ends the session (its end of
  // the session socket closes), Interrupt is called or `timeout_ms` passed (-1: no limit); true
  // when a completion or a notification is ready.
  bool Wait(int timeout_ms);
  // Wakes the thread in Wait, or makes its next Wait return at once: how another thread of the
  // client stops a reaper that sleeps without a timeout. Any thread.
  void Interrupt() const { complete_bell_.Ring(); }
  // The agent ended the session (its end of the session socket closed: it stopped, or dropped
  // the session): nothing more will complete. False for an attached client. Any thread.
  bool AgentGone() const;
  // The engine broke a ring's protocol (a bad index); the session is of no further use.
  bool broken() const {
    return submissions_.broken() || completions_.broken() || notices_.broken();
  }
  uint32_t sq_entries() const { return submissions_.capacity(); }
  uint32_t cq_entries() const { return completions_.capacity(); }
  uint32_t nq_entries() const { return notices_.capacity(); }

  struct Token {
   private:
    friend class SessionClient;
    explicit Token() = default;
  };
  SessionClient(Token, std::unique_ptr<SessionSegment> segment, Doorbell submit_bell,
                Doorbell complete_bell);

 private:
  void RingEngineIfAsleep();
  common::UniqueFd socket_;  // the session socket (Connect)
  uint64_t id_ = 0;
  std::unique_ptr<SessionSegment> segment_;
  SpscRing<SubmitEntry> submissions_;      // the client produces
  SpscRing<CompletionEntry> completions_;  // the client consumes
  SpscRing<NotifyEntry> notices_;          // the client consumes
  Doorbell submit_bell_;
  Doorbell complete_bell_;
};

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_SESSION_CLIENT_H_
