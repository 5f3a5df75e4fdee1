#include "dataplane/session/session_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <utility>
#include <vector>

#include "dataplane/session/session_wire.h"

namespace braid::session {

common::Result<std::unique_ptr<SessionClient>> SessionClient::Attach(int segment_fd,
                                                                     int submit_bell_fd,
                                                                     int complete_bell_fd) {
  Doorbell submit = Doorbell::Adopt(submit_bell_fd);
  Doorbell complete = Doorbell::Adopt(complete_bell_fd);
  BRAID_ASSIGN_OR_RETURN(std::unique_ptr<SessionSegment> segment,
                         SessionSegment::Attach(segment_fd));
  return std::make_unique<SessionClient>(Token(), std::move(segment), std::move(submit),
                                         std::move(complete));
}

common::Result<std::unique_ptr<SessionClient>> SessionClient::Connect(const std::string& path,
                                                                      RingSizes sizes) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return common::Status::InvalidArgument("session socket path is longer than " +
                                           std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  common::UniqueFd sock(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return common::Status::FromErrno(errno, "session socket");
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return common::Status::FromErrno(errno, "connect to the agent's session socket " + path);
  }
  WireRequest request;
  request.op = static_cast<uint16_t>(WireOp::kOpenSession);
  request.sq_entries = sizes.sq;
  request.cq_entries = sizes.cq;
  request.nq_entries = sizes.nq;
  std::vector<int> fds;
  BRAID_ASSIGN_OR_RETURN(WireReply reply, Exchange(sock.get(), request, -1, &fds));
  if (fds.size() != 3) {
    for (int fd : fds) close(fd);
    return common::Status::InvalidArgument("the agent opened a session but sent " +
                                           std::to_string(fds.size()) + " descriptors, not 3");
  }
  BRAID_ASSIGN_OR_RETURN(std::unique_ptr<SessionClient> client, Attach(fds[0], fds[1], fds[2]));
  client->socket_ = std::move(sock);
  client->id_ = reply.id;
  return client;
}

common::Result<uint64_t> SessionClient::RegisterFd(int fd, uint64_t offset, uint64_t length,
                                                   std::span<const uint64_t> grant_vqps,
                                                   const std::string& label) {
  if (!socket_.valid()) {
    return common::Status::FailedPrecondition("RegisterFd needs a connected session (Connect)");
  }
  if (grant_vqps.size() > kMaxWireGrants) {
    return common::Status::InvalidArgument("at most " + std::to_string(kMaxWireGrants) +
                                           " VQPs can be granted at registration");
  }
  WireRequest request;
  if (label.size() >= sizeof(request.label)) {  // it was cut to fit, silently
    return common::Status::InvalidArgument(
        "a label given with RegisterFd has at most " + std::to_string(sizeof(request.label) - 1) +
        " bytes (the session socket's request carries it), not " + std::to_string(label.size()));
  }
  request.op = static_cast<uint16_t>(WireOp::kRegisterFd);
  request.fd_offset = offset;
  request.length = length;
  request.num_grants = static_cast<uint32_t>(grant_vqps.size());
  for (size_t i = 0; i < grant_vqps.size(); ++i) request.grant_vqps[i] = grant_vqps[i];
  std::strncpy(request.label, label.c_str(), sizeof(request.label) - 1);
  std::vector<int> fds;
  BRAID_ASSIGN_OR_RETURN(WireReply reply, Exchange(socket_.get(), request, fd, &fds));
  for (int extra : fds) close(extra);
  return reply.id;
}

SessionClient::SessionClient(Token, std::unique_ptr<SessionSegment> segment, Doorbell submit_bell,
                             Doorbell complete_bell)
    : segment_(std::move(segment)),
      submissions_(segment_->SubmitRing()),
      completions_(segment_->CompletionRing()),
      notices_(segment_->NotifyRing()),
      submit_bell_(std::move(submit_bell)),
      complete_bell_(std::move(complete_bell)) {}

uint32_t SessionClient::Submit(std::span<const SubmitEntry> entries) {
  const uint32_t n = submissions_.Push(entries);
  if (n > 0) RingEngineIfAsleep();
  return n;
}

uint32_t SessionClient::Reap(std::span<CompletionEntry> out) {
  const uint32_t n = completions_.Pop(out);
  // Entries waiting behind a full window do not keep the engine awake: room made here must
  // reach a sleeping engine.
  if (n > 0 && submissions_.Room() < submissions_.capacity()) RingEngineIfAsleep();
  return n;
}

uint32_t SessionClient::ReapNotifications(std::span<NotifyEntry> out) { return notices_.Pop(out); }

SubmitEntry SessionClient::Watch(uint64_t vqp_id, uint64_t user_data) {
  SubmitEntry e{};
  e.user_data = user_data;
  e.vqp_id = vqp_id;
  e.op = static_cast<uint8_t>(RingOp::kWatch);
  return e;
}

bool SessionClient::AgentGone() const {
  if (!socket_.valid()) return false;
  pollfd p{socket_.get(), POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

bool SessionClient::Wait(int timeout_ms) {
  // One sleeping flag (the completion ring's) for both rings the engine produces: it looks at it
  // after publishing to either (doc/local_data_path.md, "Sleeping without losing a wakeup").
  auto ready = [this] { return completions_.Ready() > 0 || notices_.Ready() > 0; };
  if (ready()) return true;
  if (completions_.PrepareToSleep() && !ready()) {
    if (!socket_.valid()) {
      (void)complete_bell_.Wait(timeout_ms);
    } else {
      // The socket too: a client sleeping without a timeout learns at once that the agent went.
      pollfd p[2] = {{complete_bell_.fd(), POLLIN, 0}, {socket_.get(), POLLRDHUP, 0}};
      if (poll(p, 2, timeout_ms) > 0 && (p[0].revents & POLLIN) != 0) {
        (void)complete_bell_.Wait(0);  // clears it
      }
    }
  }
  completions_.Awake();
  return ready();
}

void SessionClient::RingEngineIfAsleep() {
  if (submissions_.ConsumerSleeps()) submit_bell_.Ring();
}

}  // namespace braid::session
