#include "dataplane/soft/soft_provider.h"

#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"

namespace braid::soft {

common::Result<std::unique_ptr<SoftProvider>> SoftProvider::Create(SoftProviderOptions options) {
  BRAID_ASSIGN_OR_RETURN(options.nics, ResolveSoftNics(std::move(options.nics)));
  return std::make_unique<SoftProvider>(std::move(options));
}

common::Result<verbs::DeviceInfo> SoftProvider::Describe(const SoftNicConfig& nic) const {
  std::optional<verbs::Gid> gid = verbs::Gid::ParseIpv4(nic.ipv4);
  if (!gid)
    return common::Status::InvalidArgument("soft NIC " + nic.name + ": bad IPv4 address '" +
                                           nic.ipv4 + "'");
  verbs::DeviceInfo info;
  info.name = nic.name;
  info.provider = "soft";
  info.port_num = 1;
  info.port_active = true;
  info.link_layer = verbs::LinkLayer::kEthernet;
  info.gid = *gid;
  info.gid_index = 0;
  info.lid = 0;
  info.active_mtu = IBV_MTU_4096;
  info.max_qp_wr = kMaxQpWr;
  info.max_cqe = 1u << 22;
  info.max_mr_size = 1ull << 46;
  info.fds_per_qp = 1;  // the connection to its peer's NIC, when it is the first QP between them
  info.memory_windows = true;
  info.gid_is_exclusive = true;
  return info;
}

common::Result<std::vector<verbs::DeviceInfo>> SoftProvider::ListDevices() {
  if (options_.nics.empty()) return common::Status::NotFound("no soft NIC is configured");
  std::vector<verbs::DeviceInfo> out;
  for (const SoftNicConfig& nic : options_.nics) {
    BRAID_ASSIGN_OR_RETURN(verbs::DeviceInfo info, Describe(nic));
    out.push_back(std::move(info));
  }
  return out;
}

common::Result<std::unique_ptr<verbs::Device>> SoftProvider::OpenDevice(std::string_view name) {
  if (options_.fabric == nullptr)
    return common::Status::FailedPrecondition("soft provider has no fabric");
  for (const SoftNicConfig& nic : options_.nics) {
    if (nic.name != name) continue;
    BRAID_ASSIGN_OR_RETURN(verbs::DeviceInfo info, Describe(nic));
    BRAID_ASSIGN_OR_RETURN(std::unique_ptr<SoftDevice> device,
                           SoftDevice::Create(std::move(info), options_.fabric));
    return std::unique_ptr<verbs::Device>(std::move(device));
  }
  return common::Status::NotFound("no soft NIC named " + std::string(name));
}

}  // namespace braid::soft
