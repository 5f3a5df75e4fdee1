#include "tests/conformance/harness.h"

#include <dlfcn.h>

#include <chrono>
#include <vector>

#include "dataplane/soft/sim_fabric.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/ibverbs_objects.h"
#include "dataplane/verbs/ibverbs_provider.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {

namespace {

class SimLinkControl final : public LinkControl {
 public:
  explicit SimLinkControl(soft::SimFabric* fabric) : fabric_(fabric) {}
  common::Status Hold(const verbs::Qp& qp, bool hold) override { return fabric_->HoldQp(qp, hold); }
  common::Status DropNext(const verbs::Qp& qp, int count) override {
    return fabric_->DropNext(qp, count);
  }
  common::Status Break(const verbs::Qp& qp) override { return fabric_->BreakQp(qp); }
  common::Status Repair(const verbs::Qp& qp) override { return fabric_->RepairQp(qp); }
  uint64_t NowNs() const override { return fabric_->NowNs(); }
  bool virtual_time() const override { return true; }

 private:
  soft::SimFabric* fabric_;
};

}  // namespace

TcpLinkControl::TcpLinkControl(soft::TcpFabric* fabric) : fabric_(fabric) {}
common::Status TcpLinkControl::Hold(const verbs::Qp& qp, bool hold) {
  return fabric_->HoldQp(qp, hold);
}
common::Status TcpLinkControl::DropNext(const verbs::Qp& qp, int count) {
  return fabric_->DropNext(qp, count);
}
common::Status TcpLinkControl::Break(const verbs::Qp& qp) { return fabric_->BreakQp(qp); }
// A closed TCP connection is not re-established; the QP behind it is in ERR anyway.
common::Status TcpLinkControl::Repair(const verbs::Qp&) { return common::Status::Ok(); }
uint64_t TcpLinkControl::NowNs() const { return fabric_->NowNs(); }

namespace {

// Four soft NICs on 127.0.0.1-4 over some fabric; the fabric comes from a base listed first, so
// it exists before the provider that points at it.
class SoftHarness : public Harness {
 public:
  std::string SkipReason() override { return ""; }
  common::Status Open() override {
    for (const char* name : {"soft0", "soft1", "soft2", "soft3"}) {
      auto device = provider_.OpenDevice(name);
      if (!device.ok()) return device.status();
      devices_.push_back(std::move(device).value());
    }
    return common::Status::Ok();
  }
  int num_devices() const override { return static_cast<int>(devices_.size()); }
  verbs::Device& device(int index) override { return *devices_[index]; }
  void Progress() override { fabric_->Progress(); }
  bool poisons_undefined_fields() const override { return true; }

 protected:
  explicit SoftHarness(soft::Fabric* fabric)
      : fabric_(fabric),
        provider_(soft::SoftProviderOptions{.nics = {{"soft0", "127.0.0.1"},
                                                     {"soft1", "127.0.0.2"},
                                                     {"soft2", "127.0.0.3"},
                                                     {"soft3", "127.0.0.4"}},
                                            .fabric = fabric}) {}
  ~SoftHarness() override { devices_.clear(); }

 private:
  soft::Fabric* fabric_;
  soft::SoftProvider provider_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
};

struct SimFabricHolder {
  explicit SimFabricHolder(soft::SimFabricOptions options) : sim_fabric(options) {}
  soft::SimFabric sim_fabric;
};

class SimHarnessImpl final : private SimFabricHolder, public SoftHarness {
 public:
  SimHarnessImpl(uint64_t seed, bool reorder)
      : SimFabricHolder(soft::SimFabricOptions{.seed = seed, .reorder = reorder}),
        SoftHarness(&sim_fabric),
        link_(&sim_fabric) {}
  LinkControl* link() override { return &link_; }

 private:
  SimLinkControl link_;
};

struct TcpFabricHolder {
  explicit TcpFabricHolder(uint16_t port) : tcp_fabric(soft::TcpFabricOptions{.port = port}) {}
  soft::TcpFabric tcp_fabric;
};

// The soft provider over real TCP sockets between the four soft NICs of this process.
class TcpHarnessImpl final : private TcpFabricHolder, public SoftHarness {
 public:
  explicit TcpHarnessImpl(uint16_t port)
      : TcpFabricHolder(port), SoftHarness(&tcp_fabric), link_(&tcp_fabric) {}
  LinkControl* link() override { return &link_; }

