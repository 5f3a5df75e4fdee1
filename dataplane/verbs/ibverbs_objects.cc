#include "dataplane/verbs/ibverbs_objects.h"

#include <dlfcn.h>

#include <cerrno>

#include "dataplane/verbs/ibverbs_attr.h"
#include "dataplane/verbs/memlock.h"

namespace braid::verbs {

IbverbsMr::~IbverbsMr() { ibv_dereg_mr(mr_); }

IbverbsMw::~IbverbsMw() { ibv_dealloc_mw(mw_); }

IbverbsCq::~IbverbsCq() {
  ibv_destroy_cq(cq_);
  ibv_destroy_comp_channel(channel_);
}

Result<int> IbverbsCq::Poll(std::span<ibv_wc> out) {
  const int n = ibv_poll_cq(cq_, static_cast<int>(out.size()), out.data());
  if (n >= 0) return n;
  // The device says why on the context's async queue (non-blocking, see OpenDevice): an overrun
  // of this CQ is IBV_EVENT_CQ_ERR naming it.
  bool overrun = false;
  ibv_async_event event;
  while (ibv_get_async_event(cq_->context, &event) == 0) {
    if (event.event_type == IBV_EVENT_CQ_ERR && event.element.cq == cq_) overrun = true;
    ibv_ack_async_event(&event);
  }
  if (overrun) return Status::CqOverflow("the completion queue overran (IBV_EVENT_CQ_ERR)");
  return Status::DeviceError("ibv_poll_cq failed (device error)");
}

Status IbverbsCq::RequestNotify() {
  if (int rc = ibv_req_notify_cq(cq_, 0); rc != 0)
    return Status::FromErrno(rc, "ibv_req_notify_cq");
  return Status::Ok();
}

Status IbverbsCq::ConsumeWakeup() {
  ibv_cq* ev_cq = nullptr;
  void* ev_ctx = nullptr;
  if (ibv_get_cq_event(channel_, &ev_cq, &ev_ctx) != 0) {
    return Status::FromErrno(errno, "ibv_get_cq_event");
  }
  ibv_ack_cq_events(ev_cq, 1);
  return Status::Ok();
}

Status IbverbsCq::Resize(int entries) {
  if (int rc = ibv_resize_cq(cq_, entries); rc != 0) return Status::FromErrno(rc, "ibv_resize_cq");
  return Status::Ok();
}

IbverbsQp::~IbverbsQp() { ibv_destroy_qp(qp_); }

QpState IbverbsQp::state() const {
  if (state_ != QpState::kRtr && state_ != QpState::kRts) return state_;
  ibv_qp_attr attr{};
  ibv_qp_init_attr init{};
  if (ibv_query_qp(qp_, &attr, IBV_QP_STATE, &init) == 0 && attr.qp_state == IBV_QPS_ERR) {
    state_ = QpState::kError;
  }
  return state_;
}

Status IbverbsQp::Modify(ibv_qp_attr& attr, int mask, QpState target, const char* what) {
  if (int rc = ibv_modify_qp(qp_, &attr, mask); rc != 0) return Status::FromErrno(rc, what);
  state_ = target;
  return Status::Ok();
}

Status IbverbsQp::ToInit(const QpInitParams& params) {
  IbvQpAttr a = BuildInitAttr(params);
  return Modify(a.attr, a.mask, QpState::kInit, "ibv_modify_qp(INIT)");
}

Status IbverbsQp::ToRtr(const QpRtrParams& params) {
  BRAID_RETURN_IF_ERROR(ValidateRtrParams(params, link_layer_));
  IbvQpAttr a = BuildRtrAttr(params, link_layer_, port_num_);
  return Modify(a.attr, a.mask, QpState::kRtr, "ibv_modify_qp(RTR)");
}

Status IbverbsQp::ToRts(const QpRtsParams& params) {
  BRAID_RETURN_IF_ERROR(ValidateRtsParams(params));
  IbvQpAttr a = BuildRtsAttr(params);
  return Modify(a.attr, a.mask, QpState::kRts, "ibv_modify_qp(RTS)");
}

Status IbverbsQp::ToError() {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  return Modify(attr, IBV_QP_STATE, QpState::kError, "ibv_modify_qp(ERR)");
}

Status IbverbsQp::ToReset() {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_RESET;
  return Modify(attr, IBV_QP_STATE, QpState::kReset, "ibv_modify_qp(RESET)");
}

Status IbverbsQp::PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) {
  const int rc = ibv_post_send(qp_, wr, bad_wr);
  if (rc == 0) return Status::Ok();
  if (rc == ENOMEM) return Status::NoResource();
  return Status::FromErrno(rc, "ibv_post_send");
}

Status IbverbsQp::PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  const int rc = ibv_post_recv(qp_, wr, bad_wr);
  if (rc == 0) return Status::Ok();
  if (rc == ENOMEM) return Status::NoResource();
  return Status::FromErrno(rc, "ibv_post_recv");
}

