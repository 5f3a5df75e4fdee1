// The rdma-core provider: plain libibverbs calls behind the provider interface.
//
// Device selection: port `port_num` of every device rdma-core lists. GID: `gid_index` when set,
// otherwise the first RoCEv2 IPv4-mapped GID (Ethernet) or index 0 (InfiniBand).
// errno-style results of rdma-core are turned into Status in one place (ibverbs_provider.cc).
// Threading and ownership: as provider.h.
#ifndef BRAID_DATAPLANE_VERBS_IBVERBS_PROVIDER_H_
#define BRAID_DATAPLANE_VERBS_IBVERBS_PROVIDER_H_

#include <memory>
#include <string_view>
#include <vector>

#include "dataplane/verbs/provider.h"

namespace braid::verbs {

struct IbverbsOptions {
  uint8_t port_num = 1;
  int gid_index = -1;  // -1: choose automatically
};

class IbverbsProvider final : public Provider {
 public:
  explicit IbverbsProvider(IbverbsOptions options = {}) : options_(options) {}

  std::string_view name() const override { return "ibverbs"; }
  // kNotFound "no RDMA device" when rdma-core lists none.
  Result<std::vector<DeviceInfo>> ListDevices() override;
  Result<std::unique_ptr<Device>> OpenDevice(std::string_view name) override;

 private:
  IbverbsOptions options_;
};

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_IBVERBS_PROVIDER_H_
