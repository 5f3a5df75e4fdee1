#include "server/request_mapping.h"

#include <charconv>
#include <cstring>
#include <string>

#include "dataplane/common/quote.h"

namespace braid::server {

using common::Result;
using common::Status;

void ToProto(const vqp::QpCard& qp, v1::QpCard* out) {
  out->set_device_index(qp.device_index);
  out->set_port(qp.port);
  out->set_qp_num(qp.qp_num);
  out->set_psn(qp.psn);
  out->set_mtu(qp.mtu);
}

Result<vqp::QpCard> FromProto(const v1::QpCard& qp, const char* field) {
  if (qp.port() > 255 || qp.mtu() > 255) {
    return Status::InvalidArgument(std::string("card.") + field + ": port or mtu out of range");
  }
  vqp::QpCard out;
  out.device_index = qp.device_index();
  out.port = static_cast<uint8_t>(qp.port());
  out.qp_num = qp.qp_num();
  out.psn = qp.psn();
  out.mtu = static_cast<uint8_t>(qp.mtu());
  return out;
}

void ToProto(const vqp::BusinessCard& card, v1::BusinessCard* out) {
  out->set_version(card.version);
  out->set_vqp_id(card.vqp_id);
  out->set_epoch(card.epoch);
  out->set_scheme(card.scheme == vqp::Scheme::kSpray ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB);
  out->set_fragment_size(card.fragment_size);
  out->set_qp_capacity(card.qp_capacity);
  out->set_max_virtual_wrs(card.max_virtual_wrs);
  out->set_control_endpoint(card.control_endpoint);
  out->set_incarnation(card.incarnation);
  out->set_agent_identity(card.agent_identity);
  out->set_link_secret(
      std::string(reinterpret_cast<const char*>(card.link_secret.data()), card.link_secret.size()));
  for (const vqp::DeviceCard& d : card.devices) {
    v1::DeviceCard* pd = out->add_devices();
    pd->set_name(d.name);
    pd->set_gid(std::string(reinterpret_cast<const char*>(d.gid.raw.data()), d.gid.raw.size()));
    pd->set_lid(d.lid);
    pd->set_control_rkey(d.control_rkey);
  }
  out->set_control_addr(card.control_addr);
  for (const vqp::QpCard& q : card.data_qps) ToProto(q, out->add_data_qps());
  if (card.message_qp) ToProto(*card.message_qp, out->mutable_message_qp());
}

Result<vqp::BusinessCard> FromProto(const v1::BusinessCard& card) {
  vqp::BusinessCard out;
  out.version = card.version();
  out.vqp_id = card.vqp_id();
  out.epoch = card.epoch();
  switch (card.scheme()) {
    case v1::SCHEME_SPRAY:
      out.scheme = vqp::Scheme::kSpray;
      break;
    case v1::SCHEME_DQPLB:
      out.scheme = vqp::Scheme::kDqplb;
      break;
    default:
      return Status::InvalidArgument("card.scheme: unknown scheme " +
                                     std::to_string(card.scheme()));
  }
  out.fragment_size = card.fragment_size();
  out.qp_capacity = card.qp_capacity();
  out.max_virtual_wrs = card.max_virtual_wrs();
  out.control_endpoint = card.control_endpoint();
  out.incarnation = card.incarnation();
  out.agent_identity = card.agent_identity();
  if (card.link_secret().size() != out.link_secret.size()) {
    return Status::InvalidArgument(
        "card.link_secret: " + std::to_string(card.link_secret().size()) + " bytes, want " +
        std::to_string(out.link_secret.size()));
  }
  std::memcpy(out.link_secret.data(), card.link_secret().data(), out.link_secret.size());
  for (int i = 0; i < card.devices_size(); ++i) {
    const v1::DeviceCard& d = card.devices(i);
    if (d.gid().size() != 16) {
      return Status::InvalidArgument("card.devices[" + std::to_string(i) + "].gid: " +
                                     std::to_string(d.gid().size()) + " bytes, want 16");
    }
    if (d.lid() > 0xFFFF) {
      return Status::InvalidArgument("card.devices[" + std::to_string(i) + "].lid out of range");
    }
    vqp::DeviceCard dc;
    dc.name = d.name();
    std::memcpy(dc.gid.raw.data(), d.gid().data(), 16);
    dc.lid = static_cast<uint16_t>(d.lid());
    dc.control_rkey = d.control_rkey();
    out.devices.push_back(std::move(dc));
  }
  out.control_addr = card.control_addr();
  for (int i = 0; i < card.data_qps_size(); ++i) {
    auto q = FromProto(card.data_qps(i), "data_qps");
    if (!q.ok()) return q.status();
    out.data_qps.push_back(*q);
  }
  if (card.has_message_qp()) {
    auto q = FromProto(card.message_qp(), "message_qp");
    if (!q.ok()) return q.status();
    out.message_qp = *q;
  }
  Status s = out.Validate();
  if (!s.ok()) return s.WithContext("remote card");
  return out;
}

void ToProto(const engine::RemoteRegion& r, v1::RemoteRegion* out) {
  out->set_agent_id(r.agent_id);
  out->set_region_id(r.region_id);
  out->set_vqp_id(r.vqp_id);
  out->set_addr(r.addr);
  out->set_length(r.length);
  for (const auto& [device, rkey] : r.keys) {
    auto* k = out->add_keys();
    k->set_device(device);
    k->set_rkey(rkey);
  }
}

engine::RemoteRegion FromProto(const v1::RemoteRegion& r) {
  engine::RemoteRegion out;
  out.agent_id = r.agent_id();
  out.region_id = r.region_id();
  out.vqp_id = r.vqp_id();
  out.addr = r.addr();
  out.length = r.length();
  for (const auto& k : r.keys()) out.keys.emplace_back(k.device(), k.rkey());
  return out;
}

Result<engine::CreateVqpRequest> FromProto(const v1::CreateVirtualQpRequest& r) {
  engine::CreateVqpRequest out;
  vqp::VirtualQpConfig& c = out.config;
  switch (r.scheme()) {
    case v1::SCHEME_UNSPECIFIED:  // proto3's zero: the default, as for every other field
    case v1::SCHEME_SPRAY:
      c.scheme = vqp::Scheme::kSpray;
      break;
    case v1::SCHEME_DQPLB:
      c.scheme = vqp::Scheme::kDqplb;
      break;
    default:
      return Status::InvalidArgument(
          "scheme must be SCHEME_SPRAY or SCHEME_DQPLB (or unset: SCHEME_SPRAY), got " +
          std::to_string(r.scheme()));
  }
  c.num_qps = r.num_qps();
  if (r.fragment_size() != 0) c.fragment_size = r.fragment_size();
  if (r.qp_capacity() != 0) c.qp_capacity = r.qp_capacity();
  if (r.max_virtual_wrs() != 0) c.max_virtual_wrs = r.max_virtual_wrs();
  c.failover = !r.disable_failover();
  if (r.timeout() > 31) return Status::InvalidArgument("timeout must be a verbs code in [0, 31]");
  if (r.retry_cnt() > 7) return Status::InvalidArgument("retry_cnt must be in [0, 7]");
  if (r.timeout() != 0) c.timeout = static_cast<uint8_t>(r.timeout());
  if (r.retry_cnt() != 0) c.retry_cnt = static_cast<uint8_t>(r.retry_cnt());
  for (const std::string& d : r.devices()) out.devices.push_back(d);
  out.label = r.label();
  return out;
}

Result<engine::TransferRequest> FromProto(const v1::TransferOp& r) {
  engine::TransferRequest out;
  out.op_id = r.op_id();
  out.vqp_id = r.vqp_id();
  switch (r.op()) {
    case v1::OP_WRITE:
      out.op = engine::TransferOp::kWrite;
      break;
    case v1::OP_WRITE_WITH_IMM:
      out.op = engine::TransferOp::kWriteWithImm;
      break;
    case v1::OP_READ:
      out.op = engine::TransferOp::kRead;
      break;
    default:
      return Status::InvalidArgument("op must be OP_WRITE, OP_WRITE_WITH_IMM or OP_READ");
  }
  out.local_region = r.local_region_id();
  out.local_offset = r.local_offset();
  out.remote = FromProto(r.remote());
  out.remote_offset = r.remote_offset();
  out.length = r.length();
  out.imm = r.imm();
  out.timeout_ms = r.timeout_ms();
  return out;
}

Result<engine::ListPage> PageFromProto(uint32_t page_size, std::string_view page_token) {
  engine::ListPage page;
  page.limit = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  if (page_token.empty()) return page;
  const char* end = page_token.data() + page_token.size();
  const auto [at, err] = std::from_chars(page_token.data(), end, page.after);
  if (err != std::errc() || at != end || page.after == 0 || page_token.front() == '0') {
    return Status::InvalidArgument(
        "page_token " + common::Quote(page_token) +
        " is not one this agent gave: pass the next_page_token of the previous page, or none for "
        "the first");
  }
  return page;
}

}  // namespace braid::server