IbverbsPd::~IbverbsPd() { ibv_dealloc_pd(pd_); }

Result<std::unique_ptr<MemoryRegion>> IbverbsPd::RegisterMemory(void* addr, size_t length,
                                                                unsigned int access) {
  ibv_mr* mr = ibv_reg_mr(pd_, addr, length, static_cast<int>(access));
  if (mr == nullptr) return RegistrationFailure(errno, length);
  return std::unique_ptr<MemoryRegion>(std::make_unique<IbverbsMr>(mr));
}

Result<std::unique_ptr<MemoryWindow>> IbverbsPd::AllocMw() {
  ibv_mw* mw = ibv_alloc_mw(pd_, IBV_MW_TYPE_2);
  if (mw == nullptr) return Status::FromErrno(errno, "ibv_alloc_mw(type 2)");
  return std::unique_ptr<MemoryWindow>(std::make_unique<IbverbsMw>(mw));
}

Result<std::unique_ptr<Qp>> IbverbsPd::CreateQp(const QpCreateParams& params) {
  auto* send_cq = dynamic_cast<IbverbsCq*>(params.send_cq);
  auto* recv_cq = dynamic_cast<IbverbsCq*>(params.recv_cq);
  if (send_cq == nullptr || recv_cq == nullptr) {
    return Status::InvalidArgument("CreateQp needs send and receive CQs of the ibverbs provider");
  }
  ibv_qp_init_attr init{};
  init.send_cq = send_cq->raw();
  init.recv_cq = recv_cq->raw();
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = params.sq_sig_all ? 1 : 0;
  init.cap.max_send_wr = params.caps.max_send_wr;
  init.cap.max_recv_wr = params.caps.max_recv_wr;
  init.cap.max_send_sge = params.caps.max_send_sge;
  init.cap.max_recv_sge = params.caps.max_recv_sge;
  init.cap.max_inline_data = params.caps.max_inline_data;
  ibv_qp* qp = ibv_create_qp(pd_, &init);
  if (qp == nullptr) return Status::FromErrno(errno, "ibv_create_qp");
  return std::unique_ptr<Qp>(std::make_unique<IbverbsQp>(qp, link_layer_, port_num_));
}

IbverbsDevice::~IbverbsDevice() { ibv_close_device(context_); }

Result<std::unique_ptr<ProtectionDomain>> IbverbsDevice::AllocPd() {
  ibv_pd* pd = ibv_alloc_pd(context_);
  if (pd == nullptr) return Status::FromErrno(errno, "ibv_alloc_pd");
  return std::unique_ptr<ProtectionDomain>(
      std::make_unique<IbverbsPd>(pd, info_.link_layer, info_.port_num));
}

Result<std::unique_ptr<Cq>> IbverbsDevice::CreateCq(int min_entries) {
  if (min_entries <= 0) return Status::InvalidArgument("CQ size must be positive");
  ibv_comp_channel* channel = ibv_create_comp_channel(context_);
  if (channel == nullptr) return Status::FromErrno(errno, "ibv_create_comp_channel");
  ibv_cq* cq = ibv_create_cq(context_, min_entries, nullptr, channel, 0);
  if (cq == nullptr) {
    const int err = errno;
    ibv_destroy_comp_channel(channel);
    return Status::FromErrno(err, "ibv_create_cq");
  }
  return std::unique_ptr<Cq>(std::make_unique<IbverbsCq>(channel, cq));
}

namespace {

// A fault hook of libbraid_verbs.so (soft NICs behind the libibverbs API, doc/soft_verbs.md);
// absent on a real HCA.
template <typename Fn>
Fn SoftVerbsHook(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

Status HookResult(int rc, const char* what) {
  return rc == 0 ? Status::Ok() : Status::FromErrno(rc, what);
}

}  // namespace

Status IbverbsQp::InjectBreak() const {
  auto hook = SoftVerbsHook<int (*)(ibv_qp*)>("braid_soft_verbs_break_qp");
  if (hook == nullptr) return Qp::InjectBreak();
  return HookResult(hook(qp_), "braid_soft_verbs_break_qp");
}

Result<bool> IbverbsDevice::QueryPortActive() {
  ibv_port_attr attr{};
  if (int rc = ibv_query_port(context_, info_.port_num, &attr); rc != 0) {
    return Status::FromErrno(rc, "ibv_query_port");
  }
  return attr.state == IBV_PORT_ACTIVE;
}

Status IbverbsDevice::InjectLinkDown() {
  auto hook = SoftVerbsHook<int (*)(ibv_context*)>("braid_soft_verbs_nic_down");
  if (hook == nullptr) return Device::InjectLinkDown();
  return HookResult(hook(context_), "braid_soft_verbs_nic_down");
}

}  // namespace braid::verbs
