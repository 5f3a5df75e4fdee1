// TcpFabric: listening, connections between soft NICs, and QP pairs attaching to them.
#include "dataplane/soft/tcp_fabric.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>

#include "dataplane/soft/link_auth.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"
#include "dataplane/soft/tcp_fabric_internal.h"

namespace braid::soft {

using common::Status;

namespace {

constexpr uint64_t kListenerBit = 1ull << 63;
// Attaches an accepted connection keeps for QPs that have not reached RTR yet; more are refused.
constexpr size_t kMaxWaitingAttaches = 4096;

sockaddr_in Address(uint32_t ipv4_host_order, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(ipv4_host_order);
  return a;
}

// What kind of address `ipv4` is when no peer can call a NIC on it, else null. bind() takes
// them all, so a NIC on one would start and every connection to its card's address fail.
const char* NotCallable(uint32_t ipv4_host_order) {
  if (ipv4_host_order == 0) return "the wildcard address";
  if (ipv4_host_order == 0xFFFFFFFFu) return "the broadcast address";
  if ((ipv4_host_order >> 28) == 0xE) return "a multicast address";
  if ((ipv4_host_order >> 28) == 0xF) return "a reserved address (240.0.0.0/4)";
  return nullptr;
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
  if (const char* kind = NotCallable(*ip)) {
    return Status::InvalidArgument("soft NIC " + device->info().name + "'s address " +
                                   device->info().gid.ToAddress() + " is " + kind +
                                   ", not one peers can call; give an address of one of this "
                                   "host's interfaces");
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Address(*ip, options_.port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 256) != 0) {
    const int err = errno;
    close(fd);
    const std::string where = "soft NIC " + device->info().name + " could not listen on " +
                              device->info().gid.ToAddress() + ":" + std::to_string(options_.port);
    if (err == EADDRNOTAVAIL) {
      return Status::InvalidArgument(where + ": " + device->info().gid.ToAddress() +
                                     " is not an address of this host; give one it has");
    }
    if (err == EADDRINUSE) {
      return Status::FailedPrecondition(
          where +
          ": the port is in use there (another agent on this "
          "address?); give another soft.port, the same on every host");
    }
    return Status::FromErrno(err, where);
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerBit | static_cast<uint64_t>(fd);
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  listeners_.push_back({device, fd});
  return Status::Ok();
}

common::Result<bool> TcpFabric::PortActive(const SoftDevice& device) const {
  const std::optional<uint32_t> ip = device.info().gid.Ipv4();
  if (!ip) return false;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return Status::FromErrno(errno, "getifaddrs");
  auto v4 = [](const sockaddr* a) {
    return ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr);
  };
  // The interface with the address itself, else a loopback one whose subnet holds it (lo's
  // 127.0.0.1/8 answers for every 127.x.y.z).
  const ifaddrs* holder = nullptr;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if (v4(i->ifa_addr) == *ip) {
      holder = i;
      break;
    }
    if (holder == nullptr && (i->ifa_flags & IFF_LOOPBACK) != 0 && i->ifa_netmask != nullptr &&
        ((v4(i->ifa_addr) ^ *ip) & v4(i->ifa_netmask)) == 0) {
      holder = i;
    }
  }
  const bool up = holder != nullptr && (holder->ifa_flags & IFF_UP) != 0 &&
                  (holder->ifa_flags & IFF_RUNNING) != 0;
  freeifaddrs(list);
  return up;
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
  auto [it, end] = channels_.equal_range({device, local_qpn});
  for (; it != end; ++it) {
    if (it->second->remote_gid_ == gid && it->second->remote_qpn_ == remote_qpn) return it->second;
  }
  return nullptr;
}

common::Result<std::unique_ptr<Channel>> TcpFabric::OpenChannel(SoftDevice* local,
                                                                uint32_t local_qpn,
                                                                const verbs::QpRtrParams& rtr) {
  const verbs::Gid& remote_gid = rtr.remote.gid;
  const uint32_t remote_qpn = rtr.remote.qp_num;
  if (!remote_gid.Ipv4()) return Status::InvalidArgument("remote GID is not IPv4-mapped");
  const bool caller = Less(local->info().gid, local_qpn, remote_gid, remote_qpn);
  auto channel = std::make_unique<TcpChannel>(this, local, local_qpn, remote_gid, remote_qpn,
                                              rtr.remote.psn, rtr.epoch, rtr.link_key, caller);
  channels_.emplace(ChannelKey{local, local_qpn}, channel.get());
  if (caller) {
    Conn* conn = LinkTo(local, remote_gid);
    if (conn == nullptr) {
      channel->dead_ = true;  // no route: what it sends is lost, its requester gives up
    } else {
      Bind(*conn, *channel);
      SendAttach(*conn, *channel);
    }
    return std::unique_ptr<Channel>(std::move(channel));
  }
  // We answer: the caller may have been first, its attach waiting for our RTR.
  for (auto& c : conns_) {
    if (c->dead || c->outbound || c->device != local) continue;
    auto it = std::find_if(c->waiting.begin(), c->waiting.end(), [&](const wire::Hello& h) {
      return h.dst_qpn == local_qpn && h.src_gid == remote_gid && h.src_qpn == remote_qpn;
    });
    if (it == c->waiting.end()) continue;
    const wire::Hello hello = *it;
    c->waiting.erase(it);
    AttachCallee(*c, *channel, hello);
    break;
  }
  return std::unique_ptr<Channel>(std::move(channel));
}

// The connection to `remote` for a new QP of `device`: the one we have, unless it is
// retransmitting (a link that was down: its backoff would hold the new QP too), else a new one.
TcpFabric::Conn* TcpFabric::LinkTo(SoftDevice* device, const verbs::Gid& remote) {
  for (auto& c : conns_) {
    if (!c->outbound || c->dead || c->retired || c->device != device || c->remote_gid != remote) {
      continue;
    }
    if (!Retransmitting(*c)) return c.get();
    c->retired = true;
    ++stats_.connections_retired;
  }
  return Connect(device, remote);
}

bool TcpFabric::Retransmitting(const Conn& c) const {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(c.fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return true;
  return info.tcpi_retransmits > 0 || info.tcpi_backoff > 0;
}

TcpFabric::Conn* TcpFabric::Connect(SoftDevice* device, const verbs::Gid& remote) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in local = Address(*device->info().gid.Ipv4(), 0);
  sockaddr_in to = Address(*remote.Ipv4(), options_.port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0 && errno != EINPROGRESS)) {
    close(fd);
    return nullptr;
  }
  auto conn = std::make_unique<Conn>();
  Conn& c = *conn;
  conns_.push_back(std::move(conn));
  c.fd = fd;
  c.device = device;
  c.remote_gid = remote;
  c.outbound = true;
  c.connecting = true;
  c.rx.resize(kRxBufferBytes);
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
    // The challenge first: 32 bytes into a fresh socket's empty buffer.
    conn->challenge = NewChallenge();
    conn->has_challenge = true;
    wire::ChallengeBytes challenge;
    wire::EncodeChallenge(conn->challenge, &challenge);
    if (send(fd, challenge.data(), challenge.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(challenge.size())) {
      close(fd);
      continue;
    }
    conn->rx.resize(kRxHandshakeBytes);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = reinterpret_cast<uint64_t>(conn.get());
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    const uint64_t now = NowNs();
    conn->unjoined = true;
    conn->join_by_ns = now + options_.join_timeout_ns;
    unjoined_.push_back(conn.get());
    conns_.push_back(std::move(conn));
    ++stats_.connections_accepted;
    CloseUnjoined(now);  // the oldest, past the cap: before the next accept takes a descriptor
  }
}

