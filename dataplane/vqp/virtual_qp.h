// VirtualQp: N physical RC data QPs, possibly on several devices, that act as one QP.
//
// Layout. Data QP i lives on device i mod D of the devices given (interleaved). With more than
// one data QP there is one more physical QP, the *message QP*: it alone carries SEND and atomics
// and the receives users post for SENDs, so user receives never share a receive queue
// with the pools below. Every data QP of a multi-QP VQP has a receive pool of `qp_capacity`
// small receives, pre-posted at Connect (the DQPLB sequence window) and re-posted as they complete.
// A single-QP VQP has no message QP and no pool.
//
// Send path. A virtual WR is split into fragments of at most `fragment_size` (64-bit lengths). The
// scheduler puts each on the healthy QP with room whose queue would drain first: its outstanding
// bytes times its measured drain rate (DrainRate), interleaving devices, so unequal links each get
// what they carry. Virtual WRs are dispatched in posting order.
//   WRITE, READ     fragments of the same opcode, on any data QP.
//   WRITE_WITH_IMM  SPRAY: plain-write fragments; once all are acknowledged, and after a 1-byte
//                   fence READ on each other device that carried data (a SPRAY notify follows its
//                   data), a notify: a SEND_WITH_IMM of {byte count, notify seq} with the user's
//                   immediate, into the peer's pool. Notifies are pipelined and reordered by seq at
//                   the peer. DQPLB: WRITE_WITH_IMM fragments whose immediate is a 24-bit sequence
//                   number (only these take sequence numbers), then a tail SEND_WITH_IMM carrying
//                   {byte count, user immediate}; the peer reorders by sequence number.
//                   Single QP: one WRITE_WITH_IMM when it fits one fragment, else plain writes and
//                   a notify on the same QP.
//   SEND, atomics   not fragmented; on the message QP (or the single QP); never replayed.
// How WRITE_WITH_IMM is carried is the VQP's protocol (vqp_protocol.h), chosen at creation from
// the scheme and QP count; everything else above is common to the three.
// Every physical WR carries a WrTag, so completions are routed by tag and status, never by opcode.
// A physical QP turns Dead on its first error completion and is never scheduled again.
// With failover on (idempotent pieces fail over), an idempotent piece (write/read fragment, DQPLB
// fragment or tail, notify, fence) that failed on a dead QP is re-posted on a healthy one, up to
// `retry_budget` times; otherwise its virtual WR completes with the first real error once its other
// pieces have drained. When no data QP is healthy, posts fail at once and in-flight work completes
// with an error (a dead QP gets no new work). Every virtual WR completes exactly once, in posting
// order per direction.
//
// Receive path. A receive of length 0 is the notification of one write-with-imm message; it
// completes with the sender's immediate and the byte count. A message that arrives before its
// receive was posted is buffered. A receive of length > 0 takes one SEND.
//
// Threading: the engine thread only. PostSend, PostRecv and OnCompletion allocate nothing.
// Ownership: created by Create(); owns its physical QPs and control region; destroying it
// moves every QP to ERR, collects the flushes and completes in-flight virtual WRs with
// IBV_WC_WR_FLUSH_ERR (every virtual WR completes once). REQUIRES: the VirtualCq and the PDs
// outlive it.
#ifndef BRAID_DATAPLANE_VQP_VIRTUAL_QP_H_
#define BRAID_DATAPLANE_VQP_VIRTUAL_QP_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dataplane/common/clock.h"
#include "dataplane/verbs/provider.h"
#include "dataplane/vqp/business_card.h"
#include "dataplane/vqp/drain_rate.h"
#include "dataplane/vqp/key_table.h"
#include "dataplane/vqp/reorder_window.h"
#include "dataplane/vqp/ring.h"
#include "dataplane/vqp/send_entry.h"
#include "dataplane/vqp/virtual_cq.h"
#include "dataplane/vqp/vqp_protocol.h"
#include "dataplane/vqp/vqp_types.h"
#include "dataplane/vqp/vqp_wire.h"
#include "dataplane/vqp/wr_tag.h"

