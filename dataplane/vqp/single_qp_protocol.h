// SingleQpProtocol: WRITE_WITH_IMM on a VQP of one data QP (see vqp_protocol.h). A write that fits
// one fragment is one WRITE_WITH_IMM; a longer (or empty) one is plain writes followed by a
// notify on the same QP, which RC order delivers after the data. No message QP, no receive pool:
// the user's receives take the notifies directly.
#ifndef BRAID_DATAPLANE_VQP_SINGLE_QP_PROTOCOL_H_
#define BRAID_DATAPLANE_VQP_SINGLE_QP_PROTOCOL_H_

#include "dataplane/vqp/vqp_protocol.h"

namespace braid::vqp {

class SingleQpProtocol final : public VqpProtocol {
 public:
  explicit SingleQpProtocol(VirtualQp& vqp) : vqp_(vqp) {}

  PostResult ShapeFragment(const SendEntry& entry, Fragment& piece) override;
  PostResult PostTail(uint32_t slot) override;
  uint32_t Imm(const Fragment& piece, const VirtualSendWr& wr) const override;
  bool Decode(const ibv_wc& wc, const wire::Payload& payload, uint32_t* seq,
              ReorderWindow::Entry* entry) const override;

 private:
  VirtualQp& vqp_;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_SINGLE_QP_PROTOCOL_H_
