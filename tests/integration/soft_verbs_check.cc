// libbraid_verbs.so as a verbs program sees it: plain libibverbs calls, run with the library
// preloaded (soft_verbs_test.sh). The attribute-mask rules of ibv_modify_qp per transition, clean
// refusals of what soft NICs do not support, a loopback RDMA WRITE between two NICs of this
// process with its bytes compared, a NIC taken down: RETRY_EXC_ERR, then flushes; and a port
// query (slow on a host with many interfaces) that polls and posts beside it do not wait for.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// While `hold` is set, a getifaddrs call (a soft NIC's port query) waits until `release` is (at
// most 5 s), with `inside` set meanwhile: a port query held in mid-flight.
struct HeldInterfaceWalk {
  std::atomic<bool> hold{false};
  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
};
HeldInterfaceWalk held_walk;

}  // namespace

// This program's getifaddrs stands before libc's for the preloaded library too (exported:
// CMakeLists.txt), so the test can hold a port query where a host with many interfaces is slow.
extern "C" int getifaddrs(ifaddrs** out) {
  if (held_walk.hold.load()) {
    held_walk.inside.store(true);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!held_walk.release.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    held_walk.inside.store(false);
  }
  using Fn = int (*)(ifaddrs**);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "getifaddrs"));
  return real(out);
}

namespace {

struct Side {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_cq* cq = nullptr;
  ibv_qp* qp = nullptr;
  ibv_mr* mr = nullptr;
  std::vector<uint8_t> buf = std::vector<uint8_t>(1 << 16);
  ibv_gid gid{};
};

class SoftVerbsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    list_ = ibv_get_device_list(&n);
    ASSERT_NE(list_, nullptr);
    ASSERT_GE(n, 2) << "run with libbraid_verbs.so preloaded and two NICs in BRAID_SOFT_NICS";
    for (int i = 0; i < 2; ++i) {
      Side& s = side_[i];
      s.ctx = ibv_open_device(list_[i]);
      ASSERT_NE(s.ctx, nullptr);
      s.pd = ibv_alloc_pd(s.ctx);
      s.cq = ibv_create_cq(s.ctx, 64, nullptr, nullptr, 0);
      ASSERT_TRUE(s.pd && s.cq);
      s.mr = ibv_reg_mr(s.pd, s.buf.data(), s.buf.size(),
                        IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
      ASSERT_NE(s.mr, nullptr);
      s.qp = CreateRcQp(s);
      ASSERT_NE(s.qp, nullptr);
      ASSERT_EQ(ibv_query_gid(s.ctx, 1, 0, &s.gid), 0);
    }
  }
  void TearDown() override {
    for (Side& s : side_) {
      if (s.qp) ibv_destroy_qp(s.qp);
      if (s.mr) ibv_dereg_mr(s.mr);
      if (s.cq) ibv_destroy_cq(s.cq);
      if (s.pd) ibv_dealloc_pd(s.pd);
      if (s.ctx) ibv_close_device(s.ctx);
    }
    if (list_) ibv_free_device_list(list_);
  }

  static ibv_qp* CreateRcQp(Side& s) {
    ibv_qp_init_attr init{};
    init.send_cq = s.cq;
    init.recv_cq = s.cq;
    init.qp_type = IBV_QPT_RC;
    init.cap.max_send_wr = 16;
    init.cap.max_recv_wr = 16;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    return ibv_create_qp(s.pd, &init);
  }

