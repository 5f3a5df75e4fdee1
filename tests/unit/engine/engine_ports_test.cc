// The engine follows its devices' ports: a soft NIC whose interface goes down is faulted, and when
// it comes back the device returns to what it was (drained stays drained) or what the operator made
// it meanwhile; a fault injected on a device whose port stays up is left alone. The NIC's address
// lives on one end of a veth pair this test makes (root only; skipped otherwise) and removes. Port
// queries, which may be slow, never run on the data-plane thread.
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/engine/engine.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/testutil/test_port.h"
#include "tests/testutil/veth_link.h"

namespace braid::engine {
namespace {

class EnginePortsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!link_.ok()) GTEST_SKIP() << "needs root and ip link (veth pairs)";
    std::filesystem::create_directories(dir_);
    EngineOptions o;
    o.provider = &provider_;
    o.agent_id = "ports";
    o.region_dir = dir_;
    o.fault_injection = true;
    o.idle_wait_ms = 50;
    auto e = Engine::Start(o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
    events_ = std::make_shared<EventWatcher>(64);
    ASSERT_TRUE(engine_->WatchEvents(events_).ok());
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  // The device's state once it is `want` (its port shown `port`), waiting up to 4 s (port checks
  // are a second apart); its state then otherwise.
  DeviceStatus WaitFor(DeviceState want, bool port) {
    DeviceStatus now;
    for (int i = 0; i < 80; ++i) {
      auto devices = engine_->ListDevices();
      if (devices.ok() && !devices->empty()) now = devices->front();
      if (now.state == want && now.port_active == port) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return now;
  }
  // The causes of the device events since the last call, in order.
  std::string DeviceEvents() {
    std::string out;
    while (auto e = events_->events.TryPop()) {
      if (!e->device.empty()) out += std::string(EventKindName(e->kind)) + ": " + e->cause + "; ";
    }
    return out;
  }

  const std::string address_ = "127.79." + std::to_string(getpid() % 250) + ".1";
  testing::VethLink link_{"bport" + std::to_string(getpid() % 100000), address_};
  soft::TcpFabric fabric_{soft::TcpFabricOptions{.port = testing::TestPort(6)}};
  soft::SoftProvider provider_{{{{"soft0", address_}}, &fabric_}};
  std::string dir_ = "/dev/shm/braid-ports-test-" + std::to_string(getpid());
  std::unique_ptr<Engine> engine_;
  std::shared_ptr<EventWatcher> events_;
};

TEST_F(EnginePortsTest, ADeviceFollowsItsPortDownAndBackToWhatItWas) {
  EXPECT_EQ(WaitFor(DeviceState::kHealthy, true).state, DeviceState::kHealthy);
  ASSERT_TRUE(engine_->DrainDevice("soft0").ok());
  (void)DeviceEvents();
  ASSERT_TRUE(link_.Set(false));
  DeviceStatus down = WaitFor(DeviceState::kFaulted, false);
  EXPECT_EQ(down.state, DeviceState::kFaulted);
  EXPECT_FALSE(down.port_active);
  EXPECT_EQ(DeviceEvents(), "device_faulted: port down: its link is lost; ");
  // No new VQP uses it.
  CreateVqpRequest r;
  r.config.num_qps = 1;
  EXPECT_FALSE(engine_->CreateVirtualQp(r).ok());
  ASSERT_TRUE(link_.Set(true));
  DeviceStatus back = WaitFor(DeviceState::kDrained, true);
  EXPECT_EQ(back.state, DeviceState::kDrained) << "drained before the port went down";
  EXPECT_TRUE(back.port_active);
  EXPECT_EQ(DeviceEvents(), "device_healthy: port active again: its link is back; ");
  ASSERT_TRUE(engine_->UndrainDevice("soft0").ok());
  EXPECT_TRUE(engine_->CreateVirtualQp(r).ok());
}

// An operator who drains a flapping NIC while its link is down wants it kept out once the link is
// back; the drain used to be refused ("is faulted") and traffic went back onto the NIC.
TEST_F(EnginePortsTest, ADeviceDrainedWhileItsPortIsDownStaysDrainedOnceTheLinkIsBack) {
  ASSERT_EQ(WaitFor(DeviceState::kHealthy, true).state, DeviceState::kHealthy);
  ASSERT_TRUE(link_.Set(false));
  ASSERT_FALSE(WaitFor(DeviceState::kFaulted, false).port_active);
  (void)DeviceEvents();
  auto drained = engine_->DrainDevice("soft0");
  ASSERT_TRUE(drained.ok()) << drained.status().ToString();
  EXPECT_EQ(drained->state, DeviceState::kFaulted) << "its link is still down";
  EXPECT_EQ(drained->state_when_port_up, DeviceState::kDrained);
  EXPECT_EQ(DeviceEvents(),
            "device_drained: drained by the operator (its link is down: this holds once the link "
            "is back); ");
  ASSERT_TRUE(link_.Set(true));
  const DeviceStatus back = WaitFor(DeviceState::kDrained, true);
  EXPECT_EQ(back.state, DeviceState::kDrained);
  EXPECT_TRUE(back.port_active);
  CreateVqpRequest r;
  r.config.num_qps = 1;
  EXPECT_FALSE(engine_->CreateVirtualQp(r).ok()) << "a new VQP used the drained device";
  ASSERT_TRUE(engine_->UndrainDevice("soft0").ok());
  EXPECT_TRUE(engine_->CreateVirtualQp(r).ok());
  // A fault injected is not the operator's to drain over: refused, saying what to do.
  FaultRequest fault;
  fault.kind = FaultKind::kDeviceDown;
  fault.device = "soft0";
  ASSERT_TRUE(engine_->InjectFault(fault).ok());
  auto refused = engine_->DrainDevice("soft0");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), common::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("injected fault"), std::string::npos)
      << refused.status().ToString();
}

