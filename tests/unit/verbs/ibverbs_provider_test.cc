#include "dataplane/verbs/ibverbs_provider.h"

#include <gtest/gtest.h>

namespace braid::verbs {
namespace {

// Runs everywhere: without a device the provider says so clearly; with one it lists it.
TEST(IbverbsProviderTest, ListsDevicesOrSaysThereIsNone) {
  IbverbsProvider provider;
  EXPECT_EQ(provider.name(), "ibverbs");
  auto devices = provider.ListDevices();
  if (devices.ok()) {
    ASSERT_FALSE(devices->empty());
    for (const DeviceInfo& d : *devices) {
      EXPECT_EQ(d.provider, "ibverbs");
      EXPECT_FALSE(d.name.empty());
    }
    return;
  }
  EXPECT_EQ(devices.status().code(), common::StatusCode::kNotFound);
  EXPECT_NE(devices.status().message().find("no RDMA device"), std::string_view::npos)
      << devices.status().ToString();
}

TEST(IbverbsProviderTest, OpeningAnUnknownDeviceIsNotFound) {
  IbverbsProvider provider;
  auto device = provider.OpenDevice("braid_no_such_device");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), common::StatusCode::kNotFound);
}

}  // namespace
}  // namespace braid::verbs
