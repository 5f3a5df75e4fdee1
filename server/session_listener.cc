#include "server/session_listener.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "dataplane/common/named_thread.h"
#include "dataplane/session/session_wire.h"
#include "server/unix_socket.h"

namespace braid::server {

using common::Status;
using session::WireOp;
using session::WireReply;
using session::WireRequest;

namespace {

void Fill(WireReply& reply, const Status& status) {
  reply.code = static_cast<uint32_t>(status.code());
  std::strncpy(reply.message, std::string(status.message()).c_str(), sizeof(reply.message) - 1);
}

// Refuses a connection just accepted: the answer to the request a client sends first, queued
// before the connection closes.
void Refuse(int fd, const Status& why) {
  WireReply reply;
  reply.op = static_cast<uint16_t>(WireOp::kOpenSession);
  Fill(reply, why);
  (void)session::SendMessage(fd, &reply, sizeof(reply), {});
}

}  // namespace

Status SessionListener::Start(const std::string& path) {
  auto fd = ListenOnUnixSocket(path, SOCK_SEQPACKET, "session socket");
  if (!fd.ok()) return fd.status();
  listen_fd_ = std::move(fd).value();
  path_ = path;
  stop_fd_.reset(eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_.valid()) return Status::FromErrno(errno, "eventfd");
  thread_ = common::NamedThread("braid-session", [this] { Loop(); });
  return Status::Ok();
}

void SessionListener::Stop() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  listen_fd_.reset();
  stop_fd_.reset();
  if (!path_.empty()) unlink(path_.c_str());
  path_.clear();
}

void SessionListener::Loop() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({stop_fd_.get(), POLLIN, 0});
    fds.push_back({listen_fd_.get(), POLLIN, 0});
    for (const auto& c : conns_) fds.push_back({c->fd.get(), POLLIN, 0});
    const int n = poll(fds.data(), fds.size(), -1);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) break;
    if (fds[1].revents & POLLIN) Accept();
    // conns_ may have grown: only the ones polled are looked at.
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Connection& c = *conns_[i - 2];
      if (!Serve(c)) End(c);
    }
    std::erase_if(conns_, [](const auto& c) { return !c->fd.valid(); });
    connections_.store(conns_.size(), std::memory_order_relaxed);
  }
  for (auto& c : conns_) End(*c);
  conns_.clear();
  connections_.store(0, std::memory_order_relaxed);
}

void SessionListener::Accept() {
  // Non-blocking: a client that sends nothing or never reads its replies cannot hold this thread
  // (a reply that does not fit ends that connection).
  common::UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd.valid()) {
    if (errno == EMFILE || errno == ENFILE) {
      spdlog::warn("msg=\"session socket: out of file descriptors; connection left waiting\"");
      poll(nullptr, 0, 100);
    }
    return;
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
  auto c = std::make_unique<Connection>();
  Refusal refusal;
  if (!auth_.IdentifyLocal(cred.uid, &c->caller, &refusal) || c->caller.role < Role::kClient) {
    Refuse(fd.get(), Status::PermissionDenied(
                         "uid " + std::to_string(cred.uid) +
                         (refusal.status.ok()
                              ? std::string(" may not use the data path: its role is below client")
                              : ": " + refusal.status.error_message())));
    return;
  }
  // Its uid's cap, then the descriptor budget (the session it opens is admitted for its own).
  const char* reason = "connection_limit";
  Status admitted = cap_.Admit(fd.get(), cred.uid);
  if (admitted.ok()) {
    reason = "fd_limit";
    admitted = engine_.AdmitDescriptors(1, "a session connection");
  }
  if (!admitted.ok()) {
    audit_.Denied("(session socket)", reason, c->caller.identity, "pid:" + std::to_string(cred.pid),
                  std::string(admitted.message()));
    Refuse(fd.get(), admitted);
    return;
  }
  c->fd = std::move(fd);
  conns_.push_back(std::move(c));
}

bool SessionListener::Serve(Connection& c) {
  WireRequest request;
  std::vector<int> passed;
  Status received = session::ReceiveMessage(c.fd.get(), &request, sizeof(request), &passed);
  if (!received.ok()) return false;  // closed, or not a request: the session ends
  std::vector<common::UniqueFd> owned;
  for (int fd : passed) owned.emplace_back(fd);
  WireReply reply;
  reply.op = request.op;
  std::vector<int> send;
  engine::SessionFds session_fds;
  if (request.magic != session::kWireMagic || request.version != session::kWireVersion) {
    Fill(reply, Status::InvalidArgument("not a session request of version " +
                                        std::to_string(session::kWireVersion)));
  } else if (request.op == static_cast<uint16_t>(WireOp::kOpenSession)) {
    if (c.session != 0) {
      Fill(reply,
           Status::AlreadyExists("this connection has its session already (" +
                                 std::to_string(c.session) + "): connect again for another"));
    } else {
      auto opened = engine_.OpenSession(
          {.owner = c.caller.owner,
           .rings = {request.sq_entries, request.cq_entries, request.nq_entries}});
      if (!opened.ok()) {
        Fill(reply, opened.status());
      } else {
        session_fds = std::move(opened).value();
        c.session = reply.id = session_fds.id;
        send = {session_fds.segment.get(), session_fds.submit_bell.get(),
                session_fds.complete_bell.get()};
      }
    }
  } else if (request.op == static_cast<uint16_t>(WireOp::kRegisterFd)) {
    if (owned.size() != 1) {
      Fill(reply, Status::InvalidArgument("RegisterFd carries exactly one descriptor, not " +
                                          std::to_string(owned.size())));
    } else if (request.num_grants > session::kMaxWireGrants) {
      Fill(reply, Status::InvalidArgument("at most " + std::to_string(session::kMaxWireGrants) +
                                          " grants per registration"));
    } else {
      request.label[sizeof(request.label) - 1] = '\0';
      engine::RegisterRequest r;
      r.length = request.length;
      r.label = request.label;
      r.owner = c.caller.owner;
      r.fd = owned[0].get();
      r.fd_offset = request.fd_offset;
      r.grant_vqps.assign(request.grant_vqps, request.grant_vqps + request.num_grants);
      auto region = engine_.RegisterMemory(std::move(r));
      if (!region.ok()) {
        Fill(reply, region.status());
      } else {
        reply.id = region->id;
        c.regions.push_back(region->id);
      }
    }
  } else {
    Fill(reply, Status::InvalidArgument("no session request " + std::to_string(request.op)));
  }
  return session::SendMessage(c.fd.get(), &reply, sizeof(reply), send).ok();
}

void SessionListener::End(Connection& c) {
  if (c.session != 0) (void)engine_.CloseSession(c.session, c.caller.owner);
  reclaimer_.Release(c.caller.owner, {}, std::move(c.regions));
  c.session = 0;
  c.regions.clear();
  c.fd.reset();
}

}  // namespace braid::server
