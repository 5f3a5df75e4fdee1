// braidd's configuration: a YAML file (listeners, window, fault injection, per-QP metrics) taken
// as given, and a bad one refused at start with the key named; the host's locked-memory limit
// named when it stops a registration.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>

#include "dataplane/common/proc_status.h"
#include "dataplane/common/unique_fd.h"
#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"
#include "tests/testutil/veth_link.h"

namespace braid::testing {
namespace {

constexpr int kServing = 1;  // grpc.health.v1 SERVING

TEST(AgentConfig, YamlFileAndUnixSocket) {
  const std::string dir = "/tmp/braid-config-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string socket = dir + "/braidd.sock";
  {
    std::ofstream yaml(dir + "/braidd.yaml");
    yaml << "provider: soft\n"
            "listen:\n  unix: "
         << socket
         << "\n"
            "transfer_window: 64\n"
            "fault_injection:\n  enabled: true\n"
            "metrics:\n  per_qp: true\n";
  }
  auto agent = AgentProcess::Spawn(
      {"yaml", {TestNicIp(0, 0)}, 0, false, {"--config", dir + "/braidd.yaml"}});
  ASSERT_TRUE(agent);
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  auto stub = v1::Agent::NewStub(channel);
  grpc::ClientContext ctx;
  v1::AgentInfo info;
  ASSERT_TRUE(stub->GetInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.agent_id(), "yaml");  // the flag wins over the file (which has none)
  EXPECT_EQ(info.provider(), "soft");
  EXPECT_TRUE(info.fault_injection());
  TransferRun run = RunTransfers(*stub, {});
  EXPECT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(run.window, 64u);
  EXPECT_EQ(HealthStatus(channel), kServing);
  CreateVqp(*stub, v1::SCHEME_SPRAY, 2);
  EXPECT_EQ(MetricSum(ScrapeMetrics(agent->metrics_port()), "braid_qp_outstanding_wrs"), 0);
  EXPECT_NE(ScrapeMetrics(agent->metrics_port()).find("braid_qp_outstanding_wrs{"),
            std::string::npos);
  agent.reset();
  EXPECT_FALSE(std::filesystem::exists(socket));  // removed at shutdown
  std::filesystem::remove_all(dir);
}

// The control endpoint in business cards is an address peers can dial: listen.tcp on a wildcard
// host put "0.0.0.0:PORT" there, so a peer recovering a QP dialled its own host (in the chart's
// default deployment, every agent); now the host name stands in for it, with a warning, and
// listen.advertise (--advertise) says it outright.
TEST(AgentConfig, BusinessCardsNameAnAddressPeersCanDial) {
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  const std::string port = std::to_string(TestPort(0));
  auto endpoint_of = [&](const std::string& grpc_host, const std::vector<std::string>& args) {
    AgentSpec spec{"card", {TestNicIp(0, 0)}, 0};
    spec.grpc_host = grpc_host;
    spec.extra_args = args;
    auto agent = AgentProcess::Spawn(spec);
    if (!agent) return std::string("(did not start)");
    const v1::VirtualQpInfo vqp = CreateVqp(agent->stub(), v1::SCHEME_SPRAY, 1);
    std::ifstream in(agent->log_path());
    const std::string log((std::istreambuf_iterator<char>(in)), {});
    const bool warned = log.find("listen.tcp has a wildcard host") != std::string::npos;
    return vqp.card().control_endpoint() + (warned ? " (warned)" : "");
  };
  EXPECT_EQ(endpoint_of("127.0.0.1", {}), "127.0.0.1:" + port);
  EXPECT_EQ(endpoint_of("0.0.0.0", {}), std::string(host) + ":" + port + " (warned)");
  EXPECT_EQ(endpoint_of("0.0.0.0", {"--advertise", "127.0.0.9:" + port}), "127.0.0.9:" + port);
}

// A region directory that is missing, not a directory, or not in memory stops the agent at start,
// naming it and what to do (it said "open .../braid-<id>.lock: No such file or directory"; one
// on a disk took regions whose pages went to the disk).
TEST(AgentConfig, ARegionDirMissingNotADirectoryOrNotInMemoryIsRefusedAtStart) {
  const std::string missing = "/tmp/braid-no-such-dir-" + std::to_string(getpid());
  const std::string file = missing + ".file";
  std::ofstream(file) << "x";
  const std::pair<std::string, const char*> kRefused[] = {
      {missing, "does not exist: create it"},
      {file, "is not a directory"},
      // Not in memory: region pages would go to the file system's backing store.
      {"/proc", "is not in memory (its file system, type 0x9fa0, is not tmpfs"},
  };
  for (const auto& [dir, why] : kRefused) {
    const CommandResult r =
        RunCommand("timeout --preserve-status -s INT 5 " + std::string(BRAID_BRAIDD_PATH) +
                   " --grpc-tcp 127.0.0.1:" + std::to_string(TestPort(0)) +
                   " --plaintext --metrics '' " + "--soft-port " + std::to_string(TestPort(1)) +
                   " --soft-nic soft0=" + TestNicIp(0, 0) + " --region-dir " + dir);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("region_dir '" + dir + "' " + why), std::string::npos) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(missing));
  std::filesystem::remove(file);
}

// A listener the agent cannot open stops it at start, saying which and what to do: a soft NIC
// address this host does not have or no peer could call, a soft port or gRPC port another process
// holds (they said "listen on ::ffff:127.0.0.1:port: Address already in use", or only "could not
// listen").
TEST(AgentConfig, AListenerItCannotOpenStopsTheAgentAtStartSayingWhy) {
  const std::string dir = "/dev/shm/braid-listen-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  // Holds `port` on `ip` while the descriptor lives.
  auto hold = [](const std::string& ip, uint16_t port) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << ip << ":" << port;
    EXPECT_EQ(listen(fd, 1), 0);
    return common::UniqueFd(fd);
  };
  auto start = [&](const std::string& nic_ip) {
    return RunCommand("timeout --preserve-status -s INT 5 " + std::string(BRAID_BRAIDD_PATH) +
                      " --grpc-tcp 127.0.0.1:" + std::to_string(TestPort(0)) +
                      " --plaintext --metrics '' --soft-port " + std::to_string(TestPort(1)) +
                      " --soft-nic soft0=" + nic_ip + " --region-dir " + dir);
  };
  const std::string port = std::to_string(TestPort(1));
  // Addresses bind() takes but no peer can call (they started, and every connection failed).
  for (const auto& [ip, kind] : {std::pair{"0.0.0.0", "the wildcard address"},
                                 {"255.255.255.255", "the broadcast address"},
                                 {"224.0.0.1", "a multicast address"},
                                 {"240.0.0.1", "a reserved address (240.0.0.0/4)"}}) {
    const CommandResult r = start(ip);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("soft NIC soft0's address " + std::string(ip) + " is " + kind +
                            ", not one peers can call; give an address of one of this host's "
                            "interfaces"),
              std::string::npos)
        << r.output;
  }
  {
    const CommandResult r = start("192.0.2.77");  // TEST-NET-1: no host has it
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("soft NIC soft0 could not listen on 192.0.2.77:" + port +
                            ": 192.0.2.77 is not an address of this host"),
              std::string::npos)
        << r.output;
  }
  {
    const common::UniqueFd taken = hold(TestNicIp(0, 0), TestPort(1));
    const CommandResult r = start(TestNicIp(0, 0));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("soft NIC soft0 could not listen on " + TestNicIp(0, 0) + ":" + port +
                            ": the port is in use there"),
              std::string::npos)
        << r.output;
  }
  {
    const common::UniqueFd taken = hold("127.0.0.1", TestPort(0));
    const CommandResult r = start(TestNicIp(0, 0));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("gRPC server could not listen on 127.0.0.1:" +
                            std::to_string(TestPort(0)) + ": is the port in use"),
              std::string::npos)
        << r.output;
  }
  std::filesystem::remove_all(dir);
}

