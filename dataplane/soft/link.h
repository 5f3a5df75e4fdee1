// The transport beneath soft devices.
//
// A Fabric carries packets between soft devices (the in-memory SimFabric for deterministic tests;
// a TCP fabric between processes). A connected soft QP owns one Channel: its outbound path to the
// remote QP. An inbound message is handed over in two steps, so a stream link can receive the
// payload straight into its final place: SoftDevice::BeginInbound(header) checks it and says where
// the payload goes (Placement); the link puts the bytes there; SoftDevice::EndInbound(header)
// completes it (completions, then the ACK: acknowledgement after placement).
//
// Threading: a fabric and every device attached to it are driven by one thread (progress runs
// inside Cq::Poll and Qp::Post*). Time comes from the fabric (virtual in the sim, monotonic on
// TCP).
#ifndef BRAID_DATAPLANE_SOFT_LINK_H_
#define BRAID_DATAPLANE_SOFT_LINK_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/soft/packet.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

class SoftDevice;

// Outbound path of one connected QP. Destroying it discards what it has not delivered.
class Channel {
 public:
  virtual ~Channel() = default;
  // Sends `header` followed by the bytes of `payload` (header.payload_len in all), gathered from
  // where they are: a link may read them after this call returns (zero copy). The QP keeps them
  // valid until the WR they belong to completes (responses: while the region is registered).
  virtual void Transmit(const PacketHeader& header, std::span<const iovec> payload) = 0;
  // The QP left service (it entered the error state and flushed its WRs, whose memory the
  // application may now reuse): from this call on the link touches none of that memory. Frames
  // not yet sent are dropped (the rest of one already on a shared stream is copied, so the stream
  // stays whole) and an inbound payload being placed is discarded. Default: nothing is held.
  virtual void Quiesce() {}
  // An ACK of a request that completed a receive at this side: its application is likely to
  // answer at once, so a link may hold the ACK briefly and send it together with the answer
  // (ACK coalescing), for a bounded time (TcpFabricOptions::ack_delay_ns). Default: sent at once.
  virtual void TransmitAck(const PacketHeader& header) { Transmit(header, {}); }
  // A request posted behind others of its QP that await their responses: its poller comes back
  // for those (no ACK is taken but by a progress pass), so a link may hold it until the end of
  // the next pass, or until the poller arms a CQ to sleep (Fabric::SendHeldFrames), and send it
  // with whatever else was posted meanwhile (a bounded amount). Default: sent at once.
  virtual void TransmitBehind(const PacketHeader& header, std::span<const iovec> payload) {
    Transmit(header, payload);
  }
  // How many bytes of requests (WRITE and SEND payloads, READ lengths) a QP keeps transmitted and
  // unacknowledged on this link; the rest wait in its send queue until ACKs make room, and one
  // request is always let out whatever its size. A stream link bounds it so that its socket
  // buffers, and the caches the bytes pass through, stay small; the default is no bound.
  virtual uint64_t window_bytes() const { return UINT64_MAX; }
  // The QP reached RTS and sends from `psn` on (a link may check it against the peer's view).
  virtual void OnLocalSendPsn(uint32_t psn) { (void)psn; }
  // A reliable, in-order link (TCP) that moved bytes of this connection at or after `since_ns`:
  // the peer is alive and what was sent is on its way, so an ACK timeout means a slow queue, not
  // a loss, and retransmitting would only add to the queue. False on links that lose frames.
  virtual bool DeliveringSince(uint64_t since_ns) const {
    (void)since_ns;
    return false;
  }
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  // A device joins with its GID; kAlreadyExists when the GID is taken.
  virtual common::Status Attach(SoftDevice* device) = 0;
  virtual void Detach(SoftDevice* device) = 0;
  // Opened at RTR with its parameters: the peer (remote.gid, remote.qp_num), the PSN the peer
  // will send first (remote.psn), the connection epoch and link key.
  virtual common::Result<std::unique_ptr<Channel>> OpenChannel(SoftDevice* local,
                                                               uint32_t local_qpn,
                                                               const verbs::QpRtrParams& rtr) = 0;
  // The QP `qp_num` of `device` is gone: whatever the fabric holds for it (a caller's connection
  // waiting for its RTR) is let go. Default: nothing is held.
  virtual void ForgetQp(SoftDevice* device, uint32_t qp_num) {
    (void)device;
    (void)qp_num;
  }
  // A region [addr, addr + length) of `device` was deregistered (its memory may be unmapped next):
  // queued frames' bytes in it are copied now, and inbound payloads being placed into it are cut
  // off (the rest is discarded; the receiving QP fails that message as an HCA fails an access to
  // a key that is gone). Default: nothing is held past the call that queued it.
  virtual void ForgetMemory(SoftDevice* device, uint64_t addr, uint64_t length) {
    (void)device;
    (void)addr;
    (void)length;
  }
  // Fault injection: break one QP's connection, or every connected QP of a device.
  virtual common::Status BreakQp(const verbs::Qp& qp) {
    (void)qp;
    return common::Status::NotSupported("this link has no fault hooks");
  }
  virtual common::Status BreakDevice(const SoftDevice* device) {
    (void)device;
    return common::Status::NotSupported("this link has no fault hooks");
  }
  // Whether `device`'s link is up now (its port is active). Default: always.
  virtual common::Result<bool> PortActive(const SoftDevice& device) const {
    (void)device;
    return true;
  }
  virtual uint64_t NowNs() const = 0;
  // Delivers what is due and fires due timers; bounded work per call.
  virtual void Progress() = 0;
  // A poller is about to sleep (it armed a CQ): what Progress() would send later, were it
  // called (held ACKs, requests posted behind others), leaves now. Default: nothing is held.
  virtual void SendHeldFrames() {}
  // Appends the link's counters (verbs::Provider::ReadCounters). Default: none.
  virtual void ReadCounters(std::vector<verbs::ProviderCounter>* out) const { (void)out; }
  // Frames transmitted between BeginBatch() and the matching EndBatch() may be held and sent at
  // EndBatch() (verbs::Device::BeginPostBatch). Calls nest. Default: nothing is held.
  virtual void BeginBatch() {}
  virtual void EndBatch() {}
  // Readable when Progress() has inbound work (socket activity); -1 when nothing arrives on its
  // own (the in-memory sim moves only when driven).
  virtual int wait_fd() const { return -1; }
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_LINK_H_