void TcpFabric::Joined(Conn& c) {
  if (!c.unjoined) return;
  c.unjoined = false;
  std::erase(unjoined_, &c);  // at most max_unjoined entries, once per connection
}

void TcpFabric::CloseUnjoined(uint64_t now) {
  while (!unjoined_.empty() &&
         (unjoined_.size() > options_.max_unjoined || unjoined_.front()->join_by_ns <= now)) {
    Conn* c = unjoined_.front();
    unjoined_.pop_front();
    c->unjoined = false;
    ++stats_.connections_unjoined;
    Kill(*c);
  }
}

// Closes the connection: its QPs lose what they send from now on, and their requesters' timers
// turn that into RETRY_EXC_ERR.
void TcpFabric::Kill(Conn& c) {
  if (c.dead) return;
  Joined(c);  // it leaves the unjoined list either way
  c.dead = true;
  reap_ = true;
  if (c.fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
  }
  for (auto& [qpn, ch] : c.channels) {
    ch->dead_ = true;
    ch->attached_ = false;
    ch->active_ = false;
    ch->conn_ = nullptr;
    stats_.frames_dropped += ch->txq_.size();
    ch->txq_.clear();
    ch->queued_ = 0;
  }
  c.channels.clear();
  c.active.clear();
  c.waiting.clear();
  c.seg_channel = nullptr;
  c.cur.active = false;
}