// A gRPC port a live agent serves on is refused to a second agent: gRPC's listeners set
// SO_REUSEPORT by default, so the second one started, both listened, and each new connection went
// to one of the two at the kernel's choice (half of `braidctl info` calls answered by the wrong
// agent, or refused by its identities).
TEST(AgentConfig, ASecondAgentOnAPortALiveAgentServesOnIsRefusedAndTheFirstKeepsEveryCaller) {
  AgentSpec spec{"port-owner", {TestNicIp(0, 0)}, 4};
  auto first = AgentProcess::Spawn(spec);
  ASSERT_TRUE(first);
  const std::string dir = "/dev/shm/braid-port-taken-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const CommandResult r = RunCommand(
      "timeout --preserve-status -s INT 3 " + std::string(BRAID_BRAIDD_PATH) + " --grpc-tcp " +
      first->endpoint() + " --plaintext --anonymous-role admin --metrics '' --soft-port " +
      std::to_string(TestPort(7)) + " --soft-nic soft0=" + TestNicIp(1, 0) + " --region-dir " +
      dir + " --agent-id intruder");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("gRPC server could not listen on " + first->endpoint() +
                          ": is the port in use"),
            std::string::npos)
      << r.output;
  // Every new connection reaches the first agent.
  for (int i = 0; i < 8; ++i) {
    auto stub = v1::Agent::NewStub(
        grpc::CreateChannel(first->endpoint(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::AgentInfo info;
    ASSERT_TRUE(stub->GetInfo(&ctx, {}, &info).ok()) << "call " << i;
    EXPECT_EQ(info.agent_id(), "port-owner") << "call " << i;
  }
  std::filesystem::remove_all(dir);
}

// With no agent id given, the agent takes its host's name (and starts).
TEST(AgentConfig, AnAgentGivenNoIdIsNamedForItsHost) {
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  const std::string dir = "/dev/shm/braid-noid-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const CommandResult r =
      RunCommand("timeout --preserve-status -s INT 3 " + std::string(BRAID_BRAIDD_PATH) +
                 " --grpc-tcp 127.0.0.1:" + std::to_string(TestPort(0)) +
                 " --plaintext --metrics '' --soft-port " + std::to_string(TestPort(1)) +
                 " --soft-nic soft0=" + TestNicIp(0, 0) + " --region-dir " + dir);
  EXPECT_NE(r.output.find("agent=" + std::string(host) + " provider="), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("msg=\"serving\""), std::string::npos) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove_all(dir);
}

TEST(AgentConfig, ABadConfigFileIsRefusedAtStart) {
  const std::string path = "/tmp/braid-bad-config-" + std::to_string(getpid()) + ".yaml";
  std::ofstream(path) << "transfer_window: lots\n";
  const CommandResult r = RunCommand(std::string(BRAID_BRAIDD_PATH) + " --config " + path);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("config key 'transfer_window'"), std::string::npos) << r.output;
  // Values of the right type that are still wrong: --check-config says which and why.
  const std::pair<const char*, const char*> kRefused[] = {
      {"unix_connections_per_uid: 0\n", "unix_connections_per_uid must be at least 1"},
      {"transfer_window: 2048\ntransfer_window_per_caller: 1024\n",
       "transfer_window_per_caller must be at least transfer_window"},
      {"max_transfers_per_caller: 0\n", "max_transfers_per_caller must be at least 1"},
      {"max_region_bytes_per_caller: 100\n", "max_region_bytes_per_caller must be at least 4096"},
      {"soft:\n  nics: [{name: soft0_of_a_host_whose_operator_likes_very_long_names_indeed_yes_ok, "
       "ip: 127.0.0.1}]\n",
       "has 66 bytes; at most 64"},
      // What the metrics exporter would refuse at start, found by the check (civetweb said only
      // "null context when constructing CivetServer").
      {"metrics:\n  listen: '127.0.0.1:99999'\n", "'127.0.0.1:99999' is not host:port"},
      {"metrics:\n  listen: '127.0.0.1:9464,127.0.0.2:9464'\n", "lists several addresses"},
      {"metrics:\n  listen: '[::]:9464'\n", "built without IPv6: give an IPv4 address"},
      // gRPC took port 99999 and started serving (on what port?).
      {"listen:\n  tcp: '127.0.0.1:99999'\n", "listen.tcp '127.0.0.1:99999' is not host:port"},
      {"listen:\n  tcp: '7600'\n", "listen.tcp '7600' is not host:port"},
      // Written into business cards, where peers dial it to recover QPs: a wildcard or a port
      // picked at start reaches no agent (0.0.0.0 dials the caller's own host).
      {"listen:\n  tcp: '0.0.0.0:7600'\n  advertise: '0.0.0.0:7600'\n",
       "listen.advertise '0.0.0.0:7600' is not an address peers can dial"},
      {"listen:\n  tcp: '0.0.0.0:7600'\n  advertise: 'node-a'\n",
       "listen.advertise 'node-a' is not an address peers can dial"},
      {"listen:\n  tcp: '127.0.0.1:0'\n", "takes any free port, which peers cannot know"},
      // Both started, and failed with "soft NIC ::ffff:127.0.0.1 is attached" / served on a port
      // no peer calls.
      {"soft:\n  nics: [{name: soft0, ip: 127.0.0.1}, {name: soft0, ip: 127.0.0.2}]\n",
       "share a name or an address"},
      {"soft:\n  port: 0\n", "soft.port must be 1 to 65535"},
      // An interface stands for this host's address on it, found at start (and by the check).
      {"soft:\n  nics: [{name: soft0, ip: 127.0.0.1, interface: lo}]\n",
       "give it an ip or an interface (exactly one of them)"},
      {"provider: soft\nsoft:\n  nics: [{name: soft0, interface: braid-none0}]\n",
       "this host has no network interface 'braid-none0'"},
      {"provider: soft\nsoft:\n  nics: [{name: soft0, interface: lo}, {name: soft1, ip: "
       "127.0.0.1}]\n",
       "share a name or an address"},
      // A misspelt key was ignored (the agent ran on the default), and a scalar where a mapping
      // belongs aborted the agent inside yaml-cpp.
      {"transfer_windw: 64\n",
       "config key 'transfer_windw' is not one braidd knows (did you mean 'transfer_window'?)"},
      {"metrics:\n  listn: 9464\n",
       "'metrics.listn' is not one braidd knows (did you mean "
       "'metrics.listen'?)"},
      {"soft:\n  nics: [{name: soft0, ip: 127.0.0.1, mtu: 9000}]\n",
       "'soft.nics[].mtu' is not one braidd knows"},
      {"soft: 5\n", "config key 'soft': not a mapping"},
      {"metrics: x\n", "config key 'metrics': not a mapping"},
      {"soft:\n  nics: [5]\n", "config key 'soft.nics': an item is not a mapping"},
      {"auth:\n  identities: [5]\n", "config key 'auth.identities': an item is not a mapping"},
  };
  for (const auto& [yaml, why] : kRefused) {
    std::ofstream(path) << "plaintext: true\n" << yaml;
    const CommandResult refused =
        RunCommand(std::string(BRAID_BRAIDD_PATH) + " --check-config --config " + path);
    EXPECT_EQ(refused.exit_code, 2) << yaml << refused.output;
    EXPECT_NE(refused.output.find(why), std::string::npos) << yaml << refused.output;
  }
  // Refused at start as by the check: a log level it does not know silenced the log, and with it
  // the refusal (the agent exited 1 without a word).
  const CommandResult loud =
      RunCommand(std::string(BRAID_BRAIDD_PATH) + " --plaintext --log-level loud");
  EXPECT_EQ(loud.exit_code, 2) << loud.output;
  EXPECT_NE(loud.output.find("log_level must be trace, debug, info, warn or error"),
            std::string::npos)
      << loud.output;
  // A directory given as the file aborted the agent (an uncaught exception reading it).
  const CommandResult dir =
      RunCommand(std::string(BRAID_BRAIDD_PATH) + " --check-config --config /tmp");
  EXPECT_EQ(dir.exit_code, 2) << dir.output;
  EXPECT_NE(dir.output.find("config file '/tmp' is not a file"), std::string::npos) << dir.output;
  // Any free port is fine when the address peers dial is given.
  std::ofstream(path) << "plaintext: true\nlisten:\n  tcp: '0.0.0.0:0'\n  advertise: "
                         "'10.0.0.5:7600'\n";
  EXPECT_EQ(
      RunCommand(std::string(BRAID_BRAIDD_PATH) + " --check-config --config " + path).exit_code, 0);
  // A bare port and a host name are what civetweb takes.
  for (const char* listen : {"9464", "localhost:9464", "0.0.0.0:0"}) {
    std::ofstream(path) << "plaintext: true\nmetrics:\n  listen: '" << listen
                        << "'\nlisten:\n  tcp: '[::1]:7600'\n";
    const CommandResult valid =
        RunCommand(std::string(BRAID_BRAIDD_PATH) + " --check-config --config " + path);
    EXPECT_EQ(valid.exit_code, 0) << listen << valid.output;
  }
  std::filesystem::remove(path);
}

// A tokens file that cannot serve is an error at start: a wrong path, a directory or a line with
// no token started an agent that refused every token (or skipped that identity) without a word.
TEST(AgentConfig, ATokensFileThatCannotServeIsRefusedAtStart) {
  const std::string dir = "/dev/shm/braid-tokens-test-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/no-token") << "# identity token\nalice secret-a\nbob\n";
  std::ofstream(dir + "/good") << "# identity token\nalice secret-a\n\nbob secret-b\n";
  const std::pair<std::string, std::string> kCases[] = {
      {dir + "/missing", "/missing': No such file or directory"},
      {dir, "' is not a file"},
      {dir + "/no-token", "line 3: 'bob' has no token after it"},
      {dir + "/good", "msg=\"serving\""},
  };
  for (const auto& [file, expected] : kCases) {
    const CommandResult r = RunCommand(
        "timeout --preserve-status -s INT 3 " + std::string(BRAID_BRAIDD_PATH) +
        " --grpc-tcp 127.0.0.1:" + std::to_string(TestPort(0)) +
        " --plaintext --metrics '' --soft-port " + std::to_string(TestPort(1)) +
        " --soft-nic soft0=" + TestNicIp(0, 0) + " --region-dir " + dir + " --tokens-file " + file);
    EXPECT_NE(r.output.find(expected), std::string::npos) << file << ": " << r.output;
    EXPECT_EQ(r.exit_code, file == dir + "/good" ? 0 : 1) << file << ": " << r.output;
  }
  std::filesystem::remove_all(dir);
}

