// The agent's Unix socket: a caller is known by its uid (SO_PEERCRED), and the region files it
// registers there belong to it (a second uid, run through this binary's disabled helper test).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

TEST(AgentUnixSocket, ACallerIsKnownByItsUid) {
  const std::string dir = "/tmp/braid-uds-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  AgentSpec spec{"uds", {TestNicIp(0, 0)}, 0};
  spec.security_args = {"--grpc-unix",
                        dir + "/braidd.sock",
                        "--plaintext",
                        "--anonymous-role",
                        "admin",
                        "--identity",
                        "uid:" + std::to_string(getuid()) + "=operator"};
  auto agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  auto stub = v1::Agent::NewStub(
      grpc::CreateChannel("unix:" + dir + "/braidd.sock", grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::AgentInfo info;
  ASSERT_TRUE(stub->GetInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.caller_identity(), "uid:" + std::to_string(getuid()));
  EXPECT_EQ(info.caller_role(), "operator");
  EXPECT_TRUE(info.plaintext());  // its TCP listener
  // Over TCP the same process is anonymous.
  grpc::ClientContext ctx2;
  ASSERT_TRUE(agent->stub().GetInfo(&ctx2, {}, &info).ok());
  EXPECT_EQ(info.caller_identity(), "");
  EXPECT_EQ(info.caller_role(), "admin");
  agent.reset();
  std::filesystem::remove_all(dir);
}

// Run as another user by RegionFilesBelongToTheUnixSocketCaller (setpriv, then this binary with
// --gtest_also_run_disabled_tests): registers a region over the Unix socket in
// BRAID_UDS_HELPER_SOCKET, checks that it owns the file (mode 0600) and can map and write it, and
// prints the file's path.
TEST(AgentUnixSocketHelper, DISABLED_RegistersAndMapsARegionAsThisUser) {
  const char* socket = std::getenv("BRAID_UDS_HELPER_SOCKET");
  ASSERT_NE(socket, nullptr);
  auto stub = v1::Agent::NewStub(
      grpc::CreateChannel(std::string("unix:") + socket, grpc::InsecureChannelCredentials()));
  const v1::RegionInfo region = Register(*stub, 4096, "helper");
  ASSERT_FALSE(region.path().empty());
  struct stat st {};
  ASSERT_EQ(stat(region.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, getuid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const int fd = open(region.path().c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << strerror(errno);
  void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(m, MAP_FAILED);
  static_cast<uint8_t*>(m)[0] = 0x5A;
  munmap(m, 4096);
  std::printf("region-path=%s\n", region.path().c_str());
}

// A region registered over the Unix socket belongs to the caller's uid: that user maps it, another
// user cannot open it.
TEST(AgentUnixSocket, RegionFilesBelongToTheUnixSocketCaller) {
  ASSERT_EQ(getuid(), 0u) << "this test switches users: it runs as root";
  const std::string dir = "/dev/shm/braid-uds-files-" + std::to_string(getpid());
  std::filesystem::create_directories(dir + "/regions");
  chmod(dir.c_str(), 0755);
  chmod((dir + "/regions").c_str(), 0711);  // others may reach a file they own, not list
  AgentSpec spec{"uds-files", {TestNicIp(0, 0)}, 0};
  spec.region_dir = dir + "/regions";
  spec.security_args = {"--grpc-unix", dir + "/braidd.sock", "--plaintext", "--anonymous-role",
                        "client"};
  auto agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  // As uid 65534 with group 0 (the socket is 0660 root:root).
  char self[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", self, sizeof(self) - 1), 0);
  const std::string helper = "BRAID_UDS_HELPER_SOCKET=" + dir +
                             "/braidd.sock setpriv --reuid=65534 " + "--regid=0 --clear-groups " +
                             self +
                             " --gtest_also_run_disabled_tests "
                             "--gtest_filter=AgentUnixSocketHelper.* 2>&1";
  std::string out;
  FILE* p = popen(helper.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::array<char, 512> line{};
  while (fgets(line.data(), line.size(), p) != nullptr) out += line.data();
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  const size_t at = out.find("region-path=");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string path = out.substr(at + 12, out.find('\n', at) - at - 12);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Another user cannot read it.
  const std::string other =
      "setpriv --reuid=65533 --regid=65533 --clear-groups cat " + path + " > /dev/null 2>&1";
  EXPECT_NE(std::system(other.c_str()), 0) << "uid 65533 read " << path;
  agent.reset();
  std::filesystem::remove_all(dir);
}

// A Unix socket path is taken only from nobody: a second agent started on a path a live agent
// serves on (it used to unlink the live socket, serve, and remove it when it stopped, leaving the
// first agent unreachable) and a path that is a regular file (it was deleted) are refused and left
// as they were; a socket left by a killed agent is replaced.
TEST(AgentUnixSocket, APathSomeoneServesOnOrThatIsNotASocketIsRefusedAndLeftAsItWas) {
  const std::string dir = "/dev/shm/braid-uds-taken-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string socket = dir + "/braidd.sock";
  AgentSpec spec{"uds-taken", {TestNicIp(0, 0)}, 0};
  spec.security_args = {"--grpc-unix", socket, "--plaintext", "--anonymous-role", "admin"};
  auto agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  auto answers = [&] {
    auto stub = v1::Agent::NewStub(
        grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::AgentInfo info;
    return stub->GetInfo(&ctx, {}, &info).ok();
  };
  ASSERT_TRUE(answers());
  // A second agent on other ports and NICs, the same Unix socket path (or a file).
  auto second = [&](const std::string& unix_path) {
    return RunCommand("timeout --preserve-status -s INT 3 " + std::string(BRAID_BRAIDD_PATH) +
                      " --grpc-tcp 127.0.0.1:" + std::to_string(TestPort(2)) +
                      " --plaintext --metrics '' --soft-port " + std::to_string(TestPort(3)) +
                      " --soft-nic soft0=" + TestNicIp(1, 0) + " --region-dir " + dir +
                      " --agent-id second --grpc-unix " + unix_path);
  };
  const CommandResult taken = second(socket);
  EXPECT_NE(taken.exit_code, 0) << taken.output;
  EXPECT_NE(taken.output.find("another process serves on Unix socket '" + socket + "'"),
            std::string::npos)
      << taken.output;
  EXPECT_TRUE(answers()) << "the first agent lost its socket";
  const std::string file = dir + "/not-a-socket";
  std::ofstream(file) << "keep";
  const CommandResult not_socket = second(file);
  EXPECT_NE(not_socket.exit_code, 0) << not_socket.output;
  EXPECT_NE(not_socket.output.find("'" + file + "' exists and is not a socket"), std::string::npos)
      << not_socket.output;
  std::string kept;
  std::ifstream(file) >> kept;
  EXPECT_EQ(kept, "keep");
  // Killed, the agent leaves its socket file; the next one on the path replaces it.
  agent->Kill(SIGKILL);
  agent.reset();
  ASSERT_TRUE(std::filesystem::exists(socket));
  agent = AgentProcess::Spawn(spec);
  ASSERT_TRUE(agent);
  EXPECT_TRUE(answers());
  agent.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace braid::testing
