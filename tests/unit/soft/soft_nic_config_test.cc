// SoftNicConfig: the one reading of a soft NIC (braidd's flags and config, BRAID_SOFT_NICS): an
// address or an interface, checked without the host and resolved on it.
#include "dataplane/soft/soft_nic_config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace braid::soft {
namespace {

TEST(SoftNicConfig, AFlagNamesAnAddressOrAnInterface) {
  const auto address = ParseSoftNic("soft0=10.0.0.5");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(address->name, "soft0");
  EXPECT_EQ(address->ipv4, "10.0.0.5");
  EXPECT_EQ(address->interface, "");
  const auto interface = ParseSoftNic("soft1=interface:eth1");
  ASSERT_TRUE(interface.ok());
  EXPECT_EQ(interface->name, "soft1");
  EXPECT_EQ(interface->ipv4, "");
  EXPECT_EQ(interface->interface, "eth1");
  for (const char* bad : {"soft0", "=10.0.0.5", "soft0=", ""}) {
    const auto refused = ParseSoftNic(bad);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.status().message().find("name=ipv4 or name=interface:IFNAME"),
              std::string::npos);
  }
}

TEST(SoftNicConfig, EachNicHasOneAddressOrInterfaceOfItsOwn) {
  const std::vector<std::pair<std::vector<SoftNicConfig>, std::string>> kRefused = {
      {{{"", "10.0.0.5", ""}}, "has no name"},
      {{{"soft0", "", ""}}, "exactly one of them"},
      {{{"soft0", "10.0.0.5", "eth0"}}, "exactly one of them"},
      {{{"soft0", "10.0.0.256", ""}}, "is not an IPv4 address"},
      {{{"soft0", "", "a/b"}}, "is not a network interface name"},
      {{{"soft0", "", "sixteen-bytes-ab"}}, "is not a network interface name"},
      {{{"soft0", "10.0.0.5", ""}, {"soft0", "10.0.0.6", ""}}, "share a name or an address"},
      {{{"soft0", "10.0.0.5", ""}, {"soft1", "10.0.0.5", ""}}, "share a name or an address"},
      {{{"soft0", "", "eth0"}, {"soft1", "", "eth0"}}, "share a name or an address"},
  };
  for (const auto& [nics, why] : kRefused) {
    const common::Status s = CheckSoftNics(nics);
    ASSERT_FALSE(s.ok()) << why;
    EXPECT_NE(s.message().find(why), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(CheckSoftNics({{{"soft0", "10.0.0.5", ""}, {"soft1", "", "eth1"}}}).ok());
}

TEST(SoftNicConfig, AnInterfaceStandsForItsAddressOnThisHost) {
  const auto resolved = ResolveSoftNics({{"soft0", "", "lo"}, {"soft1", "127.0.0.2", ""}});
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ((*resolved)[0].ipv4, "127.0.0.1");
  EXPECT_EQ((*resolved)[0].interface, "lo");  // kept: where the address came from
  EXPECT_EQ((*resolved)[1].ipv4, "127.0.0.2");
  const auto missing = ResolveSoftNics({{"soft0", "", "braid-none0"}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no network interface 'braid-none0'"),
            std::string::npos);
  // Two NICs that end up on one address.
  const auto twice = ResolveSoftNics({{"soft0", "", "lo"}, {"soft1", "127.0.0.1", ""}});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("'soft0=interface:lo (127.0.0.1)'"), std::string::npos)
      << twice.status().ToString();
}

}  // namespace
}  // namespace braid::soft
