#include "dataplane/verbs/ibverbs_provider.h"

#include <fcntl.h>

#include <cerrno>
#include <string>

#include "dataplane/verbs/ibverbs_objects.h"

namespace braid::verbs {

namespace {

// Device list owned for the duration of one call.
struct DeviceList {
  ibv_device** list = nullptr;
  int count = 0;
  DeviceList() { list = ibv_get_device_list(&count); }
  ~DeviceList() {
    if (list != nullptr) ibv_free_device_list(list);
  }
  DeviceList(const DeviceList&) = delete;
  DeviceList& operator=(const DeviceList&) = delete;
};

Status NoDevice() {
  return Status::NotFound("no RDMA device: rdma-core lists no device on this host");
}

// Picks the GID index: the configured one, else the first RoCEv2 IPv4-mapped GID, else 0.
int ChooseGidIndex(ibv_context* ctx, uint8_t port, const ibv_port_attr& port_attr, int configured) {
  if (configured >= 0) return configured;
  if (port_attr.link_layer != IBV_LINK_LAYER_ETHERNET) return 0;
  for (int i = 0; i < port_attr.gid_tbl_len; ++i) {
    ibv_gid_entry entry{};
    if (ibv_query_gid_ex(ctx, port, i, &entry, 0) != 0) continue;
    const Gid gid = Gid::FromIbv(entry.gid);
    if (entry.gid_type == IBV_GID_TYPE_ROCE_V2 && gid.IsIpv4Mapped()) return i;
  }
  return 0;
}

Result<DeviceInfo> QueryDevice(ibv_context* ctx, const IbverbsOptions& options) {
  DeviceInfo info;
  info.name = ibv_get_device_name(ctx->device);
  info.provider = "ibverbs";
  info.port_num = options.port_num;
  ibv_device_attr dev_attr{};
  if (int rc = ibv_query_device(ctx, &dev_attr); rc != 0) {
    return Status::FromErrno(rc, "ibv_query_device(" + info.name + ")");
  }
  ibv_port_attr port_attr{};
  if (int rc = ibv_query_port(ctx, options.port_num, &port_attr); rc != 0) {
    return Status::FromErrno(rc, "ibv_query_port(" + info.name + ")");
  }
  info.port_active = port_attr.state == IBV_PORT_ACTIVE;
  info.link_layer = port_attr.link_layer == IBV_LINK_LAYER_INFINIBAND ? LinkLayer::kInfiniband
                                                                      : LinkLayer::kEthernet;
  info.lid = port_attr.lid;
  info.active_mtu = port_attr.active_mtu;
  info.max_qp_wr = static_cast<uint32_t>(dev_attr.max_qp_wr);
  info.max_cqe = static_cast<uint32_t>(dev_attr.max_cqe);
  info.max_mr_size = dev_attr.max_mr_size;
  info.memory_windows = (dev_attr.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0;
  info.gid_index =
      static_cast<uint8_t>(ChooseGidIndex(ctx, options.port_num, port_attr, options.gid_index));
  ibv_gid gid{};
  if (int rc = ibv_query_gid(ctx, options.port_num, info.gid_index, &gid); rc != 0) {
    return Status::FromErrno(rc, "ibv_query_gid(" + info.name + ")");
  }
  info.gid = Gid::FromIbv(gid);
  return info;
}

}  // namespace

Result<std::vector<DeviceInfo>> IbverbsProvider::ListDevices() {
  DeviceList devices;
  if (devices.list == nullptr || devices.count == 0) return NoDevice();
  std::vector<DeviceInfo> out;
  for (int i = 0; i < devices.count; ++i) {
    ibv_context* ctx = ibv_open_device(devices.list[i]);
    if (ctx == nullptr) continue;  // a device we may not open is not ours to list
    Result<DeviceInfo> info = QueryDevice(ctx, options_);
    ibv_close_device(ctx);
    if (info.ok()) out.push_back(std::move(info).value());
  }
  if (out.empty()) return NoDevice();
  return out;
}

Result<std::unique_ptr<Device>> IbverbsProvider::OpenDevice(std::string_view name) {
  DeviceList devices;
  if (devices.list == nullptr || devices.count == 0) return NoDevice();
  for (int i = 0; i < devices.count; ++i) {
    if (name != ibv_get_device_name(devices.list[i])) continue;
    ibv_context* ctx = ibv_open_device(devices.list[i]);
    if (ctx == nullptr)
      return Status::FromErrno(errno, "ibv_open_device(" + std::string(name) + ")");
    // Async events are read when a CQ poll fails (to tell an overrun from a device error).
    fcntl(ctx->async_fd, F_SETFL, fcntl(ctx->async_fd, F_GETFL) | O_NONBLOCK);
    Result<DeviceInfo> info = QueryDevice(ctx, options_);
    if (!info.ok()) {
      ibv_close_device(ctx);
      return info.status();
    }
    return std::unique_ptr<Device>(std::make_unique<IbverbsDevice>(ctx, std::move(info).value()));
  }
  return Status::NotFound("no RDMA device named " + std::string(name));
}

}  // namespace braid::verbs
