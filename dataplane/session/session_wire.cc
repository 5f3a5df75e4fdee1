#include "dataplane/session/session_wire.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace braid::session {

using common::Status;

Status SendMessage(int sock, const void* data, size_t size, std::span<const int> fds) {
  if (fds.size() > kMaxWireFds)
    return Status::InvalidArgument("too many descriptors for a message");
  iovec iov{const_cast<void*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxWireFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(size)) return Status::Ok();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return Status::IoError("the other side of the session socket is gone");
    }
    if (n < 0) return Status::FromErrno(errno, "send on the session socket");
    return Status::Internal("a session message was sent in part");
  }
}

Status ReceiveMessage(int sock, void* data, size_t size, std::vector<int>* fds) {
  fds->clear();
  iovec iov{data, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxWireFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == ECONNRESET) {
    // The other side closed with something of ours unread (an agent refusing a connection answers
    // and closes before reading the request): the reset is reported first, and what it sent
    // before closing is still queued behind it.
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && errno != ECONNRESET) n = 0;
  }
  if (n == 0 || (n < 0 && errno == ECONNRESET)) {
    return Status::IoError("the other side of the session socket closed it");
  }
  if (n < 0) return Status::FromErrno(errno, "receive on the session socket");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->push_back(fd);
    }
  }
  if (static_cast<size_t>(n) != size || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return Status::InvalidArgument("a session message of " + std::to_string(n) +
                                   " bytes (or with too many descriptors); expected " +
                                   std::to_string(size) + " bytes");
  }
  return Status::Ok();
}

common::Result<WireReply> Exchange(int sock, const WireRequest& request, int fd_out,
                                   std::vector<int>* fds) {
  const int out[1] = {fd_out};
  const Status sent =
      SendMessage(sock, &request, sizeof(request),
                  fd_out >= 0 ? std::span<const int>(out, 1) : std::span<const int>());
  if (!sent.ok() && sent.code() != common::StatusCode::kIoError) return sent;
  // Even when the send found the socket closed: an agent refusing a connection may answer and
  // close before the request goes out, and its answer is still queued here.
  WireReply reply;
  const Status got = ReceiveMessage(sock, &reply, sizeof(reply), fds);
  if (!got.ok()) return sent.ok() ? got : sent;
  // Anything but a successful reply: the descriptors it carried are closed here.
  auto fail = [fds](Status why) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return why;
  };
  if (reply.magic != kWireMagic || reply.version != kWireVersion || reply.op != request.op) {
    return fail(Status::InvalidArgument("the agent answered with a message of another kind"));
  }
  reply.message[sizeof(reply.message) - 1] = '\0';
  if (reply.code != 0) {
    return fail(Status::FromCode(static_cast<common::StatusCode>(reply.code), reply.message));
  }
  if (!sent.ok()) return fail(sent);  // an answer to a request the agent never read
  return reply;
}

}  // namespace braid::session
