// The TCP fabric's private types: a connection between two soft NICs (Conn), shared by all their
// QP pairs, and a QP's path over it (TcpChannel). Included only by the fabric's own .cc files
// (tcp_fabric.cc: connections and attaching; tcp_fabric_rx.cc: reading and demultiplexing;
// tcp_fabric_tx.cc: sending, QPs taking turns; tcp_fabric_faults.cc: fault injection).
// Threading: the fabric's thread.
#ifndef BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_
#define BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/wire_format.h"

namespace braid::soft {

// A connection's receive buffer: small frames are read many at a time into it. An accepted
// connection starts with room for control segments only, and gets the full buffer once a QP has
// attached: a peer that proves no link key costs little memory.
inline constexpr size_t kRxBufferBytes = 64 << 10;
inline constexpr size_t kRxHandshakeBytes = 512;

// One TCP connection between a local soft NIC and a remote one. The side with the smaller GID
// calls (a QP connected to a QP of its own NIC: the smaller QPN's side), so two NICs share one
// connection; a connection that was retransmitting when a QP wanted it is retired (it keeps its
// QPs, takes no new ones) and a fresh one made.
struct TcpFabric::Conn {
  int fd = -1;
  SoftDevice* device = nullptr;  // the local soft NIC
  verbs::Gid remote_gid;         // the called NIC (connections we made)
  bool outbound = false;         // we called
  bool connecting = false;
  bool dead = false;
  bool retired = false;        // takes no new QPs; closed when its last QP leaves
  bool want_out = false;       // EPOLLOUT armed: segments wait for room in the socket
  bool pending_tx = false;     // in TcpFabric::pending_tx_
  bool has_challenge = false;  // the nonce this connection's attaches are signed for
  bool unjoined = false;       // accepted, no attach yet: in TcpFabric::unjoined_
  uint64_t join_by_ns = 0;     // then closed at this time
  wire::Challenge challenge;   // made by us (accepted) or received (outbound)
  size_t challenge_have = 0;   // outbound: bytes of the challenge read so far

  // The QPs on this connection by local QPN (attached, or attaching).
  std::unordered_map<uint32_t, TcpChannel*> channels;
  // Accepted: attaches of callers whose QP has not reached RTR yet (matched in OpenChannel).
  std::vector<wire::Hello> waiting;

  // Receiving: bytes read and not yet parsed are rx[rx_pos, rx_end).
  std::vector<uint8_t> rx;
  size_t rx_pos = 0;
  size_t rx_end = 0;
  wire::Segment seg;                  // the segment being received, while seg_left > 0
  uint32_t seg_left = 0;              // its body bytes not yet received
  TcpChannel* seg_channel = nullptr;  // where its body goes (null: discarded)
  // The last frame with a payload had a bulk one: a read into the buffer takes no more than the
  // rest of the segment and the headers behind it, so that a bulk payload after them is read
  // straight into place too, not into the buffer and copied from it. Frames with a small payload
  // turn it off (then reads take as much as the buffer holds: many frames per read).
  bool bulk = false;

  // Sending, in this order: the rest of a segment that went out in part (`cur`), control segments
  // (`ctl`), then data segments of the active QPs, one segment each in turn.
  struct Current {
    bool active = false;
    wire::SegmentHeaderBytes header{};
    size_t header_sent = 0;
    TcpChannel* channel = nullptr;  // body from its queue; null: from `orphan`
    uint32_t body_left = 0;
  } cur;
  std::vector<uint8_t> orphan;  // the unsent body of a segment whose QP left while it was going
  size_t orphan_sent = 0;
  std::vector<uint8_t> ctl;
  size_t ctl_sent = 0;
  std::vector<TcpChannel*> active;  // QPs with frames to send
  size_t turn = 0;                  // the next active QP to send

  bool HasOutput() const { return cur.active || ctl_sent < ctl.size() || !active.empty(); }
};

class TcpFabric::TcpChannel final : public Channel {
 public:
  struct TxItem {
    wire::FrameHeaderBytes header;
    std::array<iovec, Placement::kMaxRanges> iov;
    uint32_t iovcnt = 0;
    size_t total = 0;
    size_t sent = 0;
    std::vector<uint8_t> copy;  // the payload, when the frame holds its own copy (then iov[0])
    bool resent = false;        // a request sent before (a retry's go-back-N)

    // Copies the payload into `copy`; the frame no longer refers to the memory it came from.
    void Own();
    // Whether the payload refers to memory in [addr, addr + length).
    bool Refers(uint64_t addr, uint64_t length) const;
  };

  TcpChannel(TcpFabric* fabric, SoftDevice* local, uint32_t local_qpn, const verbs::Gid& remote_gid,
             uint32_t remote_qpn, uint32_t peer_send_psn, uint64_t epoch,
             const verbs::LinkKey& link_key, bool caller)
      : fabric_(fabric),
        local_(local),
        local_qpn_(local_qpn),
        remote_gid_(remote_gid),
        remote_qpn_(remote_qpn),
        peer_send_psn_(peer_send_psn),
        epoch_(epoch),
        link_key_(link_key),
        caller_(caller) {}
  ~TcpChannel() override;

