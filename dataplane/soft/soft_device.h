// SoftDevice: one soft NIC (one IPv4 address; GID ::ffff:a.b.c.d), its PDs, MRs, CQs and QPs.
//
// Routes packets the fabric delivers to its QPs by QP number and runs their timers.
// QP numbers start at the same base on every device, as on real HCAs: two devices commonly
// hold QPs with equal numbers, so upper layers must key physical QPs by (device, qpn).
// Threading: the fabric's thread. Lifetime: outlives everything created from it.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_DEVICE_H_
#define BRAID_DATAPLANE_SOFT_SOFT_DEVICE_H_

#include <cstdint>
#include <memory>
#include <random>
#include <unordered_map>

#include "dataplane/soft/link.h"
#include "dataplane/soft/mr_table.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

class SoftQp;

inline constexpr uint32_t kFirstQpNum = 0x100;

class SoftDevice final : public verbs::Device {
 public:
  // Attaches to `fabric` (not owned; must outlive the device).
  static common::Result<std::unique_ptr<SoftDevice>> Create(verbs::DeviceInfo info, Fabric* fabric);
  struct CreateKey {  // only Create() can make one
   private:
    CreateKey() = default;
    friend class SoftDevice;
  };
  SoftDevice(CreateKey, verbs::DeviceInfo info, Fabric* fabric)
      : info_(std::move(info)), fabric_(fabric), mrs_(std::random_device()()) {}
  ~SoftDevice() override;

  const verbs::DeviceInfo& info() const override { return info_; }
  // The fabric's view of the NIC's link (TCP: the interface holding its address, up and with a
  // carrier).
  common::Result<bool> QueryPortActive() override { return fabric_->PortActive(*this); }
  common::Result<std::unique_ptr<verbs::ProtectionDomain>> AllocPd() override;
  common::Result<std::unique_ptr<verbs::Cq>> CreateCq(int min_entries) override;
  int progress_fd() const override { return fabric_->wait_fd(); }
  void BeginPostBatch() override { fabric_->BeginBatch(); }
  void EndPostBatch() override { fabric_->EndBatch(); }
  common::Status InjectLinkDown() override { return fabric_->BreakDevice(this); }

  // Provider-internal.
  Fabric* fabric() const { return fabric_; }
  MrTable& mrs() { return mrs_; }
  const MrTable& mrs() const { return mrs_; }
  uint32_t AllocQpNum() { return next_qp_num_++; }
  void RegisterQp(SoftQp* qp);
  void UnregisterQp(uint32_t qp_num);
  SoftQp* FindQp(uint32_t qp_num) const;
  // An inbound message, in two steps (see link.h). A message for an unknown QP gets an empty
  // placement (its payload is discarded) and is counted.
  Placement BeginInbound(const PacketHeader& header);
  void EndInbound(const PacketHeader& header);
  // QP timers. A QP that set a deadline arms itself here; FireTimers and NextDeadline look at
  // the armed QPs only (those with work out or an RNR wait), so their cost follows activity, not
  // the number of QPs. FireTimers disarms a QP found without a deadline: a link calls it on every
  // progress pass, so QPs that went idle leave the list at once.
  void ArmTimer(SoftQp* qp);
  void FireTimers(uint64_t now_ns);
  size_t armed_timers() const { return timed_.size(); }
  uint64_t NextDeadline() const;
  uint64_t dropped_unknown_qp() const { return dropped_unknown_qp_; }

 private:
  verbs::DeviceInfo info_;
  Fabric* fabric_;
  MrTable mrs_;
  std::unordered_map<uint32_t, SoftQp*> qps_;
  std::vector<SoftQp*> timed_;  // armed QPs, in arming order
  uint32_t next_qp_num_ = kFirstQpNum;
  uint32_t next_pd_id_ = 1;
  uint64_t dropped_unknown_qp_ = 0;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SOFT_DEVICE_H_
