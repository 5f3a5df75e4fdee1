// VqpProtocol: how a virtual QP carries WRITE_WITH_IMM messages and keeps the peer's stream of
// them in posting order. Chosen once, when the VQP is created (Make):
//   SingleQpProtocol  one data QP: a write that fits one fragment carries the immediate itself;
//                     a longer one is followed by a notify on the same QP (RC order suffices).
//   SprayProtocol     plain-write fragments on any data QP; once they are acknowledged, a fence
//                     READ on each other device that carried data, then a sequence-numbered
//                     notify into the peer's pool ("a SPRAY notify follows its data").
//   DqplbProtocol     sequence-numbered WRITE_WITH_IMM fragments and a tail, reordered by the
//                     peer ("the DQPLB sequence window").
// Plain WRITE and READ, SEND and atomics never consult it: VirtualQp handles those alone, so a
// protocol is asked only where the message stream is concerned.
//
// Threading: the VQP's (engine) thread. Ownership: owned by its VirtualQp, which it references.
// Hot path: no method allocates.
#ifndef BRAID_DATAPLANE_VQP_VQP_PROTOCOL_H_
#define BRAID_DATAPLANE_VQP_VQP_PROTOCOL_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>

#include "dataplane/vqp/reorder_window.h"
#include "dataplane/vqp/send_entry.h"
#include "dataplane/vqp/vqp_types.h"
#include "dataplane/vqp/vqp_wire.h"

namespace braid::vqp {

class VirtualQp;

class VqpProtocol {
 public:
  // The protocol `config` names (its scheme and QP count), for `vqp`.
  static std::unique_ptr<VqpProtocol> Make(VirtualQp& vqp, const VirtualQpConfig& config);
  // The receiver's reorder window for `config`: its size (a power of two) and sequence width.
  static uint32_t ReorderWindowSize(const VirtualQpConfig& config);
  static int SequenceBits(const VirtualQpConfig& config);

  virtual ~VqpProtocol() = default;

  // Send path, WRITE_WITH_IMM only.
  // A virtual WR accepted by PostSend (called in posting order).
  virtual void Accept(SendEntry& entry) { (void)entry; }
  // Before one of its data fragments is posted: the fragment's opcode and sequence number.
  // kBlocked: wait for room (a full sequence window).
  virtual PostResult ShapeFragment(const SendEntry& entry, Fragment& piece) {
    (void)entry;
    (void)piece;
    return PostResult::kPosted;
  }
  // That fragment was posted, on data QP `qp`.
  virtual void FragmentPosted(SendEntry& entry, int qp) {
    (void)entry;
    (void)qp;
  }
  // Once its data fragments are out, in posting order: what ends the message, if anything.
  virtual PostResult PostTail(uint32_t slot) {
    (void)slot;
    return PostResult::kPosted;
  }
  // The steps after its data is acknowledged (SendEntry::after_data), from SendStage::kFence on,
  // ending in kDone. False: blocked on capacity (called again as room appears).
  virtual bool AdvanceAfterData(uint32_t slot) {
    (void)slot;
    return true;
  }

  // The immediate of a physical WR that carries one for the stream: a fragment with immediate,
  // a tail, a void.
  virtual uint32_t Imm(const Fragment& piece, const VirtualSendWr& wr) const = 0;
  // A stream piece (Fragment::stream) was acknowledged: its sequence number is free again.
  virtual void Release(const Fragment& piece) { (void)piece; }

  // Receive path: one arrival in a receive pool, and `payload` the 16 bytes it carried. Gives its
  // sequence number and reorder entry; false when it is malformed (counted by the caller).
  virtual bool Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
                      ReorderWindow::Entry* entry) const = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_VQP_PROTOCOL_H_
