#include "dataplane/soft/soft_device.h"

#include <sys/eventfd.h>

#include <cerrno>

#include "dataplane/soft/soft_cq.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

namespace {

class SoftMr final : public verbs::MemoryRegion {
 public:
  SoftMr(SoftDevice* device, const MrEntry& entry) : device_(device), entry_(entry) {
    handle_.addr = reinterpret_cast<void*>(entry.addr);
    handle_.length = entry.length;
    handle_.lkey = entry.lkey;
    handle_.rkey = entry.rkey;
  }
  ~SoftMr() override {
    device_->mrs().Remove(entry_.lkey);
    device_->fabric()->ForgetMemory(device_, entry_.addr, entry_.length);
  }
  void* addr() const override { return reinterpret_cast<void*>(entry_.addr); }
  size_t length() const override { return entry_.length; }
  uint32_t lkey() const override { return entry_.lkey; }
  uint32_t rkey() const override { return entry_.rkey; }
  ibv_mr* handle() override { return &handle_; }

 private:
  SoftDevice* device_;
  MrEntry entry_;
  ibv_mr handle_{};
};

class SoftMw final : public verbs::MemoryWindow {
 public:
  SoftMw(SoftDevice* device, const MrEntry& entry) : device_(device) {
    handle_.rkey = entry.rkey;
    handle_.type = IBV_MW_TYPE_2;
  }
  ~SoftMw() override { device_->mrs().RemoveWindow(handle_.rkey); }
  ibv_mw* handle() override { return &handle_; }

 private:
  SoftDevice* device_;
  ibv_mw handle_{};
};

class SoftPd final : public verbs::ProtectionDomain {
 public:
  SoftPd(SoftDevice* device, uint32_t id) : device_(device), id_(id) {}

  common::Result<std::unique_ptr<verbs::MemoryRegion>> RegisterMemory(
      void* addr, size_t length, unsigned int access) override {
    if (addr == nullptr && length > 0) return common::Status::InvalidArgument("null address");
    constexpr unsigned int kSupported = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                        IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                                        IBV_ACCESS_MW_BIND | IBV_ACCESS_RELAXED_ORDERING |
                                        IBV_ACCESS_OPTIONAL_RANGE;
    if ((access & ~kSupported) != 0) {
      return common::Status::NotSupported("access flags the soft provider does not know");
    }
    if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
        !(access & IBV_ACCESS_LOCAL_WRITE)) {
      // As ibv_reg_mr(3): remote write/atomic require local write.
      return common::Status::InvalidArgument("REMOTE_WRITE/REMOTE_ATOMIC need LOCAL_WRITE");
    }
    const MrEntry* e = device_->mrs().Add(reinterpret_cast<uint64_t>(addr), length, access, id_);
    if (e == nullptr) {
      return common::Status::FromErrno(ENOMEM, "the device's memory-region table is full (" +
                                                   std::to_string(MrTable::kMaxEntries) +
                                                   " regions)");
    }
    return std::unique_ptr<verbs::MemoryRegion>(std::make_unique<SoftMr>(device_, *e));
  }

  common::Result<std::unique_ptr<verbs::MemoryWindow>> AllocMw() override {
    const MrEntry* e = device_->mrs().AddWindow(id_);
    if (e == nullptr) {
      return common::Status::FromErrno(ENOMEM, "the device's key table is full (" +
                                                   std::to_string(MrTable::kMaxEntries) +
                                                   " regions and windows)");
    }
    return std::unique_ptr<verbs::MemoryWindow>(std::make_unique<SoftMw>(device_, *e));
  }