void TcpFabric::Bind(Conn& conn, TcpChannel& channel) {
  conn.channels[channel.local_qpn_] = &channel;
  channel.conn_ = &conn;
}

// A caller's QP asks to join its peer; the connection must have its nonce (a connection we made
// gets it from the callee's challenge: the attaches wait for it).
void TcpFabric::SendAttach(Conn& conn, TcpChannel& channel) {
  if (!conn.has_challenge || channel.attach_sent_) return;
  wire::Hello hello;
  hello.src_gid = channel.local_->info().gid;
  hello.src_qpn = channel.local_qpn_;
  hello.dst_qpn = channel.remote_qpn_;
  hello.dst_send_psn = channel.peer_send_psn_;
  hello.epoch = channel.epoch_;
  SignHello(channel.link_key_, conn.challenge, &hello);
  wire::HelloBytes bytes;
  wire::EncodeHello(hello, &bytes);
  channel.attach_sent_ = true;
  QueueControl(conn,
               {wire::SegmentType::kAttach, wire::DetachReason::kClosed, channel.remote_qpn_,
                channel.local_qpn_, static_cast<uint32_t>(wire::kHelloBytes)},
               bytes);
  Flush(conn);
}

void TcpFabric::OnControl(Conn& c, const wire::Segment& seg, std::span<const uint8_t> body) {
  switch (seg.type) {
    case wire::SegmentType::kAttach: {
      wire::Hello hello;
      if (c.outbound || wire::DecodeHello(body, &hello) != wire::DecodeError::kOk ||
          hello.dst_qpn != seg.dst_qpn || hello.src_qpn != seg.src_qpn) {
        ++stats_.hellos_refused;  // not a hello, or one that contradicts its segment
        Kill(c);
        return;
      }
      OnAttach(c, hello);
      return;
    }
    case wire::SegmentType::kAttached: {
      auto it = c.channels.find(seg.dst_qpn);
      if (it == c.channels.end()) return;  // our QP left meanwhile
      TcpChannel& ch = *it->second;
      if (!ch.caller_ || ch.remote_qpn_ != seg.src_qpn || ch.attached_) return;
      ch.attached_ = true;
      Activate(ch);
      return;
    }
    case wire::SegmentType::kDetach: {
      std::erase_if(c.waiting, [&](const wire::Hello& h) {
        return h.dst_qpn == seg.dst_qpn && h.src_qpn == seg.src_qpn;
      });
      auto it = c.channels.find(seg.dst_qpn);
      if (it == c.channels.end() || it->second->remote_qpn_ != seg.src_qpn) return;
      TcpChannel& ch = *it->second;
      Unbind(ch, /*notify=*/false, wire::DetachReason::kClosed);
      ch.dead_ = true;  // the peer's QP is gone (or refused us): nothing of ours arrives any more
      stats_.frames_dropped += ch.txq_.size();
      ch.txq_.clear();
      ch.queued_ = 0;
      return;
    }
    case wire::SegmentType::kData:
      return;  // not a control segment
  }
}

void TcpFabric::OnAttach(Conn& c, const wire::Hello& hello) {
  TcpChannel* ch = FindChannel(c.device, hello.dst_qpn, hello.src_gid, hello.src_qpn);
  if (ch != nullptr && !ch->caller_ && ch->conn_ == nullptr && !ch->dead_) {
    AttachCallee(c, *ch, hello);
    return;
  }
  const SoftQp* qp = c.device->FindQp(hello.dst_qpn);
  if (ch != nullptr || qp == nullptr || qp->state() == verbs::QpState::kRtr ||
      qp->state() == verbs::QpState::kRts || qp->state() == verbs::QpState::kError ||
      c.waiting.size() >= kMaxWaitingAttaches) {
    ++stats_.hellos_refused;  // no such QP, or it is connected to someone else
    Refuse(c, hello);
    return;
  }
  Joined(c);
  c.waiting.push_back(hello);  // the QP exists and is not connected yet: until its RTR
}

