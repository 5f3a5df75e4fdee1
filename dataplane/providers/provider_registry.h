// Provider selection: one table of provider kinds and the `auto` rule.
//
// `auto` picks ibverbs when rdma-core lists a device, its ports up or not (the engine follows
// them: a host whose links are still down at start serves once they come up), else soft.
// Threading: call from any thread; the returned provider follows provider.h.
#ifndef BRAID_DATAPLANE_PROVIDERS_PROVIDER_REGISTRY_H_
#define BRAID_DATAPLANE_PROVIDERS_PROVIDER_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/verbs/ibverbs_provider.h"
#include "dataplane/verbs/provider.h"

namespace braid::verbs {

struct ProviderConfig {
  std::string kind = "auto";  // "auto" | "ibverbs" | "soft"
  IbverbsOptions ibverbs;
  soft::SoftProviderOptions soft;
};

// The kinds CreateProvider accepts besides "auto".
std::vector<std::string> ProviderKinds();

Result<std::unique_ptr<Provider>> CreateProvider(const ProviderConfig& config);

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_PROVIDERS_PROVIDER_REGISTRY_H_
