#include "dataplane/vqp/business_card.h"

#include <string>

#include "dataplane/common/quote.h"

namespace braid::vqp {

using common::Status;

namespace {

Status ValidateQp(const QpCard& qp, size_t num_devices, const std::string& what) {
  if (qp.device_index >= num_devices) {
    return Status::InvalidArgument(what + ": device_index " + std::to_string(qp.device_index) +
                                   " names no device of the card");
  }
  if (qp.qp_num == 0 || qp.qp_num > 0xFFFFFF) {
    return Status::InvalidArgument(what + ": qp_num must be a non-zero 24-bit value");
  }
  if (qp.psn > 0xFFFFFF) return Status::InvalidArgument(what + ": psn exceeds 24 bits");
  if (qp.mtu < static_cast<uint8_t>(IBV_MTU_256) || qp.mtu > static_cast<uint8_t>(IBV_MTU_4096)) {
    return Status::InvalidArgument(what + ": mtu is not an ibv_mtu value");
  }
  return Status::Ok();
}

}  // namespace

Status BusinessCard::Validate() const {
  if (version != kVersion) {
    return Status::InvalidArgument("business card version " + std::to_string(version) +
                                   " is not supported (expected " + std::to_string(kVersion) + ")");
  }
  if (scheme != Scheme::kSpray && scheme != Scheme::kDqplb) {
    return Status::InvalidArgument("business card names an unknown scheme");
  }
  if (fragment_size < kMinFragmentSize || fragment_size > kMaxFragmentSize) {
    return Status::InvalidArgument("business card fragment_size outside [4 KiB, 1 GiB]");
  }
  if (qp_capacity < 2 || qp_capacity > 4096) {
    return Status::InvalidArgument("business card qp_capacity outside [2, 4096]");
  }
  if (max_virtual_wrs == 0 || max_virtual_wrs > 65536) {
    return Status::InvalidArgument("business card max_virtual_wrs outside [1, 65536]");
  }
  if (devices.empty() || devices.size() > kMaxDevices) {
    return Status::InvalidArgument("business card must list 1 to 32 devices");
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    const DeviceCard& d = devices[i];
    if (d.name.empty() || d.name.size() > kMaxDeviceNameBytes) {
      return Status::InvalidArgument("device " + std::to_string(i) + " of the card has a name of " +
                                     std::to_string(d.name.size()) +
                                     " bytes; a device name has 1 to " +
                                     std::to_string(kMaxDeviceNameBytes));
    }
    if (d.gid.IsZero() && d.lid == 0) {
      return Status::InvalidArgument("device " + common::Quote(d.name) +
                                     " has neither GID nor LID");
    }
  }
  if (control_endpoint.size() > kMaxEndpointBytes || agent_identity.size() > kMaxIdentityBytes) {
    return Status::InvalidArgument(
        "business card control_endpoint (" + std::to_string(control_endpoint.size()) +
        " bytes) or agent_identity (" + std::to_string(agent_identity.size()) +
        " bytes) is longer than " + std::to_string(kMaxEndpointBytes) + " / " +
        std::to_string(kMaxIdentityBytes) + " bytes");
  }
  if (data_qps.empty() || data_qps.size() > kMaxDataQps) {
    return Status::InvalidArgument("business card must list 1 to 128 data QPs");
  }
  for (size_t i = 0; i < data_qps.size(); ++i) {
    BRAID_RETURN_IF_ERROR(ValidateQp(data_qps[i], devices.size(), "data QP " + std::to_string(i)));
  }
  if (data_qps.size() > 1 && !message_qp) {
    return Status::InvalidArgument("a card with several data QPs needs a message QP");
  }
  if (data_qps.size() == 1 && message_qp) {
    return Status::InvalidArgument("a single-QP card has no message QP");
  }
  if (message_qp) BRAID_RETURN_IF_ERROR(ValidateQp(*message_qp, devices.size(), "message QP"));
  if (data_qps.size() > 1 && control_addr == 0) {
    return Status::InvalidArgument("a multi-QP card needs a control region");
  }
  return Status::Ok();
}

Status CheckPeerCards(const BusinessCard& local, const BusinessCard& remote) {
  BRAID_RETURN_IF_ERROR(local.Validate().WithContext("local card"));
  BRAID_RETURN_IF_ERROR(remote.Validate().WithContext("remote card"));
  if (local.scheme != remote.scheme) {
    return Status::FailedPrecondition(std::string("scheme mismatch: local ") +
                                      SchemeName(local.scheme) + ", remote " +
                                      SchemeName(remote.scheme));
  }
  if (local.data_qps.size() != remote.data_qps.size()) {
    return Status::FailedPrecondition("data QP count mismatch: local " +
                                      std::to_string(local.data_qps.size()) + ", remote " +
                                      std::to_string(remote.data_qps.size()));
  }
  if (local.fragment_size != remote.fragment_size) {
    return Status::FailedPrecondition("fragment_size mismatch");
  }
  if (local.qp_capacity != remote.qp_capacity) {
    return Status::FailedPrecondition("qp_capacity mismatch");
  }
  if (local.max_virtual_wrs != remote.max_virtual_wrs) {
    return Status::FailedPrecondition("max_virtual_wrs mismatch");
  }
  return Status::Ok();
}

verbs::LinkKey LinkKeyOf(const BusinessCard& a, const BusinessCard& b) {
  verbs::LinkKey key;
  for (size_t i = 0; i < key.size(); ++i) key[i] = a.link_secret[i] ^ b.link_secret[i];
  return key;
}

}  // namespace braid::vqp