void TcpFabric::AttachCallee(Conn& c, TcpChannel& ch, const wire::Hello& hello) {
  if (!HelloAuthentic(ch.link_key_, c.challenge, hello)) {
    // A caller that does not know the link key (it never saw the business cards): refused, and
    // our QP keeps waiting for the right one.
    ++stats_.hellos_refused;
    ++stats_.hellos_unauthenticated;
    Refuse(c, hello);
    return;
  }
  if (hello.epoch != ch.epoch_) {
    // A caller from another incarnation of the pair (an earlier epoch, or one the control plane
    // has not agreed on yet): refused, and our QP keeps waiting for the right one.
    ++stats_.hellos_refused;
    Refuse(c, hello);
    return;
  }
  Joined(c);
  Bind(c, ch);
  ch.attached_ = true;
  ch.has_hello_ = true;
  ch.hello_expects_ = hello.dst_send_psn;
  ++stats_.attaches_accepted;
  QueueControl(c, {wire::SegmentType::kAttached, wire::DetachReason::kClosed, ch.remote_qpn_,
                   ch.local_qpn_, 0});
  CheckPsn(ch);
  if (ch.conn_ == nullptr) return;  // refused: the hello's PSN was wrong
  Activate(ch);                     // what our QP sent while we waited for the caller
  Flush(c);
}

void TcpFabric::Refuse(Conn& c, const wire::Hello& hello) {
  QueueControl(c, {wire::SegmentType::kDetach, wire::DetachReason::kRefused, hello.src_qpn,
                   hello.dst_qpn, 0});
  Flush(c);
}

// The caller's hello said which PSN it expects us to send first; once we know ours (RTS), a
// mismatch means the two sides were not connected with the same parameters: refuse.
void TcpFabric::CheckPsn(TcpChannel& channel) {
  if (!channel.has_hello_ || !channel.has_local_send_psn_) return;
  if (channel.hello_expects_ == (channel.local_send_psn_ & kPsnMask)) return;
  ++stats_.hellos_refused;
  channel.has_hello_ = false;
  Unbind(channel, /*notify=*/true, wire::DetachReason::kRefused);
  channel.dead_ = true;
}

// The QP leaves its connection (its detach goes to the peer when `notify` and the peer knows of
// it); a connection we made is closed when its last QP leaves.
void TcpFabric::Unbind(TcpChannel& ch, bool notify, wire::DetachReason reason) {
  Conn* c = ch.conn_;
  if (c == nullptr) return;
  if (c->cur.active && c->cur.channel == &ch) Orphan(*c, ch);
  if (c->seg_channel == &ch) c->seg_channel = nullptr;  // the rest of its segment is discarded
  if (ch.active_) {
    std::erase(c->active, &ch);
    ch.active_ = false;
  }
  c->channels.erase(ch.local_qpn_);
  const bool peer_knows = ch.caller_ ? ch.attach_sent_ : ch.attached_;
  if (notify && peer_knows) {
    QueueControl(*c, {wire::SegmentType::kDetach, reason, ch.remote_qpn_, ch.local_qpn_, 0});
  }
  ch.conn_ = nullptr;
  ch.attached_ = false;
  ch.attach_sent_ = false;
  ch.rx_header_have_ = 0;
  ch.rx_in_payload_ = false;
  Flush(*c);
  if (c->outbound && c->channels.empty()) Kill(*c);
}

void TcpFabric::ForgetQp(SoftDevice* device, uint32_t qp_num) {
  for (auto& c : conns_) {
    if (c->dead || c->device != device) continue;
    for (size_t i = 0; i < c->waiting.size();) {
      if (c->waiting[i].dst_qpn != qp_num) {
        ++i;
        continue;
      }
      const wire::Hello hello = c->waiting[i];
      c->waiting.erase(c->waiting.begin() + static_cast<ptrdiff_t>(i));
      Refuse(*c, hello);
      if (c->dead) break;
    }
  }
}

