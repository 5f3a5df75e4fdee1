#include "dataplane/verbs/gid.h"

#include <gtest/gtest.h>

namespace braid::verbs {
namespace {

TEST(GidTest, Ipv4MappedRoundTrip) {
  auto gid = Gid::ParseIpv4("127.0.0.2");
  ASSERT_TRUE(gid.has_value());
  EXPECT_TRUE(gid->IsIpv4Mapped());
  EXPECT_EQ(gid->Ipv4(), 0x7f000002u);
  EXPECT_EQ(gid->ToString(), "::ffff:127.0.0.2");
  EXPECT_EQ(gid->ToAddress(), "127.0.0.2");
  EXPECT_EQ(Gid::FromIbv(gid->ToIbv()), *gid);
  EXPECT_EQ(Gid::FromIpv4(0x7f000002u), *gid);
}

TEST(GidTest, RejectsBadText) {
  EXPECT_FALSE(Gid::ParseIpv4("").has_value());
  EXPECT_FALSE(Gid::ParseIpv4("300.1.1.1").has_value());
  EXPECT_FALSE(Gid::ParseIpv4("1.2.3").has_value());
  EXPECT_FALSE(Gid::ParseIpv4("127.0.0.1 junk").has_value());
  EXPECT_FALSE(Gid::ParseIpv4(std::string(100, '1')).has_value());
}

TEST(GidTest, NonMappedGidPrintsHexGroups) {
  Gid g;
  g.raw[0] = 0xfe;
  g.raw[1] = 0x80;
  g.raw[15] = 1;
  EXPECT_FALSE(g.IsIpv4Mapped());
  EXPECT_FALSE(g.Ipv4().has_value());
  EXPECT_EQ(g.ToString(), "fe80:0000:0000:0000:0000:0000:0000:0001");
  EXPECT_EQ(g.ToAddress(), g.ToString());
  EXPECT_TRUE(Gid().IsZero());
  EXPECT_FALSE(g.IsLoopback());
  EXPECT_TRUE(Gid::ParseIpv4("127.80.3.1")->IsLoopback());
  EXPECT_FALSE(Gid::ParseIpv4("10.0.0.5")->IsLoopback());
}

}  // namespace
}  // namespace braid::verbs
