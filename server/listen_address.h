// ListenAddress: a TCP listener's "host:port" as the agent's config gives it (listen.tcp,
// metrics.listen), taken apart before anything listens so that --check-config finds what start-up
// would. The host is an IPv4 address, a name, or an IPv6 address in brackets ("[::]:7600"); the
// port is 0 to 65535 (0: any free port). Nothing is resolved here.
//
// Threading: plain values and a pure function.
#ifndef BRAID_SERVER_LISTEN_ADDRESS_H_
#define BRAID_SERVER_LISTEN_ADDRESS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace braid::server {

struct ListenAddress {
  std::string host;  // without the brackets of an IPv6 address
  uint16_t port = 0;
  bool ipv6 = false;  // given in brackets

  // Whether the host stands for every interface (0.0.0.0, [::]): one can listen there, no peer
  // can dial it.
  bool IsWildcard() const { return host == "0.0.0.0" || host == "::"; }

  // `text` as "host:port" or "[ipv6]:port"; nullopt if it is neither (no host, a port that is not
  // 0 to 65535 in decimal, unbalanced brackets).
  static std::optional<ListenAddress> Parse(std::string_view text);
  // `text` as a bare port ("9464"), 0 to 65535; nullopt if it is not one.
  static std::optional<uint16_t> ParsePort(std::string_view text);
};

}  // namespace braid::server

#endif  // BRAID_SERVER_LISTEN_ADDRESS_H_
