// The TCP fabric's private types: a connection (Conn) and a QP's outbound path over it
// (TcpChannel). Included only by the fabric's own .cc files (tcp_fabric.cc, the protocol and
// progress; tcp_fabric_faults.cc, fault injection). Threading: the fabric's thread.
#ifndef BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_
#define BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <span>

#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/wire_format.h"

namespace braid::soft {

struct TcpFabric::Conn {
  int fd = -1;
  SoftDevice* device = nullptr;   // the local soft NIC
  TcpChannel* channel = nullptr;  // null while an accepted connection waits for its QP's RTR
  bool connecting = false;
  bool dead = false;
  bool want_out = false;  // EPOLLOUT armed: frames wait for room in the socket
  wire::HelloBytes hello_out{};
  size_t hello_sent = 0;
  bool hello_pending = false;
  bool held = false;        // accepted, hello read, waiting (unread) for its QP's RTR
  bool pending_tx = false;  // in TcpFabric::pending_tx_
  // kChallenge: a connection we made, waiting for the callee's challenge; kHello: one we
  // accepted, waiting for the caller's hello.
  enum class Rx : uint8_t { kChallenge, kHello, kHeader, kPayload } rx = Rx::kHeader;
  std::array<uint8_t, wire::kHelloBytes> rx_buf{};  // a hello, a challenge or a frame header
  wire::Challenge challenge;  // accepted: the nonce the caller's hello must answer
  size_t rx_have = 0;
  wire::Hello hello_in;
  PacketHeader rx_header;
  Placement rx_place;
  uint64_t rx_left = 0;
  uint32_t rx_index = 0;
  size_t rx_offset = 0;
};

class TcpFabric::TcpChannel final : public Channel {
 public:
  struct TxItem {
    wire::FrameHeaderBytes header;
    std::array<iovec, Placement::kMaxRanges> iov;
    uint32_t iovcnt = 0;
    size_t total = 0;
    size_t sent = 0;
  };

  TcpChannel(TcpFabric* fabric, SoftDevice* local, uint32_t local_qpn, const verbs::Gid& remote_gid,
             uint32_t remote_qpn, uint32_t peer_send_psn, uint64_t epoch,
             const verbs::LinkKey& link_key)
      : fabric_(fabric),
        local_(local),
        local_qpn_(local_qpn),
        remote_gid_(remote_gid),
        remote_qpn_(remote_qpn),
        peer_send_psn_(peer_send_psn),
        epoch_(epoch),
        link_key_(link_key) {}

  void OnLocalSendPsn(uint32_t psn) override {
    local_send_psn_ = psn;
    has_local_send_psn_ = true;
    fabric_->CheckPsn(*this);
  }
  ~TcpChannel() override {
    if (conn_ != nullptr) {
      // What is queued leaves first (best effort, without blocking): an ACK deferred by the last
      // progress pass was, on an HCA, sent before the completion it acknowledges was visible.
      if (!dead_) fabric_->Flush(*conn_);  // may kill the connection (a failed send)
    }
    if (conn_ != nullptr) {
      conn_->channel = nullptr;
      fabric_->Kill(*conn_);
    }
    std::erase(fabric_->channels_, this);
  }

  void Transmit(const PacketHeader& header, std::span<const iovec> payload) override {
    if (dead_ || drop_next_ > 0) {
      // The connection is gone (or a test drops this frame): the peer never sees it.
      if (drop_next_ > 0) --drop_next_;
      ++fabric_->stats_.frames_dropped;
      return;
    }
    Enqueue(header, payload);
    if (conn_ != nullptr && !conn_->connecting) fabric_->Flush(*conn_);
  }

  void Enqueue(const PacketHeader& header, std::span<const iovec> payload) {
    TxItem& t = txq_.emplace_back();
    wire::EncodeFrameHeader(header, &t.header);
    for (const iovec& v : payload) {
      if (t.iovcnt < t.iov.size() && v.iov_len > 0) t.iov[t.iovcnt++] = v;
    }
    t.total = wire::kFrameHeaderBytes + header.payload_len;
    if (conn_ != nullptr) fabric_->MarkPending(*conn_);
  }

  // Within a progress pass the ACK waits in the queue: it leaves with this channel's next frame
  // (one sendmsg for both) or at the start of the next pass.
  void TransmitAck(const PacketHeader& header) override {
    if (!fabric_->in_pass_ || dead_ || drop_next_ > 0) {
      Transmit(header, {});
      return;
    }
    Enqueue(header, {});
    deferred_pass_ = fabric_->pass_;
    fabric_->any_deferred_ = true;
    ++fabric_->stats_.acks_deferred;
  }

  uint64_t window_bytes() const override {
    return fabric_->options_.qp_window_bytes == 0 ? UINT64_MAX : fabric_->options_.qp_window_bytes;
  }

  bool DeliveringSince(uint64_t since_ns) const override {
    return conn_ != nullptr && !dead_ && last_progress_ns_ >= since_ns;
  }

  TcpFabric* fabric_;
  SoftDevice* local_;
  uint32_t local_qpn_;
  verbs::Gid remote_gid_;
  uint32_t remote_qpn_;
  uint32_t peer_send_psn_;       // what the peer sends first (our RTR), put in our hello
  uint64_t epoch_;               // the connection epoch (our RTR): in our hello, checked in theirs
  verbs::LinkKey link_key_;      // our RTR's: signs our hello, checks theirs
  uint32_t local_send_psn_ = 0;  // what we send first (our RTS)
  bool has_local_send_psn_ = false;
  bool has_hello_ = false;  // accepted: the caller's hello, with its view of our PSN
  uint32_t hello_expects_ = 0;
  Conn* conn_ = nullptr;
  bool dead_ = false;
  bool held_ = false;
  int drop_next_ = 0;
  uint64_t last_progress_ns_ = 0;        // bytes last read from or taken by the connection
  uint64_t deferred_pass_ = UINT64_MAX;  // the pass that queued an ACK without sending it
  std::deque<TxItem> txq_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_TCP_FABRIC_INTERNAL_H_
