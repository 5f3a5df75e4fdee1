// Translation of Braid's QP parameters into rdma-core's ibv_qp_attr + attribute mask.
// Pure functions, so the exact attributes handed to ibv_modify_qp(3) are unit-tested on machines
// without an RDMA device.
#ifndef BRAID_DATAPLANE_VERBS_IBVERBS_ATTR_H_
#define BRAID_DATAPLANE_VERBS_IBVERBS_ATTR_H_

#include <infiniband/verbs.h>

#include "dataplane/common/status.h"
#include "dataplane/verbs/provider.h"
#include "dataplane/verbs/qp_params.h"

namespace braid::verbs {

struct IbvQpAttr {
  ibv_qp_attr attr{};
  int mask = 0;
};

IbvQpAttr BuildInitAttr(const QpInitParams& params);
// RoCE (Ethernet) always routes by GID (GRH); IB routes by LID unless force_global_route.
IbvQpAttr BuildRtrAttr(const QpRtrParams& params, LinkLayer link_layer, uint8_t port_num);
IbvQpAttr BuildRtsAttr(const QpRtsParams& params);

// Checks value ranges the verbs encoding imposes (PSN 24 bits, retry_cnt ≤ 7, ...).
common::Status ValidateRtrParams(const QpRtrParams& params, LinkLayer link_layer);
common::Status ValidateRtsParams(const QpRtsParams& params);

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_IBVERBS_ATTR_H_
