#include "server/unix_listener.h"

#include <grpcpp/server_posix.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dataplane/common/named_thread.h"
#include "server/unix_socket.h"

namespace braid::server {

using common::Status;

Status UnixListener::Start(const std::string& path, grpc::Server* server, Authenticator* auth,
                           AuditLog* audit, uint32_t per_uid) {
  auto fd = ListenOnUnixSocket(path, SOCK_STREAM, "Unix socket");
  if (!fd.ok()) return fd.status();
  listen_fd_ = fd->release();
  path_ = path;
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) return Status::FromErrno(errno, "eventfd");
  server_ = server;
  auth_ = auth;
  audit_ = audit;
  cap_ = std::make_unique<ConnectionCap>(per_uid, "Unix socket " + path);
  thread_ = common::NamedThread("braid-unix", [this] { AcceptLoop(); });
  return Status::Ok();
}

void UnixListener::AcceptLoop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    // gRPC expects a non-blocking descriptor.
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {  // out of descriptors: do not spin on it
        spdlog::warn("msg=\"Unix socket: out of file descriptors; connection left waiting\"");
        poll(nullptr, 0, 100);
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      close(fd);
      continue;
    }
    // gRPC names a connection it is handed by its descriptor.
    const std::string peer = "fd:" + std::to_string(fd);
    if (const Status admitted = cap_->Admit(fd, cred.uid); !admitted.ok()) {
      audit_->Denied("(Unix socket)", "connection_limit", "uid:" + std::to_string(cred.uid),
                     "pid:" + std::to_string(cred.pid), std::string(admitted.message()));
      close(fd);
      continue;
    }
    auth_->RecordUnixPeer(peer, cred.uid);
    grpc::AddInsecureChannelFromFd(server_, fd);
  }
}

void UnixListener::Stop() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  listen_fd_ = stop_fd_ = -1;
  if (!path_.empty()) unlink(path_.c_str());
  path_.clear();
}

}  // namespace braid::server
