// Doorbell: an eventfd one side rings to wake the other when it sleeps (spsc_ring.h says when).
//
// Ring adds one to the counter (never blocks: the counter saturates long after any sleeper woke);
// Wait blocks until the counter is non-zero or `timeout_ms` passed, and clears it. The descriptor
// travels to the other process with the session's segment.
// Threading: Ring from any thread; Wait from the one consumer. Ownership: owns the descriptor.
#ifndef BRAID_DATAPLANE_SESSION_DOORBELL_H_
#define BRAID_DATAPLANE_SESSION_DOORBELL_H_

#include "dataplane/common/result.h"

namespace braid::session {

class Doorbell {
 public:
  // A new doorbell (non-blocking, close-on-exec), or one over a received descriptor (taken over).
  static common::Result<Doorbell> Create();
  static Doorbell Adopt(int fd) { return Doorbell(fd); }

  Doorbell() = default;  // none (fd -1) until assigned
  Doorbell(Doorbell&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Doorbell& operator=(Doorbell&& other) noexcept;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;
  ~Doorbell();

  int fd() const { return fd_; }
  void Ring() const;
  // True when rung (the counter is cleared), false on timeout.
  bool Wait(int timeout_ms) const;

 private:
  explicit Doorbell(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_DOORBELL_H_