  static int ToInit(ibv_qp* qp) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    return ibv_modify_qp(qp, &a,
                         IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  }
  static ibv_qp_attr RtrAttr(const Side& peer, uint32_t psn) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = peer.qp->qp_num;
    a.rq_psn = psn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = peer.gid;
    a.ah_attr.grh.hop_limit = 1;
    a.ah_attr.port_num = 1;
    return a;
  }
  static constexpr int kRtrMask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  static ibv_qp_attr RtsAttr(uint32_t psn) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 8;  // ~1 ms per try: the NIC-down test ends quickly
    a.retry_cnt = 2;
    a.rnr_retry = 7;
    a.sq_psn = psn;
    a.max_rd_atomic = 1;
    return a;
  }
  static constexpr int kRtsMask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                  IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;

  void Connect() {
    for (int i = 0; i < 2; ++i) ASSERT_EQ(ToInit(side_[i].qp), 0);
    for (int i = 0; i < 2; ++i) {
      ibv_qp_attr rtr = RtrAttr(side_[1 - i], 100 + (1 - i));
      ASSERT_EQ(ibv_modify_qp(side_[i].qp, &rtr, kRtrMask), 0);
    }
    for (int i = 0; i < 2; ++i) {
      ibv_qp_attr rts = RtsAttr(100 + i);
      ASSERT_EQ(ibv_modify_qp(side_[i].qp, &rts, kRtsMask), 0);
    }
  }

  int PostWrite(uint64_t wr_id, size_t length) {
    ibv_sge sge{reinterpret_cast<uint64_t>(side_[0].buf.data()), static_cast<uint32_t>(length),
                side_[0].mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(side_[1].buf.data());
    wr.wr.rdma.rkey = side_[1].mr->rkey;
    ibv_send_wr* bad = nullptr;
    return ibv_post_send(side_[0].qp, &wr, &bad);
  }

  // Polls side 0's CQ (both are polled: the peer's progress runs in its polls) for one WC.
  ibv_wc WaitWc() {
    ibv_wc wc{};
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      ibv_wc other;
      (void)ibv_poll_cq(side_[1].cq, 1, &other);
      if (ibv_poll_cq(side_[0].cq, 1, &wc) == 1) return wc;
    }
    ADD_FAILURE() << "no completion within 10 s";
    return wc;
  }

  ibv_device** list_ = nullptr;
  Side side_[2];
};

TEST_F(SoftVerbsTest, EachTransitionRequiresItsAttributesAndRefusesOthers) {
  ibv_qp* qp = side_[0].qp;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  // RESET→INIT without the access flags; with an attribute INIT does not take.
  EXPECT_EQ(ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT), EINVAL);
  EXPECT_EQ(ibv_modify_qp(qp, &a,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS |
                              IBV_QP_SQ_PSN),
            EINVAL);
  EXPECT_EQ(qp->state, IBV_QPS_RESET) << "a refused transition changes nothing";
  // RESET→RTR skips a state.
  ibv_qp_attr rtr = RtrAttr(side_[1], 1);
  EXPECT_EQ(ibv_modify_qp(qp, &rtr, kRtrMask), EINVAL);
  ASSERT_EQ(ToInit(qp), 0);
  EXPECT_EQ(qp->state, IBV_QPS_INIT);
  // INIT→RTR without MIN_RNR_TIMER; INIT→RTS skips RTR; SQD is not supported.
  EXPECT_EQ(ibv_modify_qp(qp, &rtr, kRtrMask & ~IBV_QP_MIN_RNR_TIMER), EINVAL);
  ibv_qp_attr rts = RtsAttr(1);
  EXPECT_EQ(ibv_modify_qp(qp, &rts, kRtsMask), EINVAL);
  ibv_qp_attr sqd{};
  sqd.qp_state = IBV_QPS_SQD;
  EXPECT_EQ(ibv_modify_qp(qp, &sqd, IBV_QP_STATE), EOPNOTSUPP);
  ASSERT_EQ(ibv_modify_qp(qp, &rtr, kRtrMask), 0);
  // RTR→RTS without the retry count.
  EXPECT_EQ(ibv_modify_qp(qp, &rts, kRtsMask & ~IBV_QP_RETRY_CNT), EINVAL);
  ASSERT_EQ(ibv_modify_qp(qp, &rts, kRtsMask), 0);
  ibv_qp_attr got{};
  ibv_qp_init_attr init{};
  ASSERT_EQ(ibv_query_qp(qp, &got, IBV_QP_STATE, &init), 0);
  EXPECT_EQ(got.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(got.sq_psn, 1u);
  EXPECT_EQ(got.dest_qp_num, side_[1].qp->qp_num);
  // Any state → ERR and → RESET take the state alone.
  ibv_qp_attr err{};
  err.qp_state = IBV_QPS_ERR;
  EXPECT_EQ(ibv_modify_qp(qp, &err, IBV_QP_STATE | IBV_QP_TIMEOUT), EINVAL);
  EXPECT_EQ(ibv_modify_qp(qp, &err, IBV_QP_STATE), 0);
  ibv_qp_attr reset{};
  reset.qp_state = IBV_QPS_RESET;
  EXPECT_EQ(ibv_modify_qp(qp, &reset, IBV_QP_STATE), 0);
  EXPECT_EQ(qp->state, IBV_QPS_RESET);
}

