// TcpFabric: soft devices talking over TCP, between processes or hosts.
//
// A soft NIC listens on its IPv4 address and the fabric's port. All QP pairs between two soft
// NICs share one TCP connection, as QPs share a port: the NIC with the smaller GID calls (for a QP
// pair within one NIC, the smaller QPN's side), when its first QP reaches RTR, and the connection
// is closed when the caller's last QP leaves it. The callee sends a challenge (a fresh nonce) as
// soon as it accepts. Each QP pair then joins the connection on its own: the caller's QP sends an
// attach (a hello signed with the pair's link key, link_auth.h, for the connection's nonce); the
// callee's QP answers attached, holding the attach until it reaches RTR if the caller was first,
// or detach when the hello names an unknown QP, is not the QP's peer, does not prove the link key,
// or expects another first PSN than the QP sends (refused and counted); the caller's frames wait
// until attached. A QP that goes away, or is broken, sends detach: the pair is over at both ends.
//
// The connection carries segments (wire_format.h): a QP's frames are cut into data segments of at
// most 128 KiB and the QPs with frames to send take turns, one segment each, so one QP's bulk
// transfer delays another's ACK by one segment at most. Per-QP ordering, windows, ACK timers and
// fault injection are the QP's own, as before.
//
// Zero copy: frames go out as one sendmsg of segment headers, frame headers and payloads where
// they lie (registered memory or a WQE's inline copy). Inbound bulk payload is read straight into
// the placement the QP chose after its checks; small frames are read many at a time into the
// connection's buffer and copied from there.
//
// Progress model: no thread of its own. Progress() (run by Cq::Poll and Qp::Post*) polls the
// sockets with epoll (zero timeout), reads and writes what is ready and fires QP timers from the
// monotonic clock: busy while the caller polls, nothing when it does not.
// Dead peers: a closed or failed connection drops what its QPs send, so each requester's ACK
// timeout × retry_cnt ends in RETRY_EXC_ERR and flushes, as on an HCA. A connection found
// retransmitting when a new QP needs it (a link that was down) is retired, so recovered QPs do
// not wait behind its backoff.
// Threading: one thread for the fabric and everything attached to it.
#ifndef BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_
#define BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/soft/link.h"
#include "dataplane/soft/wire_format.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

// The ACK delay for a steady poller: long enough for a client of braidd to answer a notification
// (its engine delivers it and takes the answer a turn later), short next to any ACK timeout.
inline constexpr uint32_t kSteadyPollerAckDelayNs = 10000;

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
  // How long the ACK of a request that completed a receive (SEND, WRITE_WITH_IMM) may wait for a
  // frame to ride with, as TCP's delayed ACK: the answer posted to what was just received carries
  // the ACK, one sendmsg instead of two. It leaves with the first frame its connection sends, at
  // the first pass after this delay, or when a poller arms a CQ to sleep (doc/soft_provider.md,
  // "ACK coalescing"). Only for a poller that keeps polling, or arms its CQs before it stops
  // (kSteadyPollerAckDelayNs, braidd's engine): an application may stop polling at any time, and
  // an ACK it holds would wait for its next poll. 0: until the next pass (what it polls with).
  uint32_t ack_delay_ns = 0;
  // An accepted connection joins when a caller's QP attaches on it (or waits there for our QP's
  // RTR); a real caller sends its attach at once. One that has not joined within
  // `join_timeout_ns` is closed, and past `max_unjoined` such connections the oldest is closed
  // for each new one: connections that never attach (a port scan, a flood of idle sockets) hold
  // a bounded number of the agent's descriptors, for a bounded time.
  uint64_t join_timeout_ns = 10'000'000'000;
  size_t max_unjoined = 256;
};