TEST_F(EnginePortsTest, AFaultInjectedOnADeviceWhosePortStaysUpIsLeftAlone) {
  // The new veth's carrier may come up a moment after the engine first read the port.
  ASSERT_EQ(WaitFor(DeviceState::kHealthy, true).state, DeviceState::kHealthy);
  FaultRequest down;
  down.kind = FaultKind::kDeviceDown;
  down.device = "soft0";
  ASSERT_TRUE(engine_->InjectFault(down).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two port checks or more
  auto devices = engine_->ListDevices();
  ASSERT_TRUE(devices.ok() && !devices->empty());
  EXPECT_EQ(devices->front().state, DeviceState::kFaulted);
  EXPECT_TRUE(devices->front().port_active);
}

// A fault injected while the port is down stays once the port is back; it used to be taken for the
// port's own fault and cleared with it. Cleared while the port is down, the device stays faulted
// until the port is back.
TEST_F(EnginePortsTest, AFaultInjectedWhileThePortIsDownOutlastsThePort) {
  ASSERT_EQ(WaitFor(DeviceState::kHealthy, true).state, DeviceState::kHealthy);
  ASSERT_TRUE(link_.Set(false));
  ASSERT_FALSE(WaitFor(DeviceState::kFaulted, false).port_active);
  FaultRequest fault;
  fault.kind = FaultKind::kDeviceDown;
  fault.device = "soft0";
  ASSERT_TRUE(engine_->InjectFault(fault).ok());
  ASSERT_TRUE(link_.Set(true));
  DeviceStatus back = WaitFor(DeviceState::kHealthy, true);  // it must not get there
  EXPECT_TRUE(back.port_active);
  EXPECT_EQ(back.state, DeviceState::kFaulted) << "the injected fault went with the port's";
  // Now cleared with the port down: faulted until the port comes back, then healthy.
  ASSERT_TRUE(link_.Set(false));
  ASSERT_FALSE(WaitFor(DeviceState::kFaulted, false).port_active);
  fault.kind = FaultKind::kDeviceUp;
  ASSERT_TRUE(engine_->InjectFault(fault).ok());
  auto devices = engine_->ListDevices();
  ASSERT_TRUE(devices.ok() && !devices->empty());
  EXPECT_EQ(devices->front().state, DeviceState::kFaulted) << "cleared while its port is down";
  ASSERT_TRUE(link_.Set(true));
  EXPECT_EQ(WaitFor(DeviceState::kHealthy, true).state, DeviceState::kHealthy);
}

// The threads port queries ran on; each query takes `delay` (a soft NIC on a host with thousands
// of interfaces, an HCA being reset).
struct PortQueries {
  std::chrono::milliseconds delay{200};
  std::mutex mu;
  std::vector<std::string> threads;
};

class SlowPortDevice final : public verbs::Device {
 public:
  SlowPortDevice(std::unique_ptr<verbs::Device> inner, PortQueries* queries)
      : inner_(std::move(inner)), queries_(queries) {}
  const verbs::DeviceInfo& info() const override { return inner_->info(); }
  common::Result<bool> QueryPortActive() override {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    {
      std::lock_guard<std::mutex> lock(queries_->mu);
      queries_->threads.emplace_back(name);
    }
    std::this_thread::sleep_for(queries_->delay);
    return inner_->QueryPortActive();
  }
  common::Result<std::unique_ptr<verbs::ProtectionDomain>> AllocPd() override {
    return inner_->AllocPd();
  }
  common::Result<std::unique_ptr<verbs::Cq>> CreateCq(int min_entries) override {
    return inner_->CreateCq(min_entries);
  }
  int progress_fd() const override { return inner_->progress_fd(); }
  void BeginPostBatch() override { inner_->BeginPostBatch(); }
  void EndPostBatch() override { inner_->EndPostBatch(); }

 private:
  std::unique_ptr<verbs::Device> inner_;
  PortQueries* queries_;
};

class SlowPortProvider final : public verbs::Provider {
 public:
  SlowPortProvider(verbs::Provider& inner, PortQueries* queries)
      : inner_(inner), queries_(queries) {}
  std::string_view name() const override { return inner_.name(); }
  common::Result<std::vector<verbs::DeviceInfo>> ListDevices() override {
    return inner_.ListDevices();
  }
  common::Result<std::unique_ptr<verbs::Device>> OpenDevice(std::string_view name) override {
    BRAID_ASSIGN_OR_RETURN(std::unique_ptr<verbs::Device> d, inner_.OpenDevice(name));
    return std::unique_ptr<verbs::Device>(std::make_unique<SlowPortDevice>(std::move(d), queries_));
  }

 private:
  verbs::Provider& inner_;
  PortQueries* queries_;
};

// A port query that takes 200 ms held the data plane for 200 ms each second, as getifaddrs did
// for 3 ms per soft NIC on a host with 500 interfaces: the queries run on a thread of their own
// (but the first, before the engine serves), and control calls meanwhile are answered.
TEST(EnginePorts, PortQueriesRunOffTheDataPlaneThread) {
  PortQueries queries;
  soft::TcpFabric fabric(soft::TcpFabricOptions{.port = testing::TestPort(6)});
  soft::SoftProvider soft({{{"soft0", "127.0.0.1"}}, &fabric});
  SlowPortProvider provider(soft, &queries);
  const std::string dir = "/dev/shm/braid-slow-ports-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  {
    EngineOptions o;
    o.provider = &provider;
    o.agent_id = "slow-ports";
    o.region_dir = dir;
    auto engine = Engine::Start(o);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2600);
    std::chrono::duration<double, std::milli> slowest{0};
    while (std::chrono::steady_clock::now() < end) {
      const auto t0 = std::chrono::steady_clock::now();
      ASSERT_TRUE((*engine)->ListDevices().ok());
      slowest = std::max<std::chrono::duration<double, std::milli>>(
          slowest, std::chrono::steady_clock::now() - t0);
    }
    std::printf("slowest control call beside 200 ms port queries: %.1f ms\n", slowest.count());
  }
  std::filesystem::remove_all(dir);
  std::lock_guard<std::mutex> lock(queries.mu);
  ASSERT_GE(queries.threads.size(), 3u);
  EXPECT_EQ(queries.threads.front(), "braid-engine");  // at start, before it serves
  for (size_t i = 1; i < queries.threads.size(); ++i) EXPECT_EQ(queries.threads[i], "braid-ports");
}

}  // namespace
}  // namespace braid::engine
