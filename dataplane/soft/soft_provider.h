// SoftProvider: RC queue pairs in userspace over a Fabric (in-memory SimFabric, later TCP).
//
// A soft NIC is one local IPv4 address; its GID is the IPv4-mapped IPv6 form of that address (as a
// RoCEv2 GID is), LID 0, one port, link layer Ethernet.
// Threading: as provider.h; the fabric must outlive every device opened here.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_PROVIDER_H_
#define BRAID_DATAPLANE_SOFT_SOFT_PROVIDER_H_

#include <memory>
#include <string>
#include <vector>

#include "dataplane/soft/link.h"
#include "dataplane/soft/soft_nic_config.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

struct SoftProviderOptions {
  std::vector<SoftNicConfig> nics;  // each with its address (Create finds an interface's)
  Fabric* fabric = nullptr;         // REQUIRED, not owned
};

class SoftProvider final : public verbs::Provider {
 public:
  // NICs given by interface take that interface's address here (ResolveSoftNics); refused as it
  // does.
  static common::Result<std::unique_ptr<SoftProvider>> Create(SoftProviderOptions options);
  explicit SoftProvider(SoftProviderOptions options) : options_(std::move(options)) {}

  std::string_view name() const override { return "soft"; }
  common::Result<std::vector<verbs::DeviceInfo>> ListDevices() override;
  common::Result<std::unique_ptr<verbs::Device>> OpenDevice(std::string_view name) override;
  void ReadCounters(std::vector<verbs::ProviderCounter>* out) const override {
    options_.fabric->ReadCounters(out);
  }

 private:
  common::Result<verbs::DeviceInfo> Describe(const SoftNicConfig& nic) const;

  SoftProviderOptions options_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SOFT_PROVIDER_H_
