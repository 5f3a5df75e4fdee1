// DqplbProtocol: WRITE_WITH_IMM on several data QPs by DQPLB (see vqp_protocol.h). Every data
// fragment is a WRITE_WITH_IMM whose immediate is a 24-bit sequence number, and the message ends
// with a tail: a SEND_WITH_IMM of {byte count, user immediate} with the next number. The peer
// reorders fragments and tails by number. At most one reorder window of numbers is outstanding
// (SeqWindow): beyond it the sender waits ("the DQPLB sequence window"). Every message that took
// a number ends with a tail, aborted or not, so the peer's stream stays aligned.
#ifndef BRAID_DATAPLANE_VQP_DQPLB_PROTOCOL_H_
#define BRAID_DATAPLANE_VQP_DQPLB_PROTOCOL_H_

#include "dataplane/vqp/seq_window.h"
#include "dataplane/vqp/vqp_protocol.h"

namespace braid::vqp {

class DqplbProtocol final : public VqpProtocol {
 public:
  // `window`: the peer's reorder window size (a power of two).
  DqplbProtocol(VirtualQp& vqp, uint32_t window) : vqp_(vqp) { window_.Init(window); }

  PostResult ShapeFragment(const SendEntry& entry, Fragment& piece) override;
  void FragmentPosted(SendEntry& entry, int qp) override;
  PostResult PostTail(uint32_t slot) override;
  uint32_t Imm(const Fragment& piece, const VirtualSendWr& wr) const override;
  void Release(const Fragment& piece) override;
  bool Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
              ReorderWindow::Entry* entry) const override;

 private:
  VirtualQp& vqp_;
  SeqWindow window_;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_DQPLB_PROTOCOL_H_
