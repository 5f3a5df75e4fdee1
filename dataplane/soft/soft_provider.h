// SoftProvider: RC queue pairs in userspace over a Fabric (in-memory SimFabric, later TCP).
//
// A soft NIC is one local IPv4 address; its GID is the IPv4-mapped IPv6 form of that address (as a
// RoCEv2 GID is), LID 0, one port, link layer Ethernet.
// Threading: as provider.h; the fabric must outlive every device opened here.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_PROVIDER_H_
#define BRAID_DATAPLANE_SOFT_SOFT_PROVIDER_H_

#include <string>
#include <vector>

#include "dataplane/soft/link.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

struct SoftNicConfig {
  std::string name;  // "soft0"
  std::string ipv4;  // "127.0.0.1"
};

struct SoftProviderOptions {
  std::vector<SoftNicConfig> nics;
  Fabric* fabric = nullptr;  // REQUIRED, not owned
};

class SoftProvider final : public verbs::Provider {
 public:
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
