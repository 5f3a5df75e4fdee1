#include "dataplane/session/doorbell.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace braid::session {

common::Result<Doorbell> Doorbell::Create() {
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return common::Status::IoError(std::string("eventfd: ") + std::strerror(errno));
  return Doorbell(fd);
}

Doorbell& Doorbell::operator=(Doorbell&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

Doorbell::~Doorbell() {
  if (fd_ >= 0) close(fd_);
}

void Doorbell::Ring() const {
  const uint64_t one = 1;
  // EAGAIN: the counter is at its maximum, so the sleeper is woken anyway.
  (void)!write(fd_, &one, sizeof(one));
}

bool Doorbell::Wait(int timeout_ms) const {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  uint64_t count = 0;
  return read(fd_, &count, sizeof(count)) == static_cast<ssize_t>(sizeof(count));
}

}  // namespace braid::session