namespace braid::vqp {

struct VirtualQpCounters {
  uint64_t fragments_posted = 0;
  uint64_t bytes_posted = 0;
  uint64_t notifies_posted = 0;
  uint64_t fences_posted = 0;
  uint64_t failovers = 0;  // pieces re-posted on another QP
  uint64_t qps_died = 0;
  uint64_t duplicates_dropped = 0;
  uint64_t protocol_errors = 0;  // arrivals outside the window, malformed notifies
  uint64_t buffered_messages = 0;
  uint64_t parked_arrivals = 0;  // arrivals held back by the receive window (back-pressure)
};

// Bytes and fragments of user data a physical QP moved (successful fragment completions).
struct QpTraffic {
  uint64_t write_bytes = 0;
  uint64_t write_fragments = 0;
  uint64_t read_bytes = 0;
  uint64_t read_fragments = 0;
};

class VirtualQp {
 public:
  // Creates the physical QPs on the devices of `cq` for which `pds` (one entry per CQ device,
  // nullptr = unused) names a protection domain, and registers its control region there.
  static common::Result<std::unique_ptr<VirtualQp>> Create(
      VirtualCq& cq, std::span<verbs::ProtectionDomain* const> pds, const VirtualQpConfig& config);
  ~VirtualQp();
  VirtualQp(const VirtualQp&) = delete;
  VirtualQp& operator=(const VirtualQp&) = delete;

  uint32_t vqp_num() const { return vqp_num_; }
  const VirtualQpConfig& config() const { return config_; }
  bool connected() const { return connected_; }
  // The card describing this side; `epoch` is recorded in it.
  BusinessCard LocalCard(uint64_t epoch = 0) const;
  // Validates the peer's card against ours and brings every physical QP to RTS. `epoch`: the
  // connection epoch both sides agreed on (max of the two cards'), given to every RTR.
  common::Status Connect(const BusinessCard& remote, uint64_t epoch = 0);

  // Key tables (keys are per device). `lkeys`: one per device of the CQ (0 where unused); `rkeys`:
  // one per device of the peer's card, in card order.
  common::Result<uint32_t> AddLocalKeys(std::span<const uint32_t> lkeys);
  common::Result<uint32_t> AddRemoteKeys(std::span<const uint32_t> rkeys);
  common::Status RemoveLocalKeys(uint32_t handle) { return local_keys_.Remove(handle); }
  common::Status RemoveRemoteKeys(uint32_t handle) { return remote_keys_.Remove(handle); }

  // Queues a virtual WR. Errors describe a request that was not accepted (nothing changed);
  // once accepted, its outcome arrives as exactly one VirtualWc. kNoResource: the send ring is
  // full (retry after polling).
  common::Status PostSend(const VirtualSendWr& wr);
  common::Status PostRecv(const VirtualRecvWr& wr);

  // Physical QPs: data QPs 0..num_qps-1, then the message QP (multi-QP only).
  int num_physical_qps() const { return static_cast<int>(qps_.size()); }
  const verbs::Qp& physical_qp(int index) const { return *qps_[static_cast<size_t>(index)].qp; }
  int physical_device(int index) const { return qps_[static_cast<size_t>(index)].device; }
  QpHealth health(int index) const { return qps_[static_cast<size_t>(index)].health; }
  // What killed a Dead QP (its first error completion); IBV_WC_SUCCESS while it lives.
  ibv_wc_status death(int index) const { return qps_[static_cast<size_t>(index)].death; }
  uint32_t outstanding(int index) const { return qps_[static_cast<size_t>(index)].outstanding; }
  const QpTraffic& traffic(int index) const { return qps_[static_cast<size_t>(index)].traffic; }
  // Measured drain rate of physical QP `index` in bytes per second; 0 while unknown.
  double drain_rate(int index) const {
    const double ns = qps_[static_cast<size_t>(index)].rate.ns_per_byte();
    return ns > 0 ? 1e9 / ns : 0;
  }
  // Measured drain rate of CQ device `device` for this VQP (the scheduler's weight), bytes/s.
  double device_drain_rate(int device) const {
    const double ns = devices_.load[static_cast<size_t>(device)].rate.ns_per_byte();
    return ns > 0 ? 1e9 / ns : 0;
  }
  int healthy_data_qps() const { return healthy_data_qps_; }
  // Reconnected or cooled QP `index` waits for its probe (a zero-length WRITE) to come back.
  bool probing(int index) const { return qps_[static_cast<size_t>(index)].probing; }
  // Why QP `index` cooled down last ("" if it never did).
  const std::string& cooling_cause(int index) const {
    return qps_[static_cast<size_t>(index)].cooling_cause;
  }
  // Cooldown (see VirtualQpConfig::stall_ms): cools data QPs that stalled, and probes cooled
  // QPs whose cooldown has passed (re-admitted when the probe answers). Called every few ms.
  void CheckStalls(uint64_t now_ns);
  // Recovery of one dead physical QP (dead QPs come back), in three steps both sides take:
  //  1. BeginReset(i): the QP takes no more work and moves to ERR (a QP the peer saw die may still
  //     look healthy here); its WRs come back flushed.
  //  2. Once ResetReady(i) (nothing outstanding or posted on it), ResetQp(i, psn) returns it to
  //     INIT and gives the card entry the peer needs (same QP number, the new first PSN).
  //  3. ReconnectQp(i, peer, epoch) takes the peer's new entry and the epoch both agreed on for
  //     this reconnect (the soft link refuses a caller of another epoch): RTR, RTS, its receive
  //     pool re-posted; a
  //     zero-length WRITE then probes the path, and only its success makes the QP Healthy again
  //     (a reconnect over a link that is still down fails the probe, not user work).
  // kFailedPrecondition when a step comes out of order. The message QP recovers the same way; what
  // it carried when it died (SENDs, atomics, receives for SENDs) completed with errors and is
  // never replayed.
  common::Status BeginReset(int index);
  bool ResetReady(int index) const;
  common::Result<QpCard> ResetQp(int index, uint32_t psn);
  common::Status ReconnectQp(int index, const QpCard& peer, uint64_t epoch = 0);

