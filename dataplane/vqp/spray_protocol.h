// SprayProtocol: WRITE_WITH_IMM on several data QPs by SPRAY (see vqp_protocol.h). The data goes
// as plain-write fragments on any data QP. Once all are acknowledged, a 1-byte fence READ on each
// other device that carried data (at the peer a READ cannot pass that device's earlier writes),
// then a notify: a SEND_WITH_IMM of {byte count, notify sequence number} with the user's
// immediate, on the lowest healthy data QP, into the peer's pool. Notify numbers follow posting
// order; the peer reorders by them, so notifies are pipelined ("a SPRAY notify follows its data").
// A message whose data is one fragment takes the express path: its notify is posted right behind
// the fragment on the same QP, without waiting for the acknowledgement (RC order places the data
// before the notify's receive completes; no other device carried data, so no fence). If that QP
// fails either piece, the notify is not replayed on its own: the message falls back to the
// acknowledged path (LeaveExpress, from VirtualQp::OnSendCompletion), whose fences and notify
// follow the fragment's replay.
#ifndef BRAID_DATAPLANE_VQP_SPRAY_PROTOCOL_H_
#define BRAID_DATAPLANE_VQP_SPRAY_PROTOCOL_H_

#include "dataplane/vqp/vqp_protocol.h"

namespace braid::vqp {

class SprayProtocol final : public VqpProtocol {
 public:
  explicit SprayProtocol(VirtualQp& vqp) : vqp_(vqp) {}

  void Accept(SendEntry& entry) override;
  void FragmentPosted(SendEntry& entry, int qp) override;
  PostResult PostTail(uint32_t slot) override;
  bool AdvanceAfterData(uint32_t slot) override;
  uint32_t Imm(const Fragment& piece, const VirtualSendWr& wr) const override;
  bool Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
              ReorderWindow::Entry* entry) const override;

 private:
  PostResult PostFences(uint32_t slot);
  PostResult PostNotify(uint32_t slot);
  // Writes slot `slot`'s notify payload into the control region; the notify's physical piece.
  Fragment PrepareNotify(uint32_t slot);

  VirtualQp& vqp_;
  uint32_t next_notify_seq_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_SPRAY_PROTOCOL_H_