// On an HCA, registering memory pins it, counted against RLIMIT_MEMLOCK unless the agent has
// CAP_IPC_LOCK (libbraid_verbs.so counts it as the kernel does). Past the limit ibv_reg_mr fails
// with ENOMEM, and the agent said only "ibv_reg_mr: Cannot allocate memory". It now raises its
// soft limit to the hard one at start, warns when pinning stays bounded, and a registration past
// the limit says which limit and how to raise it; the agent keeps serving.
TEST(AgentMemlock, ARegistrationPastTheLockedMemoryLimitNamesTheLimitAndHowToRaiseIt) {
  if (!SoftVerbsAvailable())
    GTEST_SKIP() << "libbraid_verbs.so is not built here (sanitizer build)";
  AgentSpec spec{"memlock", {TestNicIp(0, 0)}, 0};
  spec.soft_verbs = true;
  spec.memlock_limit = 8 * kMiB;
  spec.drop_ipc_lock = true;
  spec.log_level = "info";
  auto agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  const std::optional<uint64_t> caps =
      common::ProcStatusField("CapEff", 16, "/proc/" + std::to_string(agent->pid()) + "/status");
  ASSERT_TRUE(caps.has_value());
  ASSERT_EQ((*caps >> 14) & 1, 0u) << "the agent has CAP_IPC_LOCK";
  const v1::VirtualQpInfo vqp = CreateVqp(agent->stub(), v1::SCHEME_SPRAY, 2);
  const v1::RegionInfo small = Register(agent->stub(), 2 * kMiB, "small", {vqp.vqp_id()});
  EXPECT_NE(small.region_id(), 0u);
  grpc::ClientContext ctx;
  v1::RegisterMemoryRequest req;
  req.set_length(16 * kMiB);
  req.add_grant_vqp_ids(vqp.vqp_id());
  v1::RegionInfo big;
  const grpc::Status refused = agent->stub().RegisterMemory(&ctx, req, &big);
  std::printf("16 MiB region under an 8 MiB memlock limit: %s\n", refused.error_message().c_str());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("may pin at most 8388608 bytes of memory (RLIMIT_MEMLOCK"),
            std::string::npos)
      << refused.error_message();
  EXPECT_NE(refused.error_message().find("CAP_IPC_LOCK"), std::string::npos);
  // Still serving; what fits is registered.
  EXPECT_NE(Register(agent->stub(), 2 * kMiB, "fits", {vqp.vqp_id()}).region_id(), 0u);
  std::ifstream log(agent->log_path());
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("memlock_limit=8388608"), std::string::npos) << text;
}