 private:
  TcpLinkControl link_;
};

// Link control through the fault hooks of libbraid_verbs.so (soft NICs behind the libibverbs
// API, loaded with LD_PRELOAD): found with dlsym, absent on a real HCA.
class SoftVerbsLinkControl final : public LinkControl {
 public:
  using QpHook = int (*)(ibv_qp*);
  using QpIntHook = int (*)(ibv_qp*, int);
  static std::unique_ptr<SoftVerbsLinkControl> Find() {
    auto hold = reinterpret_cast<QpIntHook>(dlsym(RTLD_DEFAULT, "braid_soft_verbs_hold_qp"));
    auto drop = reinterpret_cast<QpIntHook>(dlsym(RTLD_DEFAULT, "braid_soft_verbs_drop_next"));
    auto brk = reinterpret_cast<QpHook>(dlsym(RTLD_DEFAULT, "braid_soft_verbs_break_qp"));
    if (hold == nullptr || drop == nullptr || brk == nullptr) return nullptr;
    return std::unique_ptr<SoftVerbsLinkControl>(new SoftVerbsLinkControl(hold, drop, brk));
  }
  common::Status Hold(const verbs::Qp& qp, bool hold) override {
    return Result(hold_(Raw(qp), hold ? 1 : 0), "hold");
  }
  common::Status DropNext(const verbs::Qp& qp, int count) override {
    return Result(drop_(Raw(qp), count), "drop");
  }
  common::Status Break(const verbs::Qp& qp) override { return Result(break_(Raw(qp)), "break"); }
  common::Status Repair(const verbs::Qp&) override { return common::Status::Ok(); }
  uint64_t NowNs() const override {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }

 private:
  SoftVerbsLinkControl(QpIntHook hold, QpIntHook drop, QpHook brk)
      : hold_(hold), drop_(drop), break_(brk) {}
  static ibv_qp* Raw(const verbs::Qp& qp) {
    const auto* q = dynamic_cast<const verbs::IbverbsQp*>(&qp);
    return q != nullptr ? q->raw() : nullptr;
  }
  static common::Status Result(int rc, const char* what) {
    return rc == 0 ? common::Status::Ok() : common::Status::FromErrno(rc, what);
  }
  QpIntHook hold_;
  QpIntHook drop_;
  QpHook break_;
};

class IbverbsHarnessImpl final : public Harness {
 public:
  std::string SkipReason() override {
    auto devices = provider_.ListDevices();
    if (!devices.ok()) return devices.status().ToString();
    for (const verbs::DeviceInfo& d : *devices) {
      if (d.port_active) active_.push_back(d.name);
    }
    if (active_.empty()) return "rdma-core lists devices but none has an active port";
    return "";
  }
  common::Status Open() override {
    // Loopback through one device is enough; use two when there are two.
    for (int i = 0; i < 2; ++i) {
      auto device = provider_.OpenDevice(active_[static_cast<size_t>(i) % active_.size()]);
      if (!device.ok()) return device.status();
      devices_.push_back(std::move(device).value());
    }
    return common::Status::Ok();
  }
  int num_devices() const override { return static_cast<int>(devices_.size()); }
  verbs::Device& device(int index) override { return *devices_[index]; }
  void Progress() override {}
  LinkControl* link() override { return link_.get(); }
  bool poisons_undefined_fields() const override { return false; }

 private:
  std::unique_ptr<SoftVerbsLinkControl> link_ = SoftVerbsLinkControl::Find();
  verbs::IbverbsProvider provider_;
  std::vector<std::string> active_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
};

}  // namespace

HarnessFactory SimHarness(uint64_t seed, bool reorder) {
  return {std::string(reorder ? "SimReorderSeed" : "SimFifoSeed") + std::to_string(seed),
          [seed, reorder] { return std::make_unique<SimHarnessImpl>(seed, reorder); }};
}

HarnessFactory IbverbsHarness() {
  return {"Ibverbs", [] { return std::make_unique<IbverbsHarnessImpl>(); }};
}

HarnessFactory TcpLoopbackHarness(uint16_t port) {
  return {"TcpLoopback", [port] { return std::make_unique<TcpHarnessImpl>(port); }};
}

std::vector<HarnessFactory> AllHarnesses() {
  return {SimHarness(/*seed=*/1, /*reorder=*/true), SimHarness(/*seed=*/2, /*reorder=*/false),
          TcpLoopbackHarness(TestPort(0)), TcpTwoProcessHarness(TestPort(1)), IbverbsHarness()};
}

}  // namespace braid::testing