TEST_F(SoftVerbsTest, WhatSoftNicsDoNotSupportIsRefusedCleanly) {
  ibv_qp_init_attr ud{};
  ud.send_cq = side_[0].cq;
  ud.recv_cq = side_[0].cq;
  ud.qp_type = IBV_QPT_UD;
  ud.cap.max_send_wr = ud.cap.max_recv_wr = ud.cap.max_send_sge = ud.cap.max_recv_sge = 1;
  errno = 0;
  EXPECT_EQ(ibv_create_qp(side_[0].pd, &ud), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  ibv_srq_init_attr srq{};
  srq.attr.max_wr = 1;
  srq.attr.max_sge = 1;
  errno = 0;
  EXPECT_EQ(ibv_create_srq(side_[0].pd, &srq), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  errno = 0;
  EXPECT_EQ(ibv_alloc_mw(side_[0].pd, IBV_MW_TYPE_1), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

TEST_F(SoftVerbsTest, AnRdmaWriteBetweenTwoNicsPlacesItsBytes) {
  Connect();
  for (size_t i = 0; i < side_[0].buf.size(); ++i) side_[0].buf[i] = static_cast<uint8_t>(i * 7);
  ASSERT_EQ(PostWrite(1, side_[0].buf.size()), 0);
  const ibv_wc wc = WaitWc();
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
  EXPECT_EQ(wc.wr_id, 1u);
  EXPECT_EQ(wc.opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(side_[1].buf, side_[0].buf);
}

TEST_F(SoftVerbsTest, ANicTakenDownFailsItsQpsWithRetryExceededThenFlushes) {
  using NicDown = int (*)(ibv_context*);
  auto nic_down = reinterpret_cast<NicDown>(dlsym(RTLD_DEFAULT, "braid_soft_verbs_nic_down"));
  ASSERT_NE(nic_down, nullptr) << "the library's fault hooks";
  Connect();
  ASSERT_EQ(PostWrite(1, 4096), 0);
  ASSERT_EQ(WaitWc().status, IBV_WC_SUCCESS);
  ASSERT_EQ(nic_down(side_[0].ctx), 0);
  ASSERT_EQ(PostWrite(2, 4096), 0);
  ASSERT_EQ(PostWrite(3, 4096), 0);
  const ibv_wc first = WaitWc();
  EXPECT_EQ(first.wr_id, 2u);
  EXPECT_EQ(first.status, IBV_WC_RETRY_EXC_ERR) << ibv_wc_status_str(first.status);
  const ibv_wc second = WaitWc();
  EXPECT_EQ(second.wr_id, 3u);
  EXPECT_EQ(second.status, IBV_WC_WR_FLUSH_ERR) << ibv_wc_status_str(second.status);
  ibv_qp_attr got{};
  ibv_qp_init_attr init{};
  ASSERT_EQ(ibv_query_qp(side_[0].qp, &got, IBV_QP_STATE, &init), 0);
  EXPECT_EQ(got.qp_state, IBV_QPS_ERR);
}

// The port query walks the host's interfaces (2.9 ms with 500 of them); the library used to do it
// under its one lock, so an agent's data plane waited once a second for its port watcher.
TEST_F(SoftVerbsTest, PollsAndPostsDoNotWaitForAPortQuery) {
  Connect();
  held_walk.hold.store(true);
  int query_rc = -1;
  ibv_port_attr port{};
  std::thread query([&] { query_rc = ibv_query_port(side_[0].ctx, 1, &port); });
  for (int i = 0; i < 5000 && !held_walk.inside.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool query_held = held_walk.inside.load();
  ibv_wc wc{};
  const int polled = ibv_poll_cq(side_[0].cq, 1, &wc);
  const int posted = PostWrite(1, 4096);
  const bool query_still_held = held_walk.inside.load();
  held_walk.release.store(true);
  query.join();
  held_walk.hold.store(false);
  ASSERT_TRUE(query_held) << "the port query never walked the interfaces";
  EXPECT_TRUE(query_still_held) << "the poll and the post waited for the port query to end";
  EXPECT_EQ(polled, 0);
  ASSERT_EQ(posted, 0);
  EXPECT_EQ(WaitWc().status, IBV_WC_SUCCESS);
  EXPECT_EQ(query_rc, 0);
  EXPECT_EQ(port.state, IBV_PORT_ACTIVE);
}

}  // namespace
