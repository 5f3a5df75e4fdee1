// SoftNicConfig: how a soft NIC is configured, and the one reading of that configuration for
// braidd (its config file and --soft-nic) and libbraid_verbs (BRAID_SOFT_NICS).
//
// A soft NIC is a name and either an IPv4 address or a network interface. An interface stands for
// its first IPv4 address, looked up when the provider is made (SoftProvider::Create): one config
// shared by the agents of many hosts (a DaemonSet's) then gives each host's agent that host's own
// address, where a fixed address would be right on one host only. The address is read once, at
// start; an interface readdressed later keeps the agent on the old address (restart it).
// Threading: plain functions, any thread.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_NIC_CONFIG_H_
#define BRAID_DATAPLANE_SOFT_SOFT_NIC_CONFIG_H_

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::soft {

struct SoftNicConfig {
  std::string name;       // "soft0"
  std::string ipv4;       // "127.0.0.1"; empty while `interface` stands for it
  std::string interface;  // "eth0": its first IPv4 address, found by ResolveSoftNics
};

// "name=ipv4" or "name=interface:IFNAME", the form of a flag or an environment variable.
common::Result<SoftNicConfig> ParseSoftNic(std::string_view text);

// What is wrong with `nics` as written, without looking at the host: a name on each, exactly one
// of an IPv4 address and an interface name (1 to 15 bytes, no '/', ':' or white space), and no
// name, address or interface given twice.
common::Status CheckSoftNics(std::span<const SoftNicConfig> nics);

// `nics` with every interface replaced by its first IPv4 address on this host (`interface` kept,
// to say where the address came from), checked as CheckSoftNics does and again for two NICs that
// end up on one address. An interface this host does not have, or one without an IPv4 address,
// is refused by name.
common::Result<std::vector<SoftNicConfig>> ResolveSoftNics(std::vector<SoftNicConfig> nics);

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SOFT_NIC_CONFIG_H_
