#include "tests/testutil/rc_connect.h"

namespace braid::testing {

common::Status ConnectRc(verbs::Qp& a, const verbs::DeviceInfo& da, verbs::Qp& b,
                         const verbs::DeviceInfo& db, const RcOptions& o) {
  struct Side {
    verbs::Qp* qp;
    const verbs::DeviceInfo* self;
    const verbs::DeviceInfo* peer;
    verbs::Qp* peer_qp;
    uint32_t my_psn;
    uint32_t peer_psn;
  };
  const Side sides[2] = {{&a, &da, &db, &b, o.psn_a, o.psn_b}, {&b, &db, &da, &a, o.psn_b, o.psn_a}};
  for (const Side& s : sides) BRAID_RETURN_IF_ERROR(s.qp->ToInit({.access_flags = o.access}));
  for (const Side& s : sides) {
    verbs::QpRtrParams rtr;
    rtr.remote = {s.peer->gid, s.peer->lid, s.peer_qp->qp_num(), s.peer_psn};
    rtr.min_rnr_timer = o.min_rnr_timer;
    rtr.sgid_index = s.self->gid_index;
    rtr.path_mtu = s.self->active_mtu;
    BRAID_RETURN_IF_ERROR(s.qp->ToRtr(rtr));
  }
  for (const Side& s : sides) {
    BRAID_RETURN_IF_ERROR(s.qp->ToRts({.sq_psn = s.my_psn,
                                       .timeout = o.timeout,
                                       .retry_cnt = o.retry_cnt,
                                       .rnr_retry = o.rnr_retry}));
  }
  return common::Status::Ok();
}

common::Status PostRdma(verbs::Qp& qp, ibv_wr_opcode opcode, uint64_t local_addr, uint32_t length,
                        uint32_t lkey, uint64_t remote_addr, uint32_t rkey, uint64_t wr_id,
                        uint32_t imm) {
  ibv_sge sge{local_addr, length, lkey};
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = opcode;
  wr.sg_list = &sge;
  wr.num_sge = length > 0 ? 1 : 0;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = imm;
  wr.wr.rdma.remote_addr = remote_addr;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return qp.PostSend(&wr, &bad);
}

}  // namespace braid::testing
