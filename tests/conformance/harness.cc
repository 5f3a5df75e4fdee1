#include "tests/conformance/harness.h"

#include <vector>

#include "dataplane/soft/sim_fabric.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/ibverbs_provider.h"

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

 private:
  soft::SimFabric* fabric_;
};

class SimHarnessImpl final : public Harness {
 public:
  SimHarnessImpl(uint64_t seed, bool reorder)
      : fabric_(soft::SimFabricOptions{.seed = seed, .reorder = reorder}),
        provider_(soft::SoftProviderOptions{.nics = {{"soft0", "127.0.0.1"},
                                                     {"soft1", "127.0.0.2"},
                                                     {"soft2", "127.0.0.3"},
                                                     {"soft3", "127.0.0.4"}},
                                            .fabric = &fabric_}),
        link_(&fabric_) {}
  ~SimHarnessImpl() override { devices_.clear(); }

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
  void Progress() override { fabric_.Progress(); }
  LinkControl* link() override { return &link_; }
  bool poisons_undefined_fields() const override { return true; }

 private:
  soft::SimFabric fabric_;
  soft::SoftProvider provider_;
  SimLinkControl link_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
};

// The soft provider over real TCP sockets: four soft NICs on 127.0.0.1-4 in this process.
class TcpHarnessImpl final : public Harness {
 public:
  explicit TcpHarnessImpl(uint16_t port)
      : fabric_(soft::TcpFabricOptions{.port = port}),
        provider_(soft::SoftProviderOptions{.nics = {{"soft0", "127.0.0.1"},
                                                     {"soft1", "127.0.0.2"},
                                                     {"soft2", "127.0.0.3"},
                                                     {"soft3", "127.0.0.4"}},
                                            .fabric = &fabric_}) {}
  ~TcpHarnessImpl() override { devices_.clear(); }

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
  void Progress() override { fabric_.Progress(); }
  LinkControl* link() override { return nullptr; }
  bool poisons_undefined_fields() const override { return true; }

 private:
  soft::TcpFabric fabric_;
  soft::SoftProvider provider_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
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
  LinkControl* link() override { return nullptr; }
  bool poisons_undefined_fields() const override { return false; }

 private:
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
          TcpLoopbackHarness(/*port=*/18515), IbverbsHarness()};
}

}  // namespace braid::testing
