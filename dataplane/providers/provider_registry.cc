#include "dataplane/providers/provider_registry.h"

namespace braid::verbs {

namespace {

struct Entry {
  const char* kind;
  Result<std::unique_ptr<Provider>> (*make)(const ProviderConfig&);
};

Result<std::unique_ptr<Provider>> MakeSoft(const ProviderConfig& c) {
  BRAID_ASSIGN_OR_RETURN(std::unique_ptr<soft::SoftProvider> p, soft::SoftProvider::Create(c.soft));
  return std::unique_ptr<Provider>(std::move(p));
}

constexpr Entry kProviders[] = {
    {"ibverbs",
     [](const ProviderConfig& c) -> Result<std::unique_ptr<Provider>> {
       return std::unique_ptr<Provider>(std::make_unique<IbverbsProvider>(c.ibverbs));
     }},
    {"soft", MakeSoft},
};

bool HasDevice(Provider& provider) {
  Result<std::vector<DeviceInfo>> devices = provider.ListDevices();
  return devices.ok() && !devices->empty();
}

}  // namespace

std::vector<std::string> ProviderKinds() {
  std::vector<std::string> kinds;
  for (const Entry& e : kProviders) kinds.emplace_back(e.kind);
  return kinds;
}

Result<std::unique_ptr<Provider>> CreateProvider(const ProviderConfig& config) {
  if (config.kind == "auto") {
    auto ibverbs = std::make_unique<IbverbsProvider>(config.ibverbs);
    if (HasDevice(*ibverbs)) return std::unique_ptr<Provider>(std::move(ibverbs));
    return MakeSoft(config);
  }
  for (const Entry& e : kProviders) {
    if (config.kind == e.kind) return e.make(config);
  }
  return Status::InvalidArgument("unknown provider '" + config.kind +
                                 "' (expected auto, ibverbs or soft)");
}

}  // namespace braid::verbs
