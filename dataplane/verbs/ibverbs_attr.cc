#include "dataplane/verbs/ibverbs_attr.h"

namespace braid::verbs {

namespace {
constexpr uint32_t kPsnMask = 0xFFFFFF;
}  // namespace

IbvQpAttr BuildInitAttr(const QpInitParams& params) {
  IbvQpAttr out;
  out.attr.qp_state = IBV_QPS_INIT;
  out.attr.pkey_index = params.pkey_index;
  out.attr.port_num = params.port_num;
  out.attr.qp_access_flags = params.access_flags;
  out.mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
  return out;
}

IbvQpAttr BuildRtrAttr(const QpRtrParams& params, LinkLayer link_layer, uint8_t port_num) {
  IbvQpAttr out;
  ibv_qp_attr& a = out.attr;
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = params.path_mtu;
  a.dest_qp_num = params.remote.qp_num;
  a.rq_psn = params.remote.psn & kPsnMask;
  a.max_dest_rd_atomic = params.max_dest_rd_atomic;
  a.min_rnr_timer = params.min_rnr_timer;
  a.ah_attr.port_num = port_num;
  a.ah_attr.sl = params.service_level;
  const bool global = link_layer == LinkLayer::kEthernet || params.force_global_route;
  if (global) {
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = params.remote.gid.ToIbv();
    a.ah_attr.grh.sgid_index = params.sgid_index;
    a.ah_attr.grh.hop_limit = params.hop_limit;
    a.ah_attr.grh.traffic_class = params.traffic_class;
  }
  a.ah_attr.dlid = link_layer == LinkLayer::kInfiniband ? params.remote.lid : 0;
  out.mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
             IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  return out;
}

IbvQpAttr BuildRtsAttr(const QpRtsParams& params) {
  IbvQpAttr out;
  ibv_qp_attr& a = out.attr;
  a.qp_state = IBV_QPS_RTS;
  a.sq_psn = params.sq_psn & kPsnMask;
  a.timeout = params.timeout;
  a.retry_cnt = params.retry_cnt;
  a.rnr_retry = params.rnr_retry;
  a.max_rd_atomic = params.max_rd_atomic;
  out.mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
             IBV_QP_MAX_QP_RD_ATOMIC;
  return out;
}

common::Status ValidateRtrParams(const QpRtrParams& params, LinkLayer link_layer) {
  if (params.remote.psn > kPsnMask)
    return common::Status::InvalidArgument("remote PSN exceeds 24 bits");
  if (params.remote.qp_num > kPsnMask) {
    return common::Status::InvalidArgument("remote QP number exceeds 24 bits");
  }
  if (params.min_rnr_timer > 31) return common::Status::InvalidArgument("min_rnr_timer exceeds 31");
  if (params.path_mtu < IBV_MTU_256 || params.path_mtu > IBV_MTU_4096) {
    return common::Status::InvalidArgument("path_mtu is not an ibv_mtu value");
  }
  if ((link_layer == LinkLayer::kEthernet || params.force_global_route) &&
      params.remote.gid.IsZero()) {
    return common::Status::InvalidArgument("remote GID is required for a globally routed QP");
  }
  if (link_layer == LinkLayer::kInfiniband && !params.force_global_route &&
      params.remote.lid == 0) {
    return common::Status::InvalidArgument("remote LID is required on an InfiniBand port");
  }
  return common::Status::Ok();
}

common::Status ValidateRtsParams(const QpRtsParams& params) {
  if (params.sq_psn > kPsnMask) return common::Status::InvalidArgument("send PSN exceeds 24 bits");
  if (params.timeout > 31) return common::Status::InvalidArgument("timeout exceeds 31");
  if (params.retry_cnt > 7) return common::Status::InvalidArgument("retry_cnt exceeds 7");
  if (params.rnr_retry > 7) return common::Status::InvalidArgument("rnr_retry exceeds 7");
  return common::Status::Ok();
}

}  // namespace braid::verbs