  common::Result<std::unique_ptr<verbs::Qp>> CreateQp(const verbs::QpCreateParams& p) override {
    if (dynamic_cast<SoftCq*>(p.send_cq) == nullptr ||
        dynamic_cast<SoftCq*>(p.recv_cq) == nullptr) {
      return common::Status::InvalidArgument(
          "CreateQp needs send and receive CQs of the soft provider");
    }
    const verbs::QpCaps& c = p.caps;
    if (c.max_send_wr == 0 || c.max_send_wr > kMaxQpWr || c.max_recv_wr == 0 ||
        c.max_recv_wr > kMaxQpWr) {
      return common::Status::InvalidArgument("max_send_wr/max_recv_wr must be in [1, 65536]");
    }
    if (c.max_send_sge > kMaxSge || c.max_recv_sge > kMaxSge) {
      return common::Status::InvalidArgument("at most 16 SGEs per WR");
    }
    if (c.max_inline_data > kMaxInline) {
      return common::Status::InvalidArgument("max_inline_data exceeds 1024");
    }
    auto qp = std::make_unique<SoftQp>(device_, id_, device_->AllocQpNum(), p);
    if (!qp->AllocateQueues()) {
      return common::Status::NoResource("out of memory for the queues of a QP with " +
                                        std::to_string(c.max_send_wr) + " send and " +
                                        std::to_string(c.max_recv_wr) + " receive WRs");
    }
    device_->RegisterQp(qp.get());
    return std::unique_ptr<verbs::Qp>(std::move(qp));
  }

 private:
  SoftDevice* device_;
  uint32_t id_;
};

}  // namespace

common::Result<std::unique_ptr<SoftDevice>> SoftDevice::Create(verbs::DeviceInfo info,
                                                               Fabric* fabric) {
  auto device = std::make_unique<SoftDevice>(CreateKey(), std::move(info), fabric);
  BRAID_RETURN_IF_ERROR(fabric->Attach(device.get()));
  return device;
}

SoftDevice::~SoftDevice() { fabric_->Detach(this); }

common::Result<std::unique_ptr<verbs::ProtectionDomain>> SoftDevice::AllocPd() {
  return std::unique_ptr<verbs::ProtectionDomain>(std::make_unique<SoftPd>(this, next_pd_id_++));
}

common::Result<std::unique_ptr<verbs::Cq>> SoftDevice::CreateCq(int min_entries) {
  if (min_entries <= 0 || static_cast<uint32_t>(min_entries) > info_.max_cqe) {
    return common::Status::InvalidArgument("CQ size must be in [1, max_cqe]");
  }
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return common::Status::FromErrno(errno, "eventfd");
  return std::unique_ptr<verbs::Cq>(
      std::make_unique<SoftCq>(fabric_, min_entries, info_.max_cqe, fd));
}

void SoftDevice::RegisterQp(SoftQp* qp) { qps_[qp->qp_num()] = qp; }

void SoftDevice::UnregisterQp(uint32_t qp_num) {
  if (SoftQp* qp = FindQp(qp_num); qp != nullptr && qp->timer_armed_) std::erase(timed_, qp);
  qps_.erase(qp_num);
  fabric_->ForgetQp(this, qp_num);
}

SoftQp* SoftDevice::FindQp(uint32_t qp_num) const {
  auto it = qps_.find(qp_num);
  return it == qps_.end() ? nullptr : it->second;
}

Placement SoftDevice::BeginInbound(const PacketHeader& header) {
  Placement placement;
  SoftQp* qp = FindQp(header.dst_qpn);
  if (qp == nullptr) {
    ++dropped_unknown_qp_;
    return placement;
  }
  qp->BeginInbound(header, &placement);
  return placement;
}

void SoftDevice::EndInbound(const PacketHeader& header) {
  if (SoftQp* qp = FindQp(header.dst_qpn)) qp->EndInbound(header);
}

void SoftDevice::ArmTimer(SoftQp* qp) {
  if (qp->timer_armed_) return;
  qp->timer_armed_ = true;
  timed_.push_back(qp);
}

void SoftDevice::FireTimers(uint64_t now_ns) {
  // By index: OnTimer may arm more QPs (appended, looked at in this pass too).
  for (size_t i = 0; i < timed_.size();) {
    SoftQp* qp = timed_[i];
    const uint64_t deadline = qp->next_deadline();
    if (deadline == UINT64_MAX) {
      qp->timer_armed_ = false;
      timed_[i] = timed_.back();
      timed_.pop_back();
      continue;
    }
    if (deadline <= now_ns) qp->OnTimer(now_ns);
    ++i;
  }
}

uint64_t SoftDevice::NextDeadline() const {
  uint64_t next = UINT64_MAX;
  for (const SoftQp* qp : timed_) next = std::min(next, qp->next_deadline());
  return next;
}

}  // namespace braid::soft
