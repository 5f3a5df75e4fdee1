#include "server/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dataplane/common/quote.h"

namespace braid::server {

using common::Status;

namespace {

// Clears the way for binding `addr`: nothing there, or a socket nobody serves on any more
// (removed). Anything else is refused.
Status ClaimPath(const sockaddr_un& addr, int type, const std::string& what) {
  const std::string path = addr.sun_path;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? Status::Ok() : Status::FromErrno(errno, "stat " + what + " " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::FailedPrecondition(what + " path " + common::Quote(path) +
                                      " exists and is not a socket: remove it or give another "
                                      "path");
  }
  common::UniqueFd probe(socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return Status::FromErrno(errno, what);
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno == ECONNREFUSED) {
    unlink(path.c_str());  // left by an earlier run: nobody listens on it
    return Status::Ok();
  }
  // Accepted, or the backlog is full (EAGAIN), or a live socket of another kind (EPROTOTYPE).
  return Status::FailedPrecondition(
      "another process serves on " + what + " " + common::Quote(path) +
      " (a second braidd with the same config?): stop it or give another path");
}

}  // namespace

common::Result<common::UniqueFd> ListenOnUnixSocket(const std::string& path, int type,
                                                    std::string_view what_view) {
  const std::string what(what_view);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument(what + " path " + common::Quote(path) +
                                   " is empty or longer than " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (Status s = ClaimPath(addr, type, what); !s.ok()) return s;
  common::UniqueFd fd(socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::FromErrno(errno, what);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::FromErrno(errno, "bind " + what + " " + path);
  }
  chmod(path.c_str(), 0660);
  if (listen(fd.get(), 128) != 0) return Status::FromErrno(errno, "listen on " + path);
  return fd;
}

}  // namespace braid::server
