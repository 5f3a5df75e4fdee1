// rdma-core object wrappers behind the provider interface (RAII over ibv_* handles).
// Internal to the ibverbs provider; use IbverbsProvider to make them.
#ifndef BRAID_DATAPLANE_VERBS_IBVERBS_OBJECTS_H_
#define BRAID_DATAPLANE_VERBS_IBVERBS_OBJECTS_H_

#include <infiniband/verbs.h>

#include <memory>

#include "dataplane/verbs/provider.h"

namespace braid::verbs {

class IbverbsMr final : public MemoryRegion {
 public:
  explicit IbverbsMr(ibv_mr* mr) : mr_(mr) {}
  ~IbverbsMr() override;
  void* addr() const override { return mr_->addr; }
  size_t length() const override { return mr_->length; }
  uint32_t lkey() const override { return mr_->lkey; }
  uint32_t rkey() const override { return mr_->rkey; }
  ibv_mr* handle() override { return mr_; }

 private:
  ibv_mr* mr_;
};

class IbverbsMw final : public MemoryWindow {
 public:
  explicit IbverbsMw(ibv_mw* mw) : mw_(mw) {}
  ~IbverbsMw() override;
  ibv_mw* handle() override { return mw_; }

 private:
  ibv_mw* mw_;
};

class IbverbsCq final : public Cq {
 public:
  IbverbsCq(ibv_comp_channel* channel, ibv_cq* cq) : channel_(channel), cq_(cq) {}
  ~IbverbsCq() override;
  Result<int> Poll(std::span<ibv_wc> out) override;
  int capacity() const override { return cq_->cqe; }
  int wakeup_fd() const override { return channel_->fd; }
  Status RequestNotify() override;
  Status ConsumeWakeup() override;
  Status Resize(int entries) override;
  ibv_cq* raw() const { return cq_; }

 private:
  ibv_comp_channel* channel_;
  ibv_cq* cq_;
};

class IbverbsQp final : public Qp {
 public:
  IbverbsQp(ibv_qp* qp, LinkLayer link_layer, uint8_t port_num)
      : qp_(qp), link_layer_(link_layer), port_num_(port_num) {}
  ~IbverbsQp() override;
  uint32_t qp_num() const override { return qp_->qp_num; }
  // A connected QP can move to ERR by itself (an error completion): asked of the device then.
  QpState state() const override;
  Status ToInit(const QpInitParams& params) override;
  Status ToRtr(const QpRtrParams& params) override;
  Status ToRts(const QpRtsParams& params) override;
  Status ToError() override;
  Status ToReset() override;
  Status PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) override;
  Status PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) override;
  // Through the fault hooks of libbraid_verbs.so when it stands in for libibverbs.
  Status InjectBreak() const override;
  ibv_qp* raw() const { return qp_; }

 private:
  Status Modify(ibv_qp_attr& attr, int mask, QpState target, const char* what);

  ibv_qp* qp_;
  LinkLayer link_layer_;
  uint8_t port_num_;
  mutable QpState state_ = QpState::kReset;
};

class IbverbsPd final : public ProtectionDomain {
 public:
  IbverbsPd(ibv_pd* pd, LinkLayer link_layer, uint8_t port_num)
      : pd_(pd), link_layer_(link_layer), port_num_(port_num) {}
  ~IbverbsPd() override;
  Result<std::unique_ptr<MemoryRegion>> RegisterMemory(void* addr, size_t length,
                                                       unsigned int access) override;
  Result<std::unique_ptr<Qp>> CreateQp(const QpCreateParams& params) override;
  Result<std::unique_ptr<MemoryWindow>> AllocMw() override;

 private:
  ibv_pd* pd_;
  LinkLayer link_layer_;
  uint8_t port_num_;
};

class IbverbsDevice final : public Device {
 public:
  IbverbsDevice(ibv_context* context, DeviceInfo info)
      : context_(context), info_(std::move(info)) {}
  ~IbverbsDevice() override;
  const DeviceInfo& info() const override { return info_; }
  Result<bool> QueryPortActive() override;
  Result<std::unique_ptr<ProtectionDomain>> AllocPd() override;
  Result<std::unique_ptr<Cq>> CreateCq(int min_entries) override;
  // Through the fault hooks of libbraid_verbs.so when it stands in for libibverbs.
  Status InjectLinkDown() override;

 private:
  ibv_context* context_;
  DeviceInfo info_;
};

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_IBVERBS_OBJECTS_H_