// A DaemonSet gives every node's agent one config. A soft NIC given by interface takes this
// host's address on it, and with none configured soft0 takes the IPv4 address the agent
// advertises to peers (the chart's --advertise $(POD_IP):PORT); before, every soft NIC needed a
// fixed address (right on one node only) and the default sat on 127.0.0.1, which no other node
// reaches. Both agents then move verified bytes over those NICs.
TEST(AgentConfig, SoftNicsTakeTheirInterfacesAddressOrTheOneTheAgentAdvertises) {
  const std::string name = "bnic" + std::to_string(getpid() % 100000);
  VethLink link(name, TestNicIp(0, 0));
  if (!link.ok()) GTEST_SKIP() << "needs root and veth pairs";
  AgentSpec by_interface{"by-interface", {"interface:" + name}, 0};
  by_interface.log_level = "info";  // the address it took is logged
  auto a = AgentProcess::Spawn(by_interface);
  AgentSpec unset{"by-default", {}, 2};
  unset.grpc_host = "0.0.0.0";
  unset.extra_args = {"--advertise", TestNicIp(1, 0) + ":" + std::to_string(TestPort(2))};
  auto b = AgentProcess::Spawn(unset);
  ASSERT_TRUE(a && b);
  auto soft0 = [](AgentProcess& agent) {
    grpc::ClientContext ctx;
    v1::ListDevicesResponse devices;
    EXPECT_TRUE(agent.stub().ListDevices(&ctx, {}, &devices).ok());
    return devices.devices_size() == 1 ? devices.devices(0).gid() : std::string("(none)");
  };
  EXPECT_EQ(soft0(*a), "::ffff:" + TestNicIp(0, 0));
  EXPECT_EQ(soft0(*b), "::ffff:" + TestNicIp(1, 0));
  std::ifstream in(a->log_path());
  const std::string log((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(log.find("soft_nic=soft0 interface=" + name + " address=" + TestNicIp(0, 0)),
            std::string::npos)
      << log;
  const v1::VirtualQpInfo va = CreateVqp(a->stub(), v1::SCHEME_SPRAY, 2);
  const v1::VirtualQpInfo vb = CreateVqp(b->stub(), v1::SCHEME_SPRAY, 2);
  ConnectPair(a->stub(), va, b->stub(), vb);
  constexpr uint64_t kBytes = 4 << 20;
  const v1::RegionInfo src = Register(a->stub(), kBytes, "src");
  const v1::RegionInfo dst = Register(b->stub(), kBytes, "dst", {vb.vqp_id()});
  MappedRegion src_map(src.path(), kBytes), dst_map(dst.path(), kBytes);
  ASSERT_TRUE(src_map.data() && dst_map.data());
  FillPattern(src_map.data(), kBytes, 41);
  const TransferRun run =
      RunTransfers(a->stub(), Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, 1 << 20, 4, 4));
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), 4u);
  for (const auto& c : run.completions) EXPECT_EQ(c.wc_status(), "success");
  EXPECT_EQ(Checksum(dst_map.data(), kBytes), Checksum(src_map.data(), kBytes));
}

