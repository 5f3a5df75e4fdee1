// Gid: a 128-bit port address (rdma-core's ibv_gid as a value type).
// RoCEv2 and soft NICs use the IPv4-mapped IPv6 form ::ffff:a.b.c.d of the port's IPv4 address.
#ifndef BRAID_DATAPLANE_VERBS_GID_H_
#define BRAID_DATAPLANE_VERBS_GID_H_

#include <infiniband/verbs.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace braid::verbs {

struct Gid {
  std::array<uint8_t, 16> raw{};

  static Gid FromIbv(const ibv_gid& gid);
  // `ipv4_host_order` is the address as a host-order integer (127.0.0.1 == 0x7f000001).
  static Gid FromIpv4(uint32_t ipv4_host_order);
  // Parses dotted IPv4 ("127.0.0.2") into the mapped form; nullopt on bad input.
  static std::optional<Gid> ParseIpv4(std::string_view text);

  ibv_gid ToIbv() const;
  bool IsZero() const;
  bool IsIpv4Mapped() const;
  // The IPv4 address of a mapped GID (host order); nullopt otherwise.
  std::optional<uint32_t> Ipv4() const;
  // A mapped GID in 127.0.0.0/8: a soft NIC (or endpoint) only this host reaches.
  bool IsLoopback() const;
  // "::ffff:127.0.0.1" for mapped GIDs, else 8 colon-separated hex groups.
  std::string ToString() const;
  // The address as people write it: "127.0.0.1" for a mapped GID (a soft NIC's), else ToString().
  std::string ToAddress() const;

  friend bool operator==(const Gid&, const Gid&) = default;
};

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_GID_H_