struct TcpFabricStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_made = 0;
  uint64_t connections_retired = 0;     // found retransmitting when a new QP needed them
  uint64_t attaches_accepted = 0;       // QP pairs joined to a connection (callee side)
  uint64_t hellos_refused = 0;          // unknown QPN, not the QP's peer, or a wrong PSN
  uint64_t hellos_unauthenticated = 0;  // a MAC that does not prove the link key (also refused)
  uint64_t connections_unjoined = 0;    // accepted, closed without an attach (timeout, or over cap)
  uint64_t frames_refused = 0;          // malformed frames or segments (the connection is closed)
  uint64_t segments_unrouted = 0;       // data for a QP not on the connection (it just left)
  uint64_t segments_orphaned = 0;       // finished from a copy: their QP left mid-segment
  uint64_t frames_dropped = 0;          // sent on a dead connection
  uint64_t acks_deferred = 0;           // ACKs held back within a pass (TransmitAck)
  uint64_t requests_held = 0;           // requests held for the end of the pass (TransmitBehind)
  uint64_t frames_joined = 0;           // frames that shared a sendmsg with the one before them
  uint64_t frames_copied = 0;    // payloads copied while queued: their region was deregistered
  uint64_t frames_quiesced = 0;  // unsent frames dropped because their QP entered the error state
  uint64_t payloads_cut = 0;     // inbound payloads cut off: their region was deregistered
  // Inbound payload bytes read straight into their place, and those read into a connection's
  // buffer and copied from it (small payloads, and the bytes around headers).
  uint64_t payload_bytes_placed = 0;
  uint64_t payload_bytes_buffered = 0;
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
  // Up when an interface of this host (or namespace) holds the NIC's address, is up and has a
  // carrier: a veth whose end or peer went down, or an address removed, is a port down.
  common::Result<bool> PortActive(const SoftDevice& device) const override;
  void ForgetQp(SoftDevice* device, uint32_t qp_num) override;
  void ForgetMemory(SoftDevice* device, uint64_t addr, uint64_t length) override;
  void Progress() override;
  void SendHeldFrames() override;
  void ReadCounters(std::vector<verbs::ProviderCounter>* out) const override;
  void BeginBatch() override { ++batch_depth_; }
  void EndBatch() override;
  int wait_fd() const override { return epoll_fd_; }  // the sockets' epoll set
  const TcpFabricStats& stats() const { return stats_; }

  // Fault injection on the QP's connection (the QP must be a connected soft QP of this fabric):
  // hold its outbound frames (nothing is lost; they go when released), drop its next `count`
  // outbound frames (the peer sees a PSN gap; the requester retransmits), or break it (the pair
  // is detached at both ends; its work ends in RETRY_EXC_ERR, and it is not re-established). The
  // other QPs on the same connection are not disturbed.
  common::Status HoldQp(const verbs::Qp& qp, bool hold);
  common::Status DropNext(const verbs::Qp& qp, int count);
  common::Status BreakQp(const verbs::Qp& qp) override;
  // Breaks every connected QP of `device` (its link went down): its connections are closed.
  common::Status BreakDevice(const SoftDevice* device) override;

 private:
  class TcpChannel;
  struct Conn;
  struct Listener {
    SoftDevice* device;
    int fd;
  };
  friend class TcpChannel;

  // Connections (tcp_fabric.cc).
  void Accept(Listener& listener);
  void Joined(Conn& conn);           // an attach arrived: the connection is a caller's
  void CloseUnjoined(uint64_t now);  // those past their time or over the cap
  Conn* LinkTo(SoftDevice* device, const verbs::Gid& remote);
  Conn* Connect(SoftDevice* device, const verbs::Gid& remote);
  bool Retransmitting(const Conn& conn) const;
  void Kill(Conn& conn);
  // Attaching (tcp_fabric.cc).
  void OnControl(Conn& conn, const wire::Segment& segment, std::span<const uint8_t> body);
  void OnAttach(Conn& conn, const wire::Hello& hello);
  void AttachCallee(Conn& conn, TcpChannel& channel, const wire::Hello& hello);
  void SendAttach(Conn& conn, TcpChannel& channel);
  void Bind(Conn& conn, TcpChannel& channel);
  void Unbind(TcpChannel& channel, bool notify, wire::DetachReason reason);
  void Refuse(Conn& conn, const wire::Hello& hello);
  void CheckPsn(TcpChannel& channel);
  TcpChannel* FindChannel(const SoftDevice* device, uint32_t local_qpn, const verbs::Gid& gid,
                          uint32_t remote_qpn) const;
  TcpChannel* ChannelOf(const verbs::Qp& qp) const;
  // Receiving (tcp_fabric_rx.cc).
  void OnReadable(Conn& conn);
  bool ReadChallenge(Conn& conn);
  bool Parse(Conn& conn);
  bool Feed(Conn& conn, TcpChannel& channel, const uint8_t* bytes, size_t n);
  bool ReadDirect(Conn& conn, ssize_t* result, size_t* asked);
  // Sending (tcp_fabric_tx.cc).
  void QueueControl(Conn& conn, const wire::Segment& segment, std::span<const uint8_t> body = {});
  void Activate(TcpChannel& channel);
  void Flush(Conn& conn);
  void Advance(TcpChannel& channel, size_t bytes, bool drained);
  void Orphan(Conn& conn, TcpChannel& channel);
  void Quiesce(TcpChannel& channel);
  void WatchWritable(Conn& conn, bool on);
  void SendFailed(Conn& conn);
  void MarkPending(Conn& conn);
  void FlushPending();
  void EndAckHold();

  TcpFabricOptions options_;
  std::vector<uint8_t> discard_ = std::vector<uint8_t>(65536);  // payload nobody placed
  int epoll_fd_;
  std::vector<Listener> listeners_;
  std::vector<std::unique_ptr<Conn>> conns_;
  // Accepted connections with no attach yet, oldest first (so by join deadline).
  std::deque<Conn*> unjoined_;
  // Every channel, by its local end (device, QPN): an attach finds its QP without a walk.
  using ChannelKey = std::pair<const SoftDevice*, uint32_t>;
  std::multimap<ChannelKey, TcpChannel*> channels_;
  TcpFabricStats stats_;
  bool in_pass_ = false;      // inside Progress(), reading
  uint32_t batch_depth_ = 0;  // open BeginBatch() calls: frames wait for the last EndBatch()
  // ACKs held back (TransmitAck) belong to the current hold; they leave together when it ends.
  uint64_t ack_hold_ = 0;                   // the current hold, advanced as it ends
  uint64_t ack_hold_ends_ns_ = UINT64_MAX;  // when it ends; UINT64_MAX: no ACK is held
  // Connections with segments queued and not yet sent (deferred ACKs, a full socket):
  // what a progress pass flushes, so its cost follows the busy connections, not all of them.
  std::vector<Conn*> pending_tx_;
  bool reap_ = false;  // a connection died: drop the dead ones at the end of the pass
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_TCP_FABRIC_H_
