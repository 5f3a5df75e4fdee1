#include "dataplane/soft_verbs/qp_transition.h"

#include <cerrno>
#include <cstring>

#include "dataplane/soft_verbs/shim_state.h"

namespace braid::soft {

namespace {

struct Rule {
  int required;
  int optional;
};

constexpr int kNone = -1;  // an illegal transition

// RC rules of IB spec table "QP state transition properties" (as the kernel's qp_state_table).
Rule RuleFor(ibv_qp_state from, ibv_qp_state to) {
  if (to == IBV_QPS_RESET) return {0, 0};  // from any state
  if (to == IBV_QPS_ERR) return {0, 0};
  switch (from) {
    case IBV_QPS_RESET:
      if (to == IBV_QPS_INIT) {
        return {IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0};
      }
      break;
    case IBV_QPS_INIT:
      if (to == IBV_QPS_INIT) return {0, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS};
      if (to == IBV_QPS_RTR) {
        return {IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
                IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX};
      }
      break;
    case IBV_QPS_RTR:
      if (to == IBV_QPS_RTS) {
        return {IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                    IBV_QP_MAX_QP_RD_ATOMIC,
                IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
                    IBV_QP_PATH_MIG_STATE};
      }
      break;
    case IBV_QPS_RTS:
      if (to == IBV_QPS_RTS) {
        return {0, IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_ALT_PATH |
                       IBV_QP_PATH_MIG_STATE | IBV_QP_MIN_RNR_TIMER};
      }
      break;
    default:
      break;
  }
  return {kNone, kNone};
}

}  // namespace

int CheckQpAttrMask(ibv_qp_state from, const ibv_qp_attr& attr, int attr_mask) {
  const ibv_qp_state to = (attr_mask & IBV_QP_STATE) ? attr.qp_state : from;
  if (to == IBV_QPS_SQD || to == IBV_QPS_SQE || from == IBV_QPS_SQD || from == IBV_QPS_SQE) {
    return EOPNOTSUPP;
  }
  if (to > IBV_QPS_ERR) return EINVAL;
  if ((attr_mask & IBV_QP_CUR_STATE) && attr.cur_qp_state != from) return EINVAL;
  const Rule rule = RuleFor(from, to);
  if (rule.required == kNone) return EINVAL;
  const int given = attr_mask & ~IBV_QP_STATE;
  if ((given & rule.required) != rule.required) return EINVAL;         // a required one is missing
  if ((given & ~(rule.required | rule.optional)) != 0) return EINVAL;  // one not allowed here
  if ((attr_mask & IBV_QP_PORT) && attr.port_num != 1) return EINVAL;
  if ((attr_mask & IBV_QP_PKEY_INDEX) && attr.pkey_index != 0) return EINVAL;
  if ((attr_mask & IBV_QP_PATH_MTU) &&
      (attr.path_mtu < IBV_MTU_256 || attr.path_mtu > IBV_MTU_4096)) {
    return EINVAL;
  }
  if ((attr_mask & IBV_QP_RETRY_CNT) && attr.retry_cnt > 7) return EINVAL;
  if ((attr_mask & IBV_QP_RNR_RETRY) && attr.rnr_retry > 7) return EINVAL;
  if ((attr_mask & IBV_QP_TIMEOUT) && attr.timeout > 31) return EINVAL;
  if ((attr_mask & IBV_QP_MIN_RNR_TIMER) && attr.min_rnr_timer > 31) return EINVAL;
  if ((attr_mask & IBV_QP_ALT_PATH) != 0) return EOPNOTSUPP;  // no automatic path migration
  return 0;
}

int ModifyQp(verbs::Qp& qp, ibv_qp_attr& current, const ibv_qp_attr& attr, int attr_mask) {
  const ibv_qp_state from = current.qp_state;
  if (const int err = CheckQpAttrMask(from, attr, attr_mask); err != 0) return err;
  const ibv_qp_state to = (attr_mask & IBV_QP_STATE) ? attr.qp_state : from;
  common::Status s;
  if (to == IBV_QPS_RESET) {
    s = from == IBV_QPS_RESET ? common::Status::Ok() : qp.ToReset();
  } else if (to == IBV_QPS_ERR) {
    s = qp.ToError();
  } else if (from == IBV_QPS_RESET && to == IBV_QPS_INIT) {
    verbs::QpInitParams p;
    p.port_num = attr.port_num;
    p.pkey_index = attr.pkey_index;
    p.access_flags = attr.qp_access_flags;
    s = qp.ToInit(p);
  } else if (from == IBV_QPS_INIT && to == IBV_QPS_RTR) {
    if (!attr.ah_attr.is_global) return EINVAL;  // soft NICs are RoCE: routed by GID
    verbs::QpRtrParams p;
    std::memcpy(p.remote.gid.raw.data(), attr.ah_attr.grh.dgid.raw, 16);
    p.remote.qp_num = attr.dest_qp_num;
    p.remote.psn = attr.rq_psn;
    p.path_mtu = attr.path_mtu;
    p.min_rnr_timer = attr.min_rnr_timer;
    p.max_dest_rd_atomic = attr.max_dest_rd_atomic;
    p.sgid_index = attr.ah_attr.grh.sgid_index;
    p.traffic_class = attr.ah_attr.grh.traffic_class;
    p.hop_limit = attr.ah_attr.grh.hop_limit;
    p.service_level = attr.ah_attr.sl;
    s = qp.ToRtr(p);
  } else if (from == IBV_QPS_RTR && to == IBV_QPS_RTS) {
    verbs::QpRtsParams p;
    p.sq_psn = attr.sq_psn;
    p.timeout = attr.timeout;
    p.retry_cnt = attr.retry_cnt;
    p.rnr_retry = attr.rnr_retry;
    p.max_rd_atomic = attr.max_rd_atomic;
    s = qp.ToRts(p);
  }
  // INIT→INIT and RTS→RTS change only attributes the soft QP does not use.
  if (!s.ok()) return ErrnoOf(s);
  // Record what was set (ibv_query_qp returns it).
  if (attr_mask & IBV_QP_PKEY_INDEX) current.pkey_index = attr.pkey_index;
  if (attr_mask & IBV_QP_PORT) current.port_num = attr.port_num;
  if (attr_mask & IBV_QP_ACCESS_FLAGS) current.qp_access_flags = attr.qp_access_flags;
  if (attr_mask & IBV_QP_AV) current.ah_attr = attr.ah_attr;
  if (attr_mask & IBV_QP_PATH_MTU) current.path_mtu = attr.path_mtu;
  if (attr_mask & IBV_QP_DEST_QPN) current.dest_qp_num = attr.dest_qp_num;
  if (attr_mask & IBV_QP_RQ_PSN) current.rq_psn = attr.rq_psn;
  if (attr_mask & IBV_QP_MAX_DEST_RD_ATOMIC) current.max_dest_rd_atomic = attr.max_dest_rd_atomic;
  if (attr_mask & IBV_QP_MIN_RNR_TIMER) current.min_rnr_timer = attr.min_rnr_timer;
  if (attr_mask & IBV_QP_SQ_PSN) current.sq_psn = attr.sq_psn;
  if (attr_mask & IBV_QP_TIMEOUT) current.timeout = attr.timeout;
  if (attr_mask & IBV_QP_RETRY_CNT) current.retry_cnt = attr.retry_cnt;
  if (attr_mask & IBV_QP_RNR_RETRY) current.rnr_retry = attr.rnr_retry;
  if (attr_mask & IBV_QP_MAX_QP_RD_ATOMIC) current.max_rd_atomic = attr.max_rd_atomic;
  current.qp_state = to;
  return 0;
}

}  // namespace braid::soft
