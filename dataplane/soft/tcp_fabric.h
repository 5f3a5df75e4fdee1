// TcpFabric: soft devices talking over TCP, between processes or hosts.
//
// A soft NIC listens on its IPv4 address and the fabric's port. Each connected QP pair has one
// TCP connection, set up when the QPs reach RTR: the side with the smaller (GID, QPN) calls; the
// other accepts and sends a challenge (a fresh nonce); the caller answers with a hello signed with
// the connection's link key (link_auth.h, wire_format.h); the callee matches the hello with its
// QP's channel, holding the connection until its QP reaches RTR if the caller was first, and
// checks its MAC. A hello naming an unknown QP, not matching the QP's peer, not proving the link
// key, or expecting another first PSN than the QP sends is refused and counted.
//
// Zero copy: a frame goes out as one writev of its header and the payload where it lies
// (registered memory or a WQE's inline copy); an inbound payload is read straight into the
// placement the QP chose after its checks.
//
// Progress model: no thread of its own. Progress() (run by Cq::Poll and Qp::Post*) polls the
// sockets with epoll (zero timeout), reads and writes what is ready and fires QP timers from the
// monotonic clock: busy while the caller polls, nothing when it does not.
// Dead peers: a closed or failed connection drops what is sent on it, so the requester's ACK
// timeout × retry_cnt ends in RETRY_EXC_ERR and flushes, as on an HCA.
// Threading: one thread for the fabric and everything attached to it.
#ifndef BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_
#define BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/soft/link.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

struct TcpFabricOptions {
  uint16_t port = 18515;
  int max_frames_per_progress = 64;  // per connection and Progress() call
  // Bytes read from one connection per Progress() call: a connection carrying large frames must
  // not keep the others (and their QPs' ACK timers) waiting.
  size_t max_bytes_per_progress = 1 << 20;
  // Request bytes a QP keeps transmitted and unacknowledged (Channel::window_bytes); 0: no bound.
  // More only fills socket buffers: it adds latency for everything behind it and, on a host
  // whose cores do the copying, cache misses (doc/soft_provider.md, "Window").
  uint64_t qp_window_bytes = 2 << 20;
};

struct TcpFabricStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_made = 0;
  uint64_t hellos_refused = 0;          // unknown QPN, not the QP's peer, or a wrong PSN
  uint64_t hellos_unauthenticated = 0;  // a MAC that does not prove the link key (also refused)
  uint64_t frames_refused = 0;          // malformed frames (the connection is closed)
  uint64_t frames_dropped = 0;          // sent on a dead connection
  uint64_t acks_deferred = 0;           // ACKs held back within a pass (TransmitAck)
  uint64_t frames_joined = 0;           // frames that shared a sendmsg with the one before them
};

class TcpFabric final : public Fabric {
 public:
  explicit TcpFabric(TcpFabricOptions options = {});
  ~TcpFabric() override;
  TcpFabric(const TcpFabric&) = delete;
  TcpFabric& operator=(const TcpFabric&) = delete;

  common::Status Attach(SoftDevice* device) override;
  void Detach(SoftDevice* device) override;
  common::Result<std::unique_ptr<Channel>> OpenChannel(SoftDevice* local, uint32_t local_qpn,
                                                       const verbs::QpRtrParams& rtr) override;
  uint64_t NowNs() const override;
  void ForgetQp(SoftDevice* device, uint32_t qp_num) override;
  void Progress() override;
  int wait_fd() const override { return epoll_fd_; }  // the sockets' epoll set
  const TcpFabricStats& stats() const { return stats_; }

  // Fault injection on the QP's connection (the QP must be a connected soft QP of this fabric):
  // hold its outbound frames (nothing is lost; they go when released), drop its next `count`
  // outbound frames (the peer sees a PSN gap; the requester retransmits), or break it (the
  // connection is closed; the QP's work ends in RETRY_EXC_ERR, and it is not re-established).
  common::Status HoldQp(const verbs::Qp& qp, bool hold);
  common::Status DropNext(const verbs::Qp& qp, int count);
  common::Status BreakQp(const verbs::Qp& qp) override;
  // Breaks every connected QP of `device` (its link went down).
  common::Status BreakDevice(const SoftDevice* device) override;

 private:
  class TcpChannel;
  struct Conn;
  struct Listener {
    SoftDevice* device;
    int fd;
  };
  friend class TcpChannel;

  void Accept(Listener& listener);
  void OnReadable(Conn& conn);
  bool ReadHello(Conn& conn);
  bool ReadChallenge(Conn& conn);
  bool Attach(Conn& conn, TcpChannel& channel);
  void CheckPsn(TcpChannel& channel);
  void Flush(Conn& conn);
  void WatchWritable(Conn& conn, bool on);
  void SendFailed(Conn& conn);
  void Kill(Conn& conn);
  void MarkPending(Conn& conn);
  void Forget(Conn* conn);
  Conn* Connect(TcpChannel& channel);
  TcpChannel* FindChannel(const SoftDevice* device, uint32_t local_qpn, const verbs::Gid& gid,
                          uint32_t remote_qpn) const;
  TcpChannel* ChannelOf(const verbs::Qp& qp) const;

  TcpFabricOptions options_;
  std::vector<uint8_t> discard_ = std::vector<uint8_t>(65536);  // payload nobody placed
  int epoll_fd_;
  std::vector<Listener> listeners_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<TcpChannel*> channels_;
  TcpFabricStats stats_;
  uint64_t pass_ = 0;          // Progress() calls so far
  bool in_pass_ = false;       // inside Progress(), reading
  bool any_deferred_ = false;  // some channel holds an ACK (TransmitAck)
  // Connections with frames queued and not yet sent (deferred ACKs, a full socket, a held QP):
  // what a progress pass flushes, so its cost follows the busy connections, not all of them.
  std::vector<Conn*> pending_tx_;
  bool reap_ = false;  // a connection died: drop the dead ones at the end of the pass
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_