// `provider: auto` (the chart's default) took rdma-core only when a port was active: an HCA host
// whose links were still down when the agent started got soft NICs on 127.0.0.1, for good. It
// now takes rdma-core whenever it lists a device; the ports are followed, so the agent serves
// once its link comes up. The rdma-core path here is libbraid_verbs.so, whose ports follow the
// interface holding each soft NIC's address (a veth end this test takes down).
// Meanwhile its health is NOT_SERVING from the start, and a drain the operator asks while the
// link is down holds once it is back (`braidctl devices` says so).
TEST(AgentProvider, AutoTakesRdmaCoreWithItsLinkDownAndServesOnceTheLinkComesUp) {
  if (!SoftVerbsAvailable())
    GTEST_SKIP() << "libbraid_verbs.so is not built here (sanitizer build)";
  VethLink link("bauto" + std::to_string(getpid() % 100000),
                "127.80." + std::to_string(getpid() % 250) + ".1");
  if (!link.ok()) GTEST_SKIP() << "needs root and veth pairs";
  ASSERT_TRUE(link.Set(false));
  AgentSpec spec{"auto-down", {link.address()}, 0};
  spec.soft_verbs = true;
  spec.soft_verbs_provider = "auto";
  auto agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  auto device = [&] {
    grpc::ClientContext ctx;
    v1::ListDevicesResponse devices;
    EXPECT_TRUE(agent->stub().ListDevices(&ctx, {}, &devices).ok());
    return devices.devices_size() == 1 ? devices.devices(0) : v1::Device();
  };
  {
    grpc::ClientContext ctx;
    v1::AgentInfo info;
    ASSERT_TRUE(agent->stub().GetInfo(&ctx, {}, &info).ok());
    EXPECT_EQ(info.provider(), "ibverbs");
  }
  v1::Device d = device();
  EXPECT_EQ(d.name(), "soft0");
  EXPECT_EQ(d.state(), v1::DEVICE_STATE_FAULTED);
  EXPECT_FALSE(d.port_active());
  // Its health says so from the start (gRPC's own default, SERVING, used to stand until a device
  // had come up and gone down again). 2: NOT_SERVING, 1: SERVING.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a health pass or more
  EXPECT_EQ(HealthStatus(agent->channel()), 2);
  EXPECT_EQ(d.state_when_port_up(), v1::DEVICE_STATE_HEALTHY);
  // The operator drains it while its link is down: it stays out once the link is back.
  v1::Device out;
  ASSERT_TRUE(Drain(*agent, "soft0", true, &out).ok());
  EXPECT_EQ(out.state(), v1::DEVICE_STATE_FAULTED);
  EXPECT_EQ(out.state_when_port_up(), v1::DEVICE_STATE_DRAINED);
  const CommandResult shown =
      RunCommand(std::string(BRAIDCTL_PATH) + " --agent " + agent->endpoint() + " devices");
  EXPECT_NE(shown.output.find("faulted, port down (drained once its link is back)"),
            std::string::npos)
      << shown.output;
  ASSERT_TRUE(link.Set(true));
  for (int i = 0; i < 80 && !(d.state() == v1::DEVICE_STATE_DRAINED && d.port_active()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    d = device();
  }
  EXPECT_EQ(d.state(), v1::DEVICE_STATE_DRAINED);
  EXPECT_TRUE(d.port_active());
  ASSERT_TRUE(Drain(*agent, "soft0", false, &out).ok());
  EXPECT_EQ(out.state(), v1::DEVICE_STATE_HEALTHY);
  int health = 0;
  for (int i = 0; i < 40 && (health = HealthStatus(agent->channel())) != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health, 1);
  // It serves: a VQP is made on the device.
  EXPECT_NE(CreateVqp(agent->stub(), v1::SCHEME_SPRAY, 2).vqp_id(), 0u);
}

}  // namespace
}  // namespace braid::testing