  void OnLocalSendPsn(uint32_t psn) override {
    local_send_psn_ = psn;
    fresh_psn_ = psn;
    has_local_send_psn_ = true;
    fabric_->CheckPsn(*this);
  }
  void Transmit(const PacketHeader& header, std::span<const iovec> payload) override;
  void Quiesce() override { fabric_->Quiesce(*this); }
  // Within a progress pass the ACK waits in the queue: it leaves with the next sendmsg of its
  // connection, at the first pass after TcpFabricOptions::ack_delay_ns, or when a CQ is armed.
  void TransmitAck(const PacketHeader& header) override;
  // Waits in the queue for the end of the next pass (or an armed CQ) while the QP's queue holds
  // less than kHeldRequestBytes; then all that is queued goes now.
  void TransmitBehind(const PacketHeader& header, std::span<const iovec> payload) override;
  uint64_t window_bytes() const override {
    return fabric_->options_.qp_window_bytes == 0 ? UINT64_MAX : fabric_->options_.qp_window_bytes;
  }
  bool DeliveringSince(uint64_t since_ns) const override {
    return conn_ != nullptr && !dead_ && last_progress_ns_ >= since_ns;
  }

  void Enqueue(const PacketHeader& header, std::span<const iovec> payload);
  // A position in what is queued and not yet sent: frame `item` of txq_, `offset` bytes past
  // what of it was sent. {0, 0} is the first unsent byte.
  struct Cursor {
    size_t item = 0;
    uint64_t offset = 0;
  };
  // Appends iovecs for the next `len` bytes from `*at` (which it moves past them), in at most
  // `room` iovecs; returns the bytes they cover (`*used` iovecs) and counts, in `*frame_starts`,
  // the frames whose first byte they include. Work is proportional to what it covers.
  uint64_t Gather(Cursor* at, uint64_t len, iovec* iov, size_t room, size_t* used,
                  size_t* frame_starts) const;
  // Frames may go now: bound to a connection, accepted by the peer, not held by a test.
  bool Sendable() const { return conn_ != nullptr && attached_ && !held_ && !dead_; }

  TcpFabric* fabric_;
  SoftDevice* local_;
  uint32_t local_qpn_;
  verbs::Gid remote_gid_;
  uint32_t remote_qpn_;
  uint32_t peer_send_psn_;       // what the peer sends first (our RTR), put in our hello
  uint64_t epoch_;               // the connection epoch (our RTR): in our hello, checked in theirs
  verbs::LinkKey link_key_;      // our RTR's: signs our hello, checks theirs
  bool caller_;                  // we send the attach; the peer answers it
  uint32_t local_send_psn_ = 0;  // what we send first (our RTS)
  bool has_local_send_psn_ = false;
  bool has_hello_ = false;  // callee: the caller's hello, with its view of our PSN
  uint32_t hello_expects_ = 0;
  Conn* conn_ = nullptr;
  bool attach_sent_ = false;  // caller: our attach is queued on conn_
  bool attached_ = false;     // the peer's QP is on the other end: frames may flow
  bool active_ = false;       // in conn_->active
  bool dead_ = false;
  bool held_ = false;
  int drop_next_ = 0;
  // Bytes last read from the connection, or taken by it (resent requests only once the socket had
  // been full): what shows the link moves (DeliveringSince); see TcpFabric::Advance.
  uint64_t last_progress_ns_ = 0;
  uint32_t fresh_psn_ = 0;  // the first request PSN not yet sent: requests before it are resent
  uint64_t held_in_ = UINT64_MAX;  // the ACK hold (TcpFabric::ack_hold_) our queued ACK waits in
  std::deque<TxItem> txq_;
  uint64_t queued_ = 0;   // bytes in txq_ not yet taken by the socket
  uint64_t planned_ = 0;  // of those, bytes in the sendmsg being built (Flush)
  Cursor plan_end_;       // where planned_ ends in txq_

  // `n` bytes of the inbound payload arrived: copied from `src` into the placement when `src` is
  // set (already there when null); what the placement does not cover is discarded.
  void TakePayload(const uint8_t* src, size_t n);
  // Iovecs for the next `len` bytes of the inbound payload (the placement, then `discard` for
  // what it does not cover), at most `room`; returns how many.
  size_t PayloadIov(uint64_t len, iovec* iov, size_t room, std::span<uint8_t> discard) const;

  // Receiving: the frame being assembled from our data segments.
  std::array<uint8_t, wire::kFrameHeaderBytes> rx_header_bytes_{};
  size_t rx_header_have_ = 0;
  bool rx_in_payload_ = false;
  PacketHeader rx_header_;
  Placement rx_place_;
  uint64_t rx_left_ = 0;
  uint32_t rx_index_ = 0;
  size_t rx_offset_ = 0;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_