  // Operator drain of every QP on `device` (Healthy → Draining) and its undo.
  common::Status DrainDevice(int device);
  common::Status UndrainDevice(int device);
  uint32_t pending_sends() const { return static_cast<uint32_t>(send_.tail - send_.head); }
  uint32_t pending_recvs() const { return static_cast<uint32_t>(recv_.tail - recv_.head); }
  const VirtualQpCounters& counters() const { return counters_; }

  // VirtualCq-internal: one physical completion of physical QP `qp_index`.
  void OnCompletion(uint16_t qp_index, const ibv_wc& wc);

 private:
  struct CreateKey {
   private:
    CreateKey() = default;
    friend class VirtualQp;
  };

 public:
  VirtualQp(CreateKey, VirtualCq& cq, const VirtualQpConfig& config, uint32_t num_devices);

 private:
  struct PhysQp {
    std::unique_ptr<verbs::Qp> qp;
    int device = 0;              // index into the CQ's devices
    uint32_t remote_device = 0;  // index into the peer card's devices
    QpHealth health = QpHealth::kHealthy;
    ibv_wc_status death = IBV_WC_SUCCESS;  // what killed it (its first real error)
    uint32_t outstanding = 0;              // send WRs in flight
    uint64_t outstanding_bytes = 0;
    DrainRate rate;  // how fast it drains its send queue (the scheduler's weight)
    uint32_t posted_recvs = 0;
    bool has_pool = false;
    QpTraffic traffic;
    bool resetting = false;  // between BeginReset and ReconnectQp
    uint32_t reset_psn = 0;  // the first PSN chosen by ResetQp
    bool probing = false;    // reconnected, waiting for its probe (health kDraining meanwhile)
    uint32_t strikes = 0;    // stalls and deaths not yet forgiven
    uint64_t last_strike_ns = 0;
    uint64_t cooldown_until_ns = 0;
    std::string cooling_cause;
  };
  struct RecvEntry {
    VirtualRecvWr wr;
    bool done = false;
    ibv_wc_status status = IBV_WC_SUCCESS;
    ibv_wc_opcode opcode = IBV_WC_RECV_RDMA_WITH_IMM;
    uint32_t imm = 0;
    uint64_t bytes = 0;
  };
  struct Message {
    uint32_t imm;
    uint64_t bytes;
  };
  // An arrival beyond the reorder window, kept in its pool slot (whose receive is not re-posted,
  // so the sender meets RNR: back-pressure, never loss: the DQPLB sequence window).
  struct Parked {
    bool valid = false;
    uint32_t seq = 0;
    ReorderWindow::Entry entry;
  };
  // What this VQP has outstanding on one device, and how fast that device drains it.
  struct DeviceLoad {
    uint32_t outstanding = 0;  // data QPs' send WRs
    uint64_t outstanding_bytes = 0;
    DrainRate rate;
    uint64_t last_progress_ns = 0;  // went busy or completed a WR
  };

