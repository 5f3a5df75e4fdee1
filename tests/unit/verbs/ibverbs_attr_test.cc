#include "dataplane/verbs/ibverbs_attr.h"

#include <gtest/gtest.h>

namespace braid::verbs {
namespace {

QpRtrParams SampleRtr() {
  QpRtrParams p;
  p.remote.gid = *Gid::ParseIpv4("10.1.2.3");
  p.remote.lid = 0x1a;
  p.remote.qp_num = 0x1234;
  p.remote.psn = 0xABCDEF;
  p.path_mtu = IBV_MTU_2048;
  p.min_rnr_timer = 12;
  p.max_dest_rd_atomic = 8;
  p.sgid_index = 3;
  p.traffic_class = 106;
  p.hop_limit = 32;
  p.service_level = 2;
  return p;
}

TEST(IbverbsAttrTest, InitCarriesPortPkeyAndAccess) {
  IbvQpAttr a = BuildInitAttr({.port_num = 2, .pkey_index = 1,
                               .access_flags = IBV_ACCESS_REMOTE_WRITE});
  EXPECT_EQ(a.attr.qp_state, IBV_QPS_INIT);
  EXPECT_EQ(a.attr.port_num, 2);
  EXPECT_EQ(a.attr.pkey_index, 1);
  EXPECT_EQ(a.attr.qp_access_flags, static_cast<unsigned>(IBV_ACCESS_REMOTE_WRITE));
  EXPECT_EQ(a.mask, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

TEST(IbverbsAttrTest, RtrForRoceRoutesByGid) {
  IbvQpAttr a = BuildRtrAttr(SampleRtr(), LinkLayer::kEthernet, 1);
  EXPECT_EQ(a.attr.qp_state, IBV_QPS_RTR);
  EXPECT_EQ(a.attr.path_mtu, IBV_MTU_2048);
  EXPECT_EQ(a.attr.dest_qp_num, 0x1234u);
  EXPECT_EQ(a.attr.rq_psn, 0xABCDEFu);
  EXPECT_EQ(a.attr.max_dest_rd_atomic, 8);
  EXPECT_EQ(a.attr.min_rnr_timer, 12);
  EXPECT_EQ(a.attr.ah_attr.is_global, 1);
  EXPECT_EQ(a.attr.ah_attr.dlid, 0);
  EXPECT_EQ(a.attr.ah_attr.port_num, 1);
  EXPECT_EQ(a.attr.ah_attr.sl, 2);
  EXPECT_EQ(Gid::FromIbv(a.attr.ah_attr.grh.dgid), *Gid::ParseIpv4("10.1.2.3"));
  EXPECT_EQ(a.attr.ah_attr.grh.sgid_index, 3);
  EXPECT_EQ(a.attr.ah_attr.grh.hop_limit, 32);
  EXPECT_EQ(a.attr.ah_attr.grh.traffic_class, 106);
  EXPECT_EQ(a.mask, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                        IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}

TEST(IbverbsAttrTest, RtrForInfinibandRoutesByLid) {
  IbvQpAttr a = BuildRtrAttr(SampleRtr(), LinkLayer::kInfiniband, 1);
  EXPECT_EQ(a.attr.ah_attr.is_global, 0);
  EXPECT_EQ(a.attr.ah_attr.dlid, 0x1a);
  QpRtrParams global = SampleRtr();
  global.force_global_route = true;
  IbvQpAttr g = BuildRtrAttr(global, LinkLayer::kInfiniband, 1);
  EXPECT_EQ(g.attr.ah_attr.is_global, 1);
  EXPECT_EQ(g.attr.ah_attr.dlid, 0x1a);
}

TEST(IbverbsAttrTest, RtsCarriesTimersAndPsn) {
  IbvQpAttr a = BuildRtsAttr({.sq_psn = 0x123, .timeout = 20, .retry_cnt = 6, .rnr_retry = 7,
                              .max_rd_atomic = 4});
  EXPECT_EQ(a.attr.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(a.attr.sq_psn, 0x123u);
  EXPECT_EQ(a.attr.timeout, 20);
  EXPECT_EQ(a.attr.retry_cnt, 6);
  EXPECT_EQ(a.attr.rnr_retry, 7);
  EXPECT_EQ(a.attr.max_rd_atomic, 4);
  EXPECT_EQ(a.mask, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                        IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

TEST(IbverbsAttrTest, ValidationRejectsOutOfRangeValues) {
  QpRtrParams p = SampleRtr();
  EXPECT_TRUE(ValidateRtrParams(p, LinkLayer::kEthernet).ok());
  p.remote.psn = 1u << 24;
  EXPECT_EQ(ValidateRtrParams(p, LinkLayer::kEthernet).code(), common::StatusCode::kInvalidArgument);
  p = SampleRtr();
  p.remote.gid = Gid();
  EXPECT_FALSE(ValidateRtrParams(p, LinkLayer::kEthernet).ok()) << "RoCE needs a GID";
  p = SampleRtr();
  p.remote.lid = 0;
  EXPECT_FALSE(ValidateRtrParams(p, LinkLayer::kInfiniband).ok()) << "IB needs a LID";
  p.min_rnr_timer = 32;
  EXPECT_FALSE(ValidateRtrParams(p, LinkLayer::kEthernet).ok());
  EXPECT_TRUE(ValidateRtsParams({}).ok());
  EXPECT_FALSE(ValidateRtsParams({.retry_cnt = 8}).ok());
  EXPECT_FALSE(ValidateRtsParams({.rnr_retry = 8}).ok());
  EXPECT_FALSE(ValidateRtsParams({.timeout = 32}).ok());
  EXPECT_FALSE(ValidateRtsParams({.sq_psn = 1u << 24}).ok());
}

TEST(QpParamsTest, TimerEncodings) {
  EXPECT_EQ(AckTimeoutNs(0), 0u);
  EXPECT_EQ(AckTimeoutNs(14), 4096ull << 14);  // ≈ 67 ms
  EXPECT_EQ(RnrTimerNs(1), 10'000u);           // 0.01 ms
  EXPECT_EQ(RnrTimerNs(12), 640'000u);         // 0.64 ms
  EXPECT_EQ(RnrTimerNs(0), 655'360'000u);      // 655.36 ms
  EXPECT_EQ(RnrTimerNs(31), 491'520'000u);
}

}  // namespace
}  // namespace braid::verbs
