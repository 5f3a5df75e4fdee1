#include "dataplane/soft/tcp_fabric.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>

#include "dataplane/soft/link_auth.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"
#include "dataplane/soft/tcp_fabric_internal.h"
#include "dataplane/soft/wire_format.h"

namespace braid::soft {

using common::Status;

namespace {

constexpr uint64_t kListenerBit = 1ull << 63;
constexpr size_t kMaxFlushIov = 64;        // iovecs gathered into one sendmsg
constexpr size_t kGatherBytes = 64 << 10;  // frames joined into one sendmsg up to this size

sockaddr_in Address(uint32_t ipv4_host_order, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(ipv4_host_order);
  return a;
}

bool Less(const verbs::Gid& g1, uint32_t q1, const verbs::Gid& g2, uint32_t q2) {
  if (g1.raw != g2.raw) return g1.raw < g2.raw;
  return q1 < q2;
}

}  // namespace

TcpFabric::TcpFabric(TcpFabricOptions options)
    : options_(options), epoll_fd_(epoll_create1(EPOLL_CLOEXEC)) {}

TcpFabric::~TcpFabric() {
  for (auto& c : conns_) {
    if (c->fd >= 0) close(c->fd);
  }
  for (Listener& l : listeners_) close(l.fd);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

uint64_t TcpFabric::NowNs() const {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

Status TcpFabric::Attach(SoftDevice* device) {
  if (epoll_fd_ < 0) return Status::FromErrno(errno, "epoll_create1");
  const std::optional<uint32_t> ip = device->info().gid.Ipv4();
  if (!ip) return Status::InvalidArgument("a TCP soft NIC needs an IPv4-mapped GID");
  for (const Listener& l : listeners_) {
    if (l.device->info().gid == device->info().gid) {
      return Status::AlreadyExists("soft NIC " + device->info().gid.ToString() + " is attached");
    }
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Address(*ip, options_.port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 256) != 0) {
    const int err = errno;
    close(fd);
    return Status::FromErrno(
        err, "listen on " + device->info().gid.ToString() + ":" + std::to_string(options_.port));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerBit | static_cast<uint64_t>(fd);
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  listeners_.push_back({device, fd});
  return Status::Ok();
}

void TcpFabric::Detach(SoftDevice* device) {
  for (auto& c : conns_) {
    if (c->device == device) Kill(*c);
  }
  std::erase_if(listeners_, [device](const Listener& l) {
    if (l.device != device) return false;
    close(l.fd);
    return true;
  });
}

TcpFabric::TcpChannel* TcpFabric::FindChannel(const SoftDevice* device, uint32_t local_qpn,
                                              const verbs::Gid& gid, uint32_t remote_qpn) const {
  for (TcpChannel* c : channels_) {
    if (c->local_ == device && c->local_qpn_ == local_qpn && c->remote_gid_ == gid &&
        c->remote_qpn_ == remote_qpn) {
      return c;
    }
  }
  return nullptr;
}

common::Result<std::unique_ptr<Channel>> TcpFabric::OpenChannel(SoftDevice* local,
                                                                uint32_t local_qpn,
                                                                const verbs::QpRtrParams& rtr) {
  const verbs::Gid& remote_gid = rtr.remote.gid;
  const uint32_t remote_qpn = rtr.remote.qp_num;
  if (!remote_gid.Ipv4()) return Status::InvalidArgument("remote GID is not IPv4-mapped");
  auto channel = std::make_unique<TcpChannel>(this, local, local_qpn, remote_gid, remote_qpn,
                                              rtr.remote.psn, rtr.epoch, rtr.link_key);
  channels_.push_back(channel.get());
  if (Less(local->info().gid, local_qpn, remote_gid, remote_qpn)) {
    Connect(*channel);  // we call
  } else {
    // We answer: the caller may have been first and be waiting for our RTR.
    for (auto& c : conns_) {
      if (c->channel == nullptr && !c->dead && c->device == local && c->rx == Conn::Rx::kHello &&
          c->rx_have == wire::kHelloBytes && c->hello_in.dst_qpn == local_qpn &&
          c->hello_in.src_gid == remote_gid && c->hello_in.src_qpn == remote_qpn) {
        Attach(*c, *channel);
        if (!c->dead) OnReadable(*c);
        break;
      }
    }
  }
  return std::unique_ptr<Channel>(std::move(channel));
}

TcpFabric::Conn* TcpFabric::Connect(TcpChannel& channel) {
  auto conn = std::make_unique<Conn>();
  Conn& c = *conn;
  conns_.push_back(std::move(conn));
  c.device = channel.local_;
  c.channel = &channel;
  channel.conn_ = &c;
  c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) {
    Kill(c);
    return nullptr;
  }
  const int one = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in local = Address(*channel.local_->info().gid.Ipv4(), 0);
  sockaddr_in remote = Address(*channel.remote_gid_.Ipv4(), options_.port);
  if (bind(c.fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    Kill(c);
    return nullptr;
  }
  if (connect(c.fd, reinterpret_cast<sockaddr*>(&remote), sizeof(remote)) != 0 &&
      errno != EINPROGRESS) {
    Kill(c);
    return nullptr;
  }
  c.connecting = true;
  c.rx = Conn::Rx::kChallenge;  // the hello answers the callee's challenge
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = reinterpret_cast<uint64_t>(&c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev);
  return &c;
}

void TcpFabric::Accept(Listener& listener) {
  for (;;) {
    const int fd = accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    conn->device = listener.device;
    conn->rx = Conn::Rx::kHello;
    // The challenge first: 32 bytes into a fresh socket's empty buffer.
    conn->challenge = NewChallenge();
    wire::ChallengeBytes challenge;
    wire::EncodeChallenge(conn->challenge, &challenge);
    if (send(fd, challenge.data(), challenge.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(challenge.size())) {
      close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = reinterpret_cast<uint64_t>(conn.get());
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    conns_.push_back(std::move(conn));
    ++stats_.connections_accepted;
  }
}

bool TcpFabric::Attach(Conn& conn, TcpChannel& channel) {
  if (channel.conn_ != nullptr) return false;
  if (!HelloAuthentic(channel.link_key_, conn.challenge, conn.hello_in)) {
    // A caller that does not know the link key (it never saw the business cards): refused, and
    // our QP keeps waiting for the right one.
    ++stats_.hellos_refused;
    ++stats_.hellos_unauthenticated;
    Kill(conn);
    return true;
  }
  if (conn.hello_in.epoch != channel.epoch_) {
    // A caller from another incarnation of the pair (an earlier epoch, or one the control plane
    // has not agreed on yet): refused, and our QP keeps waiting for the right one.
    ++stats_.hellos_refused;
    Kill(conn);
    return true;
  }
  conn.held = false;
  conn.channel = &channel;
  channel.conn_ = &conn;
  channel.has_hello_ = true;
  channel.hello_expects_ = conn.hello_in.dst_send_psn;
  conn.rx = Conn::Rx::kHeader;
  conn.rx_have = 0;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = reinterpret_cast<uint64_t>(&conn);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn.fd, &ev);
  CheckPsn(channel);
  if (conn.dead) return true;  // refused: the hello's PSN was wrong
  MarkPending(conn);
  Flush(conn);  // what our QP sent while we waited for the caller
  return true;
}

// The caller's hello said which PSN it expects us to send first; once we know ours (RTS), a
// mismatch means the two sides were not connected with the same parameters: refuse.
void TcpFabric::CheckPsn(TcpChannel& channel) {
  if (!channel.has_hello_ || !channel.has_local_send_psn_) return;
  if (channel.hello_expects_ == (channel.local_send_psn_ & kPsnMask)) return;
  ++stats_.hellos_refused;
  channel.has_hello_ = false;
  if (channel.conn_ != nullptr) Kill(*channel.conn_);
}

// Reads the hello of an accepted connection. False: wait (incomplete, or our QP is not at RTR
// yet) or refused.
bool TcpFabric::ReadHello(Conn& c) {
  while (c.rx_have < wire::kHelloBytes) {
    const ssize_t n = read(c.fd, c.rx_buf.data() + c.rx_have, wire::kHelloBytes - c.rx_have);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      if (c.rx_have > 0) ++stats_.hellos_refused;  // truncated
      Kill(c);
      return false;
    }
    if (n < 0) return false;
    c.rx_have += static_cast<size_t>(n);
  }
  if (wire::DecodeHello(c.rx_buf, &c.hello_in) != wire::DecodeError::kOk) {
    ++stats_.hellos_refused;
    Kill(c);
    return false;
  }
  if (TcpChannel* ch =
          FindChannel(c.device, c.hello_in.dst_qpn, c.hello_in.src_gid, c.hello_in.src_qpn)) {
    if (Attach(c, *ch)) return !c.dead;
  }
  const SoftQp* qp = c.device->FindQp(c.hello_in.dst_qpn);
  if (qp == nullptr || qp->state() == verbs::QpState::kRtr || qp->state() == verbs::QpState::kRts ||
      qp->state() == verbs::QpState::kError) {
    ++stats_.hellos_refused;  // no such QP, or it is connected to someone else
    Kill(c);
    return false;
  }
  // The QP exists and is not connected yet: hold the connection, unread, until its RTR. Only the
  // caller's close is watched for (the connection is let go then, not left in CLOSE_WAIT).
  c.held = true;
  epoll_event ev{};
  ev.events = EPOLLRDHUP;
  ev.data.u64 = reinterpret_cast<uint64_t>(&c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  return false;
}

// Reads the callee's challenge on a connection we made, then sends our signed hello. False: wait
// (incomplete) or refused.
bool TcpFabric::ReadChallenge(Conn& c) {
  while (c.rx_have < wire::kChallengeBytes) {
    const ssize_t n = read(c.fd, c.rx_buf.data() + c.rx_have, wire::kChallengeBytes - c.rx_have);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      Kill(c);
      return false;
    }
    if (n < 0) return false;
    c.rx_have += static_cast<size_t>(n);
  }
  c.rx_have = 0;
  wire::Challenge challenge;
  if (c.channel == nullptr || wire::DecodeChallenge({c.rx_buf.data(), wire::kChallengeBytes},
                                                    &challenge) != wire::DecodeError::kOk) {
    ++stats_.frames_refused;
    Kill(c);
    return false;
  }
  const TcpChannel& channel = *c.channel;
  wire::Hello hello;
  hello.src_gid = channel.local_->info().gid;
  hello.src_qpn = channel.local_qpn_;
  hello.dst_qpn = channel.remote_qpn_;
  hello.dst_send_psn = channel.peer_send_psn_;
  hello.epoch = channel.epoch_;
  SignHello(channel.link_key_, challenge, &hello);
  wire::EncodeHello(hello, &c.hello_out);
  c.hello_pending = true;
  c.rx = Conn::Rx::kHeader;
  Flush(c);  // the hello, then what our QP queued meanwhile
  return !c.dead;
}

void TcpFabric::OnReadable(Conn& c) {
  if (c.dead) return;
  if (c.rx == Conn::Rx::kChallenge && !ReadChallenge(c)) return;
  if (c.rx == Conn::Rx::kHello && !ReadHello(c)) return;
  size_t budget = options_.max_bytes_per_progress;
  for (int frames = 0; frames < options_.max_frames_per_progress && !c.dead && budget > 0;) {
    if (c.rx == Conn::Rx::kHeader) {
      const ssize_t n =
          read(c.fd, c.rx_buf.data() + c.rx_have, wire::kFrameHeaderBytes - c.rx_have);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        if (c.rx_have > 0) ++stats_.frames_refused;  // truncated
        Kill(c);
        return;
      }
      if (n < 0) return;
      if (c.channel != nullptr) c.channel->last_progress_ns_ = NowNs();
      c.rx_have += static_cast<size_t>(n);
      if (c.rx_have < wire::kFrameHeaderBytes) continue;
      c.rx_have = 0;
      if (wire::DecodeFrameHeader(c.rx_buf, &c.rx_header) != wire::DecodeError::kOk ||
          c.channel == nullptr || c.rx_header.dst_qpn != c.channel->local_qpn_ ||
          c.rx_header.src_qpn != c.channel->remote_qpn_) {
        ++stats_.frames_refused;
        Kill(c);
        return;
      }
      c.rx_place = c.device->BeginInbound(c.rx_header);
      c.rx_left = c.rx_header.payload_len;
      c.rx_index = 0;
      c.rx_offset = 0;
      if (c.rx_left == 0) {
        c.device->EndInbound(c.rx_header);
        ++frames;
        continue;
      }
      c.rx = Conn::Rx::kPayload;
    }
    // Payload: straight into the placement; whatever it does not cover is discarded.
    std::array<iovec, Placement::kMaxRanges + 1> iov;
    size_t cnt = 0;
    uint64_t room = c.rx_left;
    for (uint32_t i = c.rx_index; i < c.rx_place.count && room > 0; ++i) {
      const size_t skip = i == c.rx_index ? c.rx_offset : 0;
      const size_t len = std::min<uint64_t>(c.rx_place.iov[i].iov_len - skip, room);
      if (len == 0) continue;
      iov[cnt++] = {static_cast<uint8_t*>(c.rx_place.iov[i].iov_base) + skip, len};
      room -= len;
    }
    if (cnt == 0) iov[cnt++] = {discard_.data(), std::min<uint64_t>(discard_.size(), room)};
    const ssize_t n = readv(c.fd, iov.data(), static_cast<int>(cnt));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      Kill(c);
      return;
    }
    if (n < 0) return;
    if (c.channel != nullptr) c.channel->last_progress_ns_ = NowNs();
    size_t got = static_cast<size_t>(n);
    budget -= std::min(budget, got);
    c.rx_left -= got;
    while (got > 0 && c.rx_index < c.rx_place.count) {
      const size_t avail = c.rx_place.iov[c.rx_index].iov_len - c.rx_offset;
      const size_t take = std::min(avail, got);
      c.rx_offset += take;
      got -= take;
      if (c.rx_offset == c.rx_place.iov[c.rx_index].iov_len) {
        ++c.rx_index;
        c.rx_offset = 0;
      }
    }
    if (c.rx_left == 0) {
      c.device->EndInbound(c.rx_header);  // after placement: completions, then the ACK
      c.rx = Conn::Rx::kHeader;
      ++frames;
    }
  }
}

void TcpFabric::Flush(Conn& c) {
  if (c.dead || c.connecting || c.rx == Conn::Rx::kChallenge) return;
  if (c.hello_pending) {
    while (c.hello_sent < c.hello_out.size()) {
      const ssize_t n = send(c.fd, c.hello_out.data() + c.hello_sent,
                             c.hello_out.size() - c.hello_sent, MSG_NOSIGNAL);
      if (n < 0) {
        SendFailed(c);
        return;
      }
      c.hello_sent += static_cast<size_t>(n);
    }
    c.hello_pending = false;
  }
  if (c.channel == nullptr || c.channel->held_) return;
  auto& q = c.channel->txq_;
  c.channel->deferred_pass_ = UINT64_MAX;
  while (!q.empty()) {
    // The unsent rest of the queued frames, several per sendmsg: header bytes, then payload ranges.
    std::array<iovec, kMaxFlushIov> iov;
    size_t cnt = 0;
    size_t bytes = 0;
    size_t frames = 0;
    for (size_t k = 0; k < q.size(); ++k) {
      const TcpChannel::TxItem& t = q[k];
      // Small frames (ACKs, small messages) share a sendmsg; a bulk frame goes on its own.
      if (cnt + 1 + t.iovcnt > iov.size() || (k > 0 && bytes + t.total - t.sent > kGatherBytes)) {
        break;
      }
      bytes += t.total - t.sent;
      ++frames;
      size_t skip = t.sent;
      if (skip < wire::kFrameHeaderBytes) {
        iov[cnt++] = {const_cast<uint8_t*>(t.header.data()) + skip, wire::kFrameHeaderBytes - skip};
        skip = 0;
      } else {
        skip -= wire::kFrameHeaderBytes;
      }
      for (uint32_t i = 0; i < t.iovcnt; ++i) {
        if (skip >= t.iov[i].iov_len) {
          skip -= t.iov[i].iov_len;
          continue;
        }
        iov[cnt++] = {static_cast<uint8_t*>(t.iov[i].iov_base) + skip, t.iov[i].iov_len - skip};
        skip = 0;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = cnt;
    const ssize_t n = sendmsg(c.fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      SendFailed(c);
      return;
    }
    c.channel->last_progress_ns_ = NowNs();
    stats_.frames_joined += frames - 1;
    size_t sent = static_cast<size_t>(n);
    while (sent > 0 && !q.empty()) {
      TcpChannel::TxItem& t = q.front();
      const size_t take = std::min(sent, t.total - t.sent);
      t.sent += take;
      sent -= take;
      if (t.sent < t.total) break;
      q.pop_front();
    }
    if (!q.empty() && q.front().sent > 0) {  // the socket is full: the rest when it has room
      WatchWritable(c, true);
      return;
    }
  }
  WatchWritable(c, false);
}

// A send that failed: a full socket waits for room (EPOLLOUT); anything else kills the connection.
void TcpFabric::SendFailed(Conn& c) {
  if (errno == EAGAIN || errno == EINTR) {
    WatchWritable(c, true);
  } else {
    Kill(c);
  }
}

// While frames wait for room in the socket, EPOLLOUT makes the fabric's epoll fd (wait_fd)
// readable when room appears, so a caller sleeping on it wakes to send them.
void TcpFabric::WatchWritable(Conn& c, bool on) {
  if (c.want_out == on || c.dead || c.connecting) return;
  c.want_out = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u64 = reinterpret_cast<uint64_t>(&c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void TcpFabric::MarkPending(Conn& c) {
  if (c.pending_tx) return;
  c.pending_tx = true;
  pending_tx_.push_back(&c);
}

void TcpFabric::Kill(Conn& c) {
  if (c.dead) return;
  c.dead = true;
  reap_ = true;
  if (c.fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
  }
  if (c.channel != nullptr) {
    // Everything sent from now on is lost; the requester's timers turn that into RETRY_EXC_ERR.
    c.channel->dead_ = true;
    stats_.frames_dropped += c.channel->txq_.size();
    c.channel->txq_.clear();
    c.channel->conn_ = nullptr;
    c.channel = nullptr;
  }
}

void TcpFabric::Progress() {
  const uint64_t now = NowNs();
  ++pass_;
  if (any_deferred_) {  // ACKs held back by the previous pass leave now
    any_deferred_ = false;
    for (size_t i = 0; i < pending_tx_.size(); ++i) {
      Conn* c = pending_tx_[i];
      if (!c->dead && c->channel != nullptr && c->channel->deferred_pass_ != UINT64_MAX) Flush(*c);
    }
  }
  in_pass_ = true;
  for (const Listener& l : listeners_) {
    if (l.device->NextDeadline() <= now) l.device->FireTimers(now);
  }
  epoll_event events[64];
  const int n = epoll_wait(epoll_fd_, events, 64, 0);
  for (int i = 0; i < n; ++i) {
    const uint64_t tag = events[i].data.u64;
    if (tag & kListenerBit) {
      for (Listener& l : listeners_) {
        if (static_cast<uint64_t>(l.fd) == (tag & ~kListenerBit)) Accept(l);
      }
      continue;
    }
    Conn& c = *reinterpret_cast<Conn*>(tag);
    if (c.dead) continue;
    if (c.connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        Kill(c);
        continue;
      }
      if (!(events[i].events & EPOLLOUT)) continue;
      c.connecting = false;
      ++stats_.connections_made;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
      Flush(c);
    }
    if (c.held) {  // the caller went away before our QP reached RTR
      Kill(c);
      continue;
    }
    if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
  }
  in_pass_ = false;
  // By index: a flush can fail and kill a connection, never add one.
  for (size_t i = 0; i < pending_tx_.size();) {
    Conn* c = pending_tx_[i];
    if (!c->dead && c->channel != nullptr && !c->channel->txq_.empty() &&
        c->channel->deferred_pass_ != pass_) {
      Flush(*c);
    }
    if (c->dead || c->channel == nullptr || c->channel->txq_.empty()) {
      c->pending_tx = false;
      pending_tx_[i] = pending_tx_.back();
      pending_tx_.pop_back();
      continue;
    }
    ++i;
  }
  if (reap_) {
    reap_ = false;
    auto gone = [](const Conn* c) { return c->dead && c->channel == nullptr; };
    std::erase_if(pending_tx_, gone);
    std::erase_if(conns_, [&](const std::unique_ptr<Conn>& c) { return gone(c.get()); });
  }
}

}  // namespace braid::soft