  // Creation and connection (virtual_qp.cc).
  common::Status Init(std::span<verbs::ProtectionDomain* const> pds);
  uint32_t ReservedEntries(const PhysQp& qp) const;
  common::Status ToRtrRts(int index, const QpCard& peer, uint32_t psn, uint64_t epoch);
  common::Status PostPool(int index);
  bool multi() const { return config_.num_qps > 1; }
  uint64_t NowNs() const {
    return config_.clock_ns != nullptr ? config_.clock_ns() : common::MonotonicNs();
  }
  int message_qp() const { return multi() ? static_cast<int>(config_.num_qps) : 0; }
  uint8_t* control(size_t offset) { return control_.bytes.data() + offset; }
  uint64_t control_addr(size_t offset) const {
    return reinterpret_cast<uint64_t>(control_.bytes.data() + offset);
  }
  size_t PoolSlotOffset(uint32_t slot) const { return slot * 16; }
  size_t NotifyPayloadOffset(uint32_t send_slot) const {
    return control_.notify_base + send_slot * 16;
  }
  size_t UserRecvSlotOffset(uint32_t recv_slot) const {
    return control_.user_recv_base + recv_slot * 16;
  }
  void MarkDead(int qp_index, ibv_wc_status status);
  // One more strike against data QP `qp_index`: its cooldown starts at `now` (cooldown).
  void Strike(int qp_index, uint64_t now, std::string cause);
  // Posts the zero-length WRITE whose completion re-admits QP `index` (OnProbeCompletion).
  common::Status PostProbe(int index);
  void AbortAll(ibv_wc_status status);
  void Drain();

  // Send path (vqp_send.cc).
  common::Status ValidateSend(const VirtualSendWr& wr) const;
  common::Status CheckKeys(uint32_t local, uint32_t remote, bool data_qps, uint64_t length) const;
  void Pump();
  bool Advance(uint32_t slot);  // false: blocked on capacity
  PostResult PostDataFragments(uint32_t slot);
  PostResult PostPiece(Fragment piece, int qp_index);
  // PostPiece on the data QP the scheduler picks, picking again while a QP dies on post.
  PostResult PostOnDataQp(const Fragment& piece);
  PostResult Submit(uint32_t frag_slot);
  int PickQp(WrKind kind, int device, uint64_t length = 0) const;
  bool AnyHealthyFor(WrKind kind, int device) const;
  void RetryPending();
  void OnSendCompletion(int qp_index, const ibv_wc& wc, uint32_t frag_slot);
  void OnProbeCompletion(int qp_index, const ibv_wc& wc);
  // `release_seq`: the piece's sequence number is acknowledged (false when it is owed).
  void FinishPiece(uint32_t frag_slot, ibv_wc_status status, bool release_seq = true);
  void Owe(uint32_t seq, OwedKind kind);
  // Fails the piece's virtual WR part and keeps its sequence number owed.
  void OwePiece(uint32_t frag_slot, ibv_wc_status status);
  void PayOwed();
  void ReportSends();
  void Stall(uint32_t slot);  // blocked on capacity past the dispatch cursor
  SendEntry& Send(uint64_t index) { return send_.entries[index & ring_mask_]; }
  uint32_t SlotOf(uint64_t index) const { return static_cast<uint32_t>(index & ring_mask_); }

  // What the protocols use of the VQP (besides PickQp, PostPiece, PostOnDataQp and Owe).
  friend class SingleQpProtocol;
  friend class SprayProtocol;
  friend class DqplbProtocol;
  SendEntry& entry(uint32_t slot) { return send_.entries[slot]; }
  // The notify or tail payload of send slot `slot`, in the control region.
  void WritePayload(uint32_t slot, const wire::Payload& payload);