TcpFabric::TcpChannel::~TcpChannel() {
  if (conn_ != nullptr && !dead_) {
    // What is queued leaves first (best effort, without blocking): an ACK held back was, on an
    // HCA, sent before the completion it acknowledges was visible.
    held_in_ = UINT64_MAX;
    fabric_->Flush(*conn_);  // may kill the connection (a failed send)
  }
  fabric_->Unbind(*this, /*notify=*/true, wire::DetachReason::kClosed);
  auto [it, end] = fabric_->channels_.equal_range({local_, local_qpn_});
  for (; it != end; ++it) {
    if (it->second == this) {
      fabric_->channels_.erase(it);
      break;
    }
  }
}

void TcpFabric::Progress() {
  const uint64_t now = NowNs();
  if (now >= ack_hold_ends_ns_) EndAckHold();
  in_pass_ = true;
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
    }
    if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
  }
  // Then due timers fire, after what arrived was read: an HCA takes an ACK as it comes, but this
  // one runs only when its poller does, and an ACK that came while the poller slept must count
  // before a timeout it would have prevented. QPs whose work was acknowledged leave the armed
  // list here, so idle QPs cost nothing (a pass that only looked for the next deadline kept them).
  for (const Listener& l : listeners_) l.device->FireTimers(now);
  CloseUnjoined(now);
  in_pass_ = false;
  FlushPending();
}

// The ACKs held back leave now, with whatever else their connections have queued.
void TcpFabric::EndAckHold() {
  ++ack_hold_;
  ack_hold_ends_ns_ = UINT64_MAX;
  FlushPending();
}

// Held ACKs and requests held behind outstanding ones all wait in pending connections: ending the
// hold flushes them together.
void TcpFabric::SendHeldFrames() {
  if (!in_pass_) EndAckHold();
}

void TcpFabric::ReadCounters(std::vector<verbs::ProviderCounter>* out) const {
  const TcpFabricStats& s = stats_;
  out->insert(
      out->end(),
      {
          {"link_connections_accepted", "Soft link connections accepted from peer NICs",
           s.connections_accepted},
          {"link_connections_made", "Soft link connections made to peer NICs", s.connections_made},
          {"link_connections_retired",
           "Soft link connections found retransmitting when a new QP needed them, and replaced",
           s.connections_retired},
          {"link_attaches_accepted", "QP pairs joined to a soft link connection (callee side)",
           s.attaches_accepted},
          {"link_hellos_refused",
           "QP attaches refused: an unknown QP, not the QP's peer, or a wrong PSN",
           s.hellos_refused},
          {"link_hellos_unauthenticated",
           "QP attaches refused because their MAC did not prove the link key",
           s.hellos_unauthenticated},
          {"link_connections_unjoined",
           "Soft link connections accepted and closed because no QP attached on them in time, or "
           "too many such were open",
           s.connections_unjoined},
          {"link_frames_refused", "Malformed frames or segments (their connection was closed)",
           s.frames_refused},
          {"link_frames_dropped", "Frames sent on a dead connection", s.frames_dropped},
          {"link_acks_deferred", "ACKs of receives held back to ride with an answer",
           s.acks_deferred},
          {"link_requests_held",
           "Requests posted behind outstanding ones of their QP, sent with others at the end of "
           "the next progress pass",
           s.requests_held},
          {"link_frames_joined", "Frames that shared a sendmsg with the frame before them",
           s.frames_joined},
          {"link_payload_bytes_placed", "Inbound payload bytes read straight into their place",
           s.payload_bytes_placed},
          {"link_payload_bytes_buffered",
           "Inbound payload bytes read into a connection's buffer and copied from it",
           s.payload_bytes_buffered},
      });
}

// Every connection with output, then the dead ones dropped (at the end of a pass or a batch).
void TcpFabric::FlushPending() {
  // By index: a flush can fail and kill a connection, never add one.
  for (size_t i = 0; i < pending_tx_.size();) {
    Conn* c = pending_tx_[i];
    if (!c->dead) Flush(*c);
    if (c->dead || !c->HasOutput()) {
      c->pending_tx = false;
      pending_tx_[i] = pending_tx_.back();
      pending_tx_.pop_back();
      continue;
    }
    ++i;
  }
  if (reap_) {
    reap_ = false;
    std::erase_if(pending_tx_, [](const Conn* c) { return c->dead; });
    std::erase_if(conns_, [](const std::unique_ptr<Conn>& c) { return c->dead; });
  }
}

}  // namespace braid::soft
