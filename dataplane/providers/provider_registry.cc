#include "dataplane/providers/provider_registry.h"

namespace braid::verbs {

namespace {

struct Entry {
  const char* kind;
  std::unique_ptr<Provider> (*make)(const ProviderConfig&);
};

constexpr Entry kProviders[] = {
    {"ibverbs",
     [](const ProviderConfig& c) -> std::unique_ptr<Provider> {
       return std::make_unique<IbverbsProvider>(c.ibverbs);
     }},
    {"soft",
     [](const ProviderConfig& c) -> std::unique_ptr<Provider> {
       return std::make_unique<soft::SoftProvider>(c.soft);
     }},
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
    return std::unique_ptr<Provider>(std::make_unique<soft::SoftProvider>(config.soft));
  }
  for (const Entry& e : kProviders) {
    if (config.kind == e.kind) return e.make(config);
  }
  return Status::InvalidArgument("unknown provider '" + config.kind +
                                 "' (expected auto, ibverbs or soft)");
}

}  // namespace braid::verbs
