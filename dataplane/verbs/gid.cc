#include "dataplane/verbs/gid.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>

namespace braid::verbs {

Gid Gid::FromIbv(const ibv_gid& gid) {
  Gid out;
  std::memcpy(out.raw.data(), gid.raw, 16);
  return out;
}

Gid Gid::FromIpv4(uint32_t ipv4_host_order) {
  Gid out;
  out.raw[10] = 0xff;
  out.raw[11] = 0xff;
  out.raw[12] = static_cast<uint8_t>(ipv4_host_order >> 24);
  out.raw[13] = static_cast<uint8_t>(ipv4_host_order >> 16);
  out.raw[14] = static_cast<uint8_t>(ipv4_host_order >> 8);
  out.raw[15] = static_cast<uint8_t>(ipv4_host_order);
  return out;
}

std::optional<Gid> Gid::ParseIpv4(std::string_view text) {
  if (text.size() > INET_ADDRSTRLEN) return std::nullopt;
  char buf[INET_ADDRSTRLEN + 1] = {};
  std::memcpy(buf, text.data(), text.size());
  in_addr addr{};
  if (inet_pton(AF_INET, buf, &addr) != 1) return std::nullopt;
  return FromIpv4(ntohl(addr.s_addr));
}

ibv_gid Gid::ToIbv() const {
  ibv_gid gid;
  std::memcpy(gid.raw, raw.data(), 16);
  return gid;
}

bool Gid::IsZero() const {
  for (uint8_t b : raw) {
    if (b != 0) return false;
  }
  return true;
}

bool Gid::IsIpv4Mapped() const {
  for (int i = 0; i < 10; ++i) {
    if (raw[i] != 0) return false;
  }
  return raw[10] == 0xff && raw[11] == 0xff;
}

std::optional<uint32_t> Gid::Ipv4() const {
  if (!IsIpv4Mapped()) return std::nullopt;
  return (uint32_t{raw[12]} << 24) | (uint32_t{raw[13]} << 16) | (uint32_t{raw[14]} << 8) |
         uint32_t{raw[15]};
}

bool Gid::IsLoopback() const {
  const std::optional<uint32_t> ip = Ipv4();
  return ip && (*ip >> 24) == 127;
}

std::string Gid::ToAddress() const {
  const std::string text = ToString();
  return IsIpv4Mapped() ? text.substr(text.rfind(':') + 1) : text;
}

std::string Gid::ToString() const {
  char buf[64];
  if (IsIpv4Mapped()) {
    std::snprintf(buf, sizeof(buf), "::ffff:%u.%u.%u.%u", raw[12], raw[13], raw[14], raw[15]);
    return buf;
  }
  std::string out;
  for (int i = 0; i < 16; i += 2) {
    std::snprintf(buf, sizeof(buf), "%s%02x%02x", i ? ":" : "", raw[i], raw[i + 1]);
    out += buf;
  }
  return out;
}

}  // namespace braid::verbs
