#include "dataplane/providers/provider_registry.h"

#include <gtest/gtest.h>

#include "dataplane/soft/sim_fabric.h"

namespace braid::verbs {
namespace {

TEST(ProviderRegistryTest, KindsAndUnknownKind) {
  EXPECT_EQ(ProviderKinds(), (std::vector<std::string>{"ibverbs", "soft"}));
  ProviderConfig config;
  config.kind = "verbz";
  auto p = CreateProvider(config);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), common::StatusCode::kInvalidArgument);
}

TEST(ProviderRegistryTest, ExplicitKinds) {
  soft::SimFabric fabric;
  ProviderConfig config;
  config.soft = {{{"soft0", "127.0.0.1"}}, &fabric};
  config.kind = "soft";
  auto soft = CreateProvider(config);
  ASSERT_TRUE(soft.ok());
  EXPECT_EQ((*soft)->name(), "soft");
  auto devices = (*soft)->ListDevices();
  ASSERT_TRUE(devices.ok());
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].gid.ToString(), "::ffff:127.0.0.1");
  EXPECT_TRUE((*devices)[0].port_active);
  config.kind = "ibverbs";
  auto ib = CreateProvider(config);
  ASSERT_TRUE(ib.ok());
  EXPECT_EQ((*ib)->name(), "ibverbs");
}

TEST(ProviderRegistryTest, AutoPicksIbverbsWhenRdmaCoreListsADevice) {
  soft::SimFabric fabric;
  ProviderConfig config;
  config.soft = {{{"soft0", "127.0.0.1"}}, &fabric};
  auto chosen = CreateProvider(config);
  ASSERT_TRUE(chosen.ok());
  IbverbsProvider probe;
  auto devices = probe.ListDevices();
  EXPECT_EQ((*chosen)->name(), devices.ok() && !devices->empty() ? "ibverbs" : "soft");
}

TEST(SoftProviderTest, RejectsBadConfiguration) {
  soft::SimFabric fabric;
  soft::SoftProvider none({{}, &fabric});
  EXPECT_EQ(none.ListDevices().status().code(), common::StatusCode::kNotFound);
  soft::SoftProvider bad({{{"soft0", "127.0.0.300"}}, &fabric});
  EXPECT_EQ(bad.ListDevices().status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.OpenDevice("soft0").status().code(), common::StatusCode::kInvalidArgument);
  soft::SoftProvider twice({{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.1"}}, &fabric});
  auto first = twice.OpenDevice("soft0");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(twice.OpenDevice("soft1").status().code(), common::StatusCode::kAlreadyExists)
      << "two soft NICs cannot share an address on one fabric";
  EXPECT_EQ(twice.OpenDevice("soft9").status().code(), common::StatusCode::kNotFound);
}

}  // namespace
}  // namespace braid::verbs
