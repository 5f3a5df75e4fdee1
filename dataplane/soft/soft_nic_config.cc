#include "dataplane/soft/soft_nic_config.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cctype>

#include "dataplane/common/quote.h"
#include "dataplane/verbs/gid.h"

namespace braid::soft {

namespace {

using common::Quote;
using common::Status;

constexpr std::string_view kInterfacePrefix = "interface:";

// The NIC as written: "soft0=10.0.0.5" or "soft0=interface:eth0", with the address found for
// an interface after it: "soft0=interface:eth0 (10.0.0.5)".
std::string Written(const SoftNicConfig& nic) {
  if (nic.interface.empty()) return nic.name + "=" + nic.ipv4;
  std::string out = nic.name + "=" + std::string(kInterfacePrefix) + nic.interface;
  return nic.ipv4.empty() ? out : out + " (" + nic.ipv4 + ")";
}

bool IsInterfaceName(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  for (const char c : name) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || c == '\0') {
      return false;
    }
  }
  return true;
}

// Two NICs with one name, one address or one interface.
Status CheckDistinct(std::span<const SoftNicConfig> nics) {
  for (size_t i = 0; i < nics.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      const bool same_address = !nics[i].ipv4.empty() && verbs::Gid::ParseIpv4(nics[j].ipv4) ==
                                                             verbs::Gid::ParseIpv4(nics[i].ipv4);
      const bool same_interface =
          !nics[i].interface.empty() && nics[j].interface == nics[i].interface;
      if (nics[j].name == nics[i].name || same_address || same_interface) {
        return Status::InvalidArgument("soft NICs " + Quote(Written(nics[j])) + " and " +
                                       Quote(Written(nics[i])) +
                                       " share a name or an address; each needs its own of both");
      }
    }
  }
  return Status::Ok();
}

// The first IPv4 address of `interface` on this host, dotted.
common::Result<std::string> InterfaceAddress(const SoftNicConfig& nic) {
  if (if_nametoindex(nic.interface.c_str()) == 0) {
    return Status::InvalidArgument("soft NIC " + Quote(nic.name) + ": this host has no network " +
                                   "interface " + Quote(nic.interface) +
                                   " ('ip -4 addr' lists them)");
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return Status::FromErrno(errno, "getifaddrs");
  std::string found;
  for (const ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET ||
        nic.interface != i->ifa_name) {
      continue;
    }
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    found = verbs::Gid::FromIpv4(ntohl(in->sin_addr.s_addr)).ToAddress();
  }
  freeifaddrs(list);
  if (found.empty()) {
    return Status::InvalidArgument("soft NIC " + Quote(nic.name) + ": network interface " +
                                   Quote(nic.interface) +
                                   " has no IPv4 address; give it one, or give the soft NIC "
                                   "an ip instead");
  }
  return found;
}

}  // namespace

common::Result<SoftNicConfig> ParseSoftNic(std::string_view text) {
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return Status::InvalidArgument("a soft NIC is name=ipv4 or name=interface:IFNAME, not " +
                                   Quote(text));
  }
  SoftNicConfig nic;
  nic.name = std::string(text.substr(0, eq));
  const std::string_view value = text.substr(eq + 1);
  if (value.starts_with(kInterfacePrefix)) {
    nic.interface = std::string(value.substr(kInterfacePrefix.size()));
  } else {
    nic.ipv4 = std::string(value);
  }
  return nic;
}

Status CheckSoftNics(std::span<const SoftNicConfig> nics) {
  for (const SoftNicConfig& nic : nics) {
    if (nic.name.empty()) return Status::InvalidArgument("a soft NIC has no name");
    if (nic.ipv4.empty() == nic.interface.empty()) {
      return Status::InvalidArgument("soft NIC " + Quote(nic.name) +
                                     ": give it an ip or an interface (exactly one of them)");
    }
    if (!nic.ipv4.empty() && !verbs::Gid::ParseIpv4(nic.ipv4)) {
      return Status::InvalidArgument("soft NIC " + Quote(nic.name) + ": " + Quote(nic.ipv4) +
                                     " is not an IPv4 address");
    }
    if (!nic.interface.empty() && !IsInterfaceName(nic.interface)) {
      return Status::InvalidArgument("soft NIC " + Quote(nic.name) + ": " + Quote(nic.interface) +
                                     " is not a network interface name (1 to 15 bytes, no '/', "
                                     "':' or white space)");
    }
  }
  return CheckDistinct(nics);
}

common::Result<std::vector<SoftNicConfig>> ResolveSoftNics(std::vector<SoftNicConfig> nics) {
  BRAID_RETURN_IF_ERROR(CheckSoftNics(nics));
  for (SoftNicConfig& nic : nics) {
    if (nic.interface.empty()) continue;
    BRAID_ASSIGN_OR_RETURN(nic.ipv4, InterfaceAddress(nic));
  }
  BRAID_RETURN_IF_ERROR(CheckDistinct(nics));
  return nics;
}

}  // namespace braid::soft
