#include "server/connection_cap.h"

#include <sys/stat.h>

#include <algorithm>

namespace braid::server {

using common::Status;

namespace {

bool Identify(int fd, dev_t* dev, ino_t* ino) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return true;
}

}  // namespace

void ConnectionCap::Prune(std::vector<Held>& held) const {
  std::erase_if(held, [](const Held& h) {
    dev_t dev;
    ino_t ino;
    return !Identify(h.fd, &dev, &ino) || dev != h.dev || ino != h.ino;
  });
}

Status ConnectionCap::Admit(int fd, uid_t uid) {
  Held h{fd, 0, 0};
  if (!Identify(fd, &h.dev, &h.ino)) {
    return Status::InvalidArgument("descriptor " + std::to_string(fd) + " is not a socket");
  }
  std::vector<Held>& held = by_uid_[uid];
  // A number already counted was closed and reused: that connection is gone.
  std::erase_if(held, [fd](const Held& other) { return other.fd == fd; });
  if (held.size() >= per_uid_) Prune(held);
  if (held.size() >= per_uid_) {
    return Status::NoResource(
        "uid " + std::to_string(uid) + " holds " + std::to_string(held.size()) +
        " connections open on the agent's " + socket_name_ + ", its limit: close idle ones, " +
        "share one per process, or raise unix_connections_per_uid (--unix-connections-per-uid)");
  }
  held.push_back(h);
  return Status::Ok();
}

}  // namespace braid::server