  // Receive path (vqp_recv.cc).
  common::Status PostPhysicalRecv(int qp_index, WrKind kind, uint32_t slot, ibv_sge sge);
  common::Status PostPoolRecv(int qp_index, uint32_t pool_slot);
  void OnRecvCompletion(int qp_index, const ibv_wc& wc, WrKind kind, uint32_t slot);
  // Returns false when the arrival was parked (its pool receive must not be re-posted yet).
  bool OnPoolMessage(const ibv_wc& wc, uint32_t pool_slot);
  void DrainWindow();
  // One complete message; bit 63 of `bytes` marks a message the sender aborted.
  void Deliver(uint32_t imm, uint64_t bytes);
  void ReportRecvs();
  void SetHealth(int qp_index, QpHealth health);
  // Moves every QP on `device` in health `from` to `to`; kNotFound when it has none there.
  common::Status ChangeDeviceHealth(int device, QpHealth from, QpHealth to);
  RecvEntry& Recv(uint64_t index) { return recv_.entries[index & ring_mask_]; }

  bool DeviceDrained(int device) const { return (devices_.drained >> device) & 1u; }
  static constexpr uint64_t kForgiveStrikesNs = 10'000'000'000;

  // The devices of the CQ this VQP uses, and what it has on each (indexed by CQ device).
  struct Devices {
    std::vector<int> used;           // CQ device indices this VQP uses
    uint32_t drained = 0;            // bit per CQ device the operator drained
    std::vector<DeviceLoad> load;    // the scheduler's weights
    std::vector<uint32_t> reserved;  // CQ entries reserved
  };
  // What the peer's card said (recovery re-connects with it).
  struct Peer {
    std::vector<DeviceCard> devices;
    std::vector<uint32_t> control_rkeys;  // per peer device
    uint64_t control_addr = 0;
    verbs::LinkKey link_key{};  // the connection's, from both cards (every RTR, recovery too)
    // (local device, peer device) pairs of the data QPs and of the message QP: the key checks.
    std::vector<std::pair<uint32_t, uint32_t>> data_key_devices;
    std::pair<uint32_t, uint32_t> message_key_device{0, 0};
  };
  // Control region: pool slots, notify/tail payloads, single-QP receive slots, fence words.
  struct Control {
    common::ZeroedArray<uint8_t> bytes;
    std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs;  // per CQ device
    size_t notify_base = 0;
    size_t user_recv_base = 0;
    size_t fence_offset = 0;
  };
  // Virtual send WRs, in a power-of-two ring (ring_mask_) of which at most max_virtual_wrs entries
  // are in use: reported up to head, dispatched up to dispatch, posted up to tail. Then the
  // physical pieces in flight by fragment slot (the WrTag's slot), and the work waiting for a QP.
  struct SendQueue {
    common::ZeroedArray<SendEntry> entries;  // zeroed arrays: memory as far as used
    uint64_t head = 0;
    uint64_t dispatch = 0;
    uint64_t tail = 0;
    common::ZeroedArray<Fragment> frags;
    std::vector<uint32_t> free_frags;
    Ring<uint32_t> retry;    // fragment slots to re-post
    Ring<Owed> owed;         // owed sequence numbers
    Ring<uint32_t> stalled;  // send slots blocked on capacity past the dispatch cursor
  };
  // Virtual receive WRs (same ring size), and the messages and arrivals waiting for them.
  struct RecvQueue {
    common::ZeroedArray<RecvEntry> entries;
    uint64_t head = 0;
    uint64_t tail = 0;
    uint64_t match = 0;               // next length-0 receive to match (multi-QP)
    Ring<Message> buffered;           // messages that arrived before their receive
    bool message_incomplete = false;  // a void marker was seen in the message being reassembled
    common::ZeroedArray<Parked> parked;  // per pool slot
    uint32_t parked_count = 0;
  };

  VirtualCq& cq_;
  VirtualQpConfig config_;
  uint32_t vqp_num_;
  bool connected_ = false;
  bool destroying_ = false;
  std::vector<PhysQp> qps_;
  Devices devices_;
  KeyTable local_keys_;
  KeyTable remote_keys_;
  verbs::LinkKey link_secret_{};  // this VQP's half of the link key (its card's)
  Peer peer_;
  Control control_;

  uint64_t ring_mask_ = 0;
  SendQueue send_;
  uint32_t rr_ = 0;
  int healthy_data_qps_ = 0;  // data QPs in Healthy
  ibv_wc_status last_error_ = IBV_WC_WR_FLUSH_ERR;

  RecvQueue recv_;
  ReorderWindow window_;

  VirtualQpCounters counters_;
  std::unique_ptr<VqpProtocol> protocol_;  // chosen at creation
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_VIRTUAL_QP_H_
