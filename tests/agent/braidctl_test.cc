// braidctl against two real agents: `copy` of a 2 GiB file gives identical sha256 and shows its
// progress (through a local session's rings: agent A is reached over its Unix socket); an agent
// killed mid-copy gives a clear error within the deadline, never a hang (over gRPC).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/agent/agent_harness.h"
#include "tests/testutil/test_port.h"

namespace braid::testing {
namespace {

CommandResult Braidctl(const std::string& args) {
  return RunCommand(std::string(BRAIDCTL_PATH) + " " + args);
}

class BraidctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/dev/shm/braidctl-test-" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    a_ = AgentProcess::Spawn(
        {"ctl-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, false, {"--grpc-unix", dir_ + "/a.sock"}});
    b_ = AgentProcess::Spawn({"ctl-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
    ASSERT_TRUE(a_ && b_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // `copy` from agent A (over its Unix socket, `local`, or TCP) to agent B.
  std::string Agents(bool local) const {
    const std::string a =
        local ? "unix:" + dir_ + "/a.sock" : "127.0.0.1:" + std::to_string(TestPort(0));
    return "--agent " + a +
           " --timeout-ms 5000 copy --peer 127.0.0.1:" + std::to_string(TestPort(2));
  }
  void MakeFile(const std::string& path, uint64_t size) {
    std::vector<uint8_t> chunk(64 << 20);
    std::ofstream f(path, std::ios::binary);
    for (uint64_t off = 0, i = 0; off < size; off += chunk.size(), ++i) {
      FillPattern(chunk.data(), chunk.size(), 1000 + i);
      f.write(reinterpret_cast<const char*>(chunk.data()),
              static_cast<std::streamsize>(std::min<uint64_t>(chunk.size(), size - off)));
    }
  }

  // The number of VQPs and regions `agent` holds, or -1.
  static int Held(AgentProcess& agent) {
    grpc::ClientContext c1, c2;
    v1::ListVirtualQpsResponse vqps;
    v1::ListRegionsResponse regions;
    const bool ok = agent.stub().ListVirtualQps(&c1, {}, &vqps).ok() &&
                    agent.stub().ListRegions(&c2, {}, &regions).ok();
    return ok ? vqps.vqps_size() + regions.regions_size() : -1;
  }
  // Waits up to 5 s for both agents to hold nothing (they notice a closed connection).
  void ExpectAgentsHoldNothing() {
    int left_a = -1, left_b = -1;
    for (int i = 0; i < 500; ++i) {
      left_a = Held(*a_);
      left_b = Held(*b_);
      if (left_a == 0 && left_b == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(left_a, 0);
    EXPECT_EQ(left_b, 0);
  }
  enum class Target { kBraidctl, kAgentB };
  // Runs braidctl with `args`; once agent B holds a VQP and a region (the transfer is under way,
  // whatever the machine's speed) and `after` more, sends `signo` to `target`. Returns what
  // braidctl printed and its exit status.
  CommandResult RunAndSignalMidway(const std::string& args, Target target, int signo,
                                   std::chrono::milliseconds after) {
    const std::string pid_file = dir_ + "/braidctl.pid";
    std::thread signaller([&] {
      for (int i = 0; i < 2000 && Held(*b_) < 2; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::this_thread::sleep_for(after);
      if (target == Target::kAgentB) {
        b_->Kill(signo);
        return;
      }
      std::ifstream f(pid_file);
      pid_t pid = 0;
      if (f >> pid && pid > 0) kill(pid, signo);
    });
    CommandResult r = RunCommand("sh -c 'echo $$ > " + pid_file + "; exec " +
                                 std::string(BRAIDCTL_PATH) + " " + args + "'");
    signaller.join();
    return r;
  }
  // True when `dst` is shorter than `src` and holds `src`'s first bytes: a partial copy that
  // cannot pass for a whole one by its size.
  static bool IsShorterPrefix(const std::string& src, const std::string& dst) {
    const uint64_t n = std::filesystem::file_size(dst);
    std::printf("%s holds %lu bytes\n", dst.c_str(), static_cast<unsigned long>(n));
    return n < std::filesystem::file_size(src) &&
           RunCommand("cmp -n " + std::to_string(n) + " " + src + " " + dst).exit_code == 0;
  }

  std::unique_ptr<AgentProcess> a_, b_;
  std::string dir_;
};

TEST_F(BraidctlTest, CopiesTwoGiBWithIdenticalSha256AndShowsProgress) {
  const std::string src = dir_ + "/src.bin", dst = dir_ + "/dst.bin";
  MakeFile(src, 2ull << 30);
  CommandResult r = Braidctl(Agents(true) + " " + src + " " + dst);
  std::printf("%s", r.output.c_str());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ring path"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("copy ["), std::string::npos);  // the progress line
  EXPECT_NE(r.output.find("100.0%"), std::string::npos);
  EXPECT_NE(r.output.find("\nidentical\n"), std::string::npos);
  EXPECT_EQ(std::filesystem::file_size(dst), 2ull << 30);
  // Independent check of the two files' digests (sha256sum, not braidctl's own).
  auto digest = [](const std::string& path) {
    return RunCommand("sha256sum " + path).output.substr(0, 64);
  };
  const std::string hs = digest(src);
  EXPECT_EQ(hs.size(), 64u);
  EXPECT_EQ(hs, digest(dst));
  EXPECT_NE(r.output.find("sha256 " + hs), std::string::npos);
}

TEST_F(BraidctlTest, AnAgentKilledMidCopyIsAClearErrorWithinTheDeadline) {
  const std::string src = dir_ + "/src.bin", dst = dir_ + "/dst.bin";
  MakeFile(src, 2ull << 30);
  // The destination's agent, 200 ms into the copy.
  const CommandResult r = RunAndSignalMidway(Agents(false) + " " + src + " " + dst, Target::kAgentB,
                                             SIGKILL, std::chrono::milliseconds(200));
  std::printf("%s", r.output.c_str());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("braidctl: copy failed near offset"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 5.0 + 10.0);  // the 5 s deadline plus the copy's own time, never a hang
  // The output was cut to what arrived (it was sized for the whole file up front), or removed
  // when nothing had.
  EXPECT_TRUE(!std::filesystem::exists(dst) || IsShorterPrefix(src, dst)) << r.output;
}

// Ctrl-C (or SIGTERM) mid-copy stops it: the output, an older whole-size file overwritten in
// place, is cut to the prefix that arrived instead of keeping the full size with stale bytes
// past it, the exit status says which signal, and the agents are left holding nothing.
TEST_F(BraidctlTest, ACopyStoppedBySigintCutsItsOutputToWhatArrived) {
  const std::string src = dir_ + "/src.bin", dst = dir_ + "/dst.bin";
  MakeFile(src, 2ull << 30);
  std::filesystem::copy_file(src, dst);
  RunCommand("dd if=/dev/zero of=" + dst + " bs=1M count=2048 conv=notrunc status=none");
  const CommandResult r =
      RunAndSignalMidway(Agents(true) + " " + src + " " + dst, Target::kBraidctl, SIGINT,
                         std::chrono::milliseconds(100));
  std::printf("%s", r.output.c_str());
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.output;
  EXPECT_NE(r.output.find("src.bin interrupted by Interrupt; "), std::string::npos) << r.output;
  EXPECT_TRUE(r.output.find("dst.bin cut to the first") != std::string::npos ||
              r.output.find("dst.bin emptied") != std::string::npos)
      << r.output;
  EXPECT_TRUE(IsShorterPrefix(src, dst));
  ExpectAgentsHoldNothing();
}

// A copy asks each agent for staging regions about the size of its file, not a fixed 128 MiB: with
// agents whose regions may hold 8 MiB (as a container's 64 MiB /dev/shm shared with others, or an
// operator's limit, allows) small files and an empty one still copy.
TEST_F(BraidctlTest, ASmallFileCopiesThroughAgentsThatAllowOnlySmallRegions) {
  const std::string config = dir_ + "/small-regions.yaml";
  { std::ofstream(config) << "max_region_bytes: 8388608\n"; }
  a_.reset();
  b_.reset();
  a_ = AgentProcess::Spawn({"ctl-a",
                            {TestNicIp(0, 0)},
                            0,
                            false,
                            {"--grpc-unix", dir_ + "/a.sock", "--config", config}});
  b_ = AgentProcess::Spawn({"ctl-b", {TestNicIp(1, 0)}, 2, false, {"--config", config}});
  ASSERT_TRUE(a_ && b_);
  for (const uint64_t size : {uint64_t{5} << 20, uint64_t{12345}, uint64_t{0}}) {
    const std::string src = dir_ + "/small.bin", dst = dir_ + "/small-copy.bin";
    MakeFile(src, size);
    const CommandResult r = Braidctl("-q " + Agents(true) + " " + src + " " + dst);
    EXPECT_EQ(r.exit_code, 0) << size << " bytes: " << r.output;
    EXPECT_NE(r.output.find("\nidentical\n"), std::string::npos) << r.output;
    ASSERT_TRUE(std::filesystem::exists(dst)) << r.output;
    EXPECT_EQ(std::filesystem::file_size(dst), size);
    EXPECT_EQ(RunCommand("cmp " + src + " " + dst).exit_code, 0);
  }
  ExpectAgentsHoldNothing();
}

// An output file system that fills up mid-copy is named as the reason (braidctl said "short write
// to the output file": the first write past the room is short, and only the next says why), the
// exit status is 1, and what arrived is kept as a prefix.
TEST_F(BraidctlTest, AnOutputFileSystemThatFillsUpIsNamedAsTheReasonAndAPrefixKept) {
  ASSERT_EQ(getuid(), 0u) << "this test mounts a small tmpfs: it runs as root";
  const std::string small = dir_ + "/small-fs";
  std::filesystem::create_directories(small);
  ASSERT_EQ(mount("none", small.c_str(), "tmpfs", 0, "size=8m"), 0) << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  const std::string src = dir_ + "/src.bin", dst = small + "/dst.bin";
  MakeFile(src, 20 << 20);
  const CommandResult r = Braidctl("-q " + Agents(true) + " " + src + " " + dst);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write the output file: No space left on device"), std::string::npos)
      << r.output;
  EXPECT_TRUE(IsShorterPrefix(src, dst)) << r.output;
  ExpectAgentsHoldNothing();
}

// A copy that cannot start (its peer is gone) creates no output file and leaves an existing one
// as it was: the output used to be created and sized before the agents were reached.
TEST_F(BraidctlTest, ACopyThatCannotStartLeavesTheOutputUntouched) {
  const std::string src = dir_ + "/src.bin", dst = dir_ + "/dst.bin";
  MakeFile(src, 64 << 20);
  b_->Kill(SIGKILL);
  CommandResult r = Braidctl(Agents(true) + " " + src + " " + dst);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dst)) << r.output;
  { std::ofstream(dst) << "older"; }
  r = Braidctl(Agents(true) + " " + src + " " + dst);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(std::filesystem::file_size(dst), 5u) << r.output;
}

// A bench killed mid-run leaves nothing behind on either agent: what braidctl bench and copy create
// lives on a lease (their VQPs and 256 MiB regions stayed until destroyed by hand).
TEST_F(BraidctlTest, ABenchKilledMidRunLeavesNoVqpOrRegionBehind) {
  const CommandResult r = RunAndSignalMidway(
      " -q --agent unix:" + dir_ + "/a.sock bench --peer 127.0.0.1:" + std::to_string(TestPort(2)) +
          " --size 4K --total 1T",
      Target::kBraidctl, SIGKILL, std::chrono::milliseconds(100));
  EXPECT_NE(r.exit_code, 0) << r.output;  // killed, not finished
  ExpectAgentsHoldNothing();
}

// Arguments braidctl cannot use are refused by name before anything is created or moved: a size
// of 0 and one that overflowed ended in SIGFPE, "1x" was read as one byte (a gibibyte of 1-byte
// writes), an unknown scheme ran as SPRAY, a negative count wrapped, and `copy` of a directory left
// a 4 KiB file behind while /dev/zero never ended.
TEST_F(BraidctlTest, ArgumentsItCannotUseAreRefusedByNameBeforeAnythingMoves) {
  const std::string bench = "--agent 127.0.0.1:" + std::to_string(TestPort(0)) +
                            " bench --peer 127.0.0.1:" + std::to_string(TestPort(2)) + " ";
  const std::pair<const char*, const char*> kRefused[] = {
      {"--size 0", "--size: '0' is below 1"},
      {"--size 99999999999G", "'99999999999G' is not a byte count"},
      {"--size 1x", "'1x' is not a byte count"},
      {"--total -1", "'-1' is not a byte count"},
      {"--scheme foo", "foo not in {spray,dqplb}"},
      {"--qps -1", "--qps: '-1' is not a whole number"},
  };
  for (const auto& [args, why] : kRefused) {
    const CommandResult r = Braidctl(bench + args);
    EXPECT_TRUE(r.exit_code > 0 && r.exit_code < 128) << args << ": " << r.output;
    EXPECT_NE(r.output.find(why), std::string::npos) << args << ": " << r.output;
  }
  // "-1" was taken as 2^64 - 1.
  const CommandResult destroy = Braidctl("--agent unix:" + dir_ + "/a.sock destroy -1");
  EXPECT_NE(destroy.output.find("vqp: '-1' is not a whole number"), std::string::npos)
      << destroy.output;
  for (const std::string& src : {dir_, std::string("/dev/zero")}) {
    const std::string dst = dir_ + "/copied";
    const CommandResult r = Braidctl(Agents(false) + " " + src + " " + dst);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("not a regular file"), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(dst)) << src;
  }
  // A /proc file says it is empty and is not: it copied 0 bytes and then said MISMATCH.
  {
    const std::string dst = dir_ + "/copied";
    const CommandResult r = Braidctl(Agents(false) + " /proc/self/status " + dst);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("its size reads as 0 but it has content"), std::string::npos)
        << r.output;
    EXPECT_FALSE(std::filesystem::exists(dst));
  }
  // A file onto itself, by its path or a link: a failure mid-way would have cut the source.
  const std::string self = dir_ + "/self.bin", link = dir_ + "/self-link.bin";
  MakeFile(self, 1 << 20);
  std::filesystem::create_hard_link(self, link);
  for (const std::string& dst : {self, link}) {
    const CommandResult r = Braidctl(Agents(false) + " " + self + " " + dst);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("are the same file"), std::string::npos) << r.output;
    EXPECT_EQ(std::filesystem::file_size(self), 1u << 20);
  }
  // /dev/null as a sink: nothing to compare, which is not a mismatch (it said MISMATCH, status 1).
  const CommandResult sink = Braidctl(Agents(false) + " " + self + " /dev/null");
  EXPECT_EQ(sink.exit_code, 0) << sink.output;
  EXPECT_NE(sink.output.find("not compared: the destination is not a regular file"),
            std::string::npos)
      << sink.output;
  // What it can use still runs: a fractional size, verified.
  const CommandResult ok = Braidctl(bench + "--size 1.5K --total 3M --scheme dqplb --verify");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("moved 3.00 MiB"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("byte-for-byte identical"), std::string::npos) << ok.output;
}

// An operation size that does not divide the region leaves the region's tail unwritten: --verify
// compared it too and said DIFFERS (exit 1) of a transfer that was right.
TEST_F(BraidctlTest, BenchVerifiesTheBytesItWroteWhenTheOpSizeDoesNotDivideTheRegion) {
  const std::string bench = "--agent 127.0.0.1:" + std::to_string(TestPort(0)) +
                            " bench --peer 127.0.0.1:" + std::to_string(TestPort(2)) + " ";
  for (const char* scheme : {"spray", "dqplb"}) {
    const CommandResult r =
        Braidctl(bench + "--size 4097 --total 10M --verify --scheme " + std::string(scheme));
    EXPECT_EQ(r.exit_code, 0) << scheme << ": " << r.output;
    // 2,559 whole slots of 4,097 bytes; the 2,560th operation wrote slot 0's first 1,537 again.
    EXPECT_NE(r.output.find("the 10484223 bytes written to the destination region are "
                            "byte-for-byte identical"),
              std::string::npos)
        << scheme << ": " << r.output;
  }
}

// An agent address that cannot work is refused at once, saying why: each of these waited out the
// connect timeout and said only "Deadline Exceeded" (an empty one printed gRPC's complaints).
TEST_F(BraidctlTest, AnAgentAddressThatCannotWorkIsRefusedAtOnceSayingWhy) {
  const std::pair<std::string, const char*> kRefused[] = {
      {"unix:" + dir_ + "/none.sock", "no Unix socket at '"},
      {"unix:" + dir_, "is not a socket"},
      {"127.0.0.1:99999", "the port must be 1 to 65535"},
      {"127.0.0.1", "is not host:port"},
      {"''", "no agent address"},
      {"::1:7600", "put an IPv6 address in brackets"},
      {"http://127.0.0.1:7600", "is a URL: give host:port"},
  };
  for (const auto& [agent, why] : kRefused) {
    const CommandResult r = Braidctl("--agent " + agent + " info");
    EXPECT_EQ(r.exit_code, 1) << agent << ": " << r.output;
    EXPECT_NE(r.output.find(why), std::string::npos) << agent << ": " << r.output;
    EXPECT_EQ(r.output.find("Deadline Exceeded"), std::string::npos) << agent << ": " << r.output;
  }
  // A well-formed address nothing serves on: the wait, and what to look at.
  const CommandResult r = Braidctl("--agent 127.0.0.1:1 info");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("did not answer within 5000 ms: is it running and serving this address"),
            std::string::npos)
      << r.output;
  // What works still does.
  EXPECT_EQ(Braidctl("--agent unix:" + dir_ + "/a.sock info").exit_code, 0);
}

// What other clients chose (a VQP's label, the control endpoint in the card behind an event's
// cause) is printed with its control characters escaped: an escape sequence in it drove the
// operator's terminal (here: clear the screen), and a newline forged a line of output.
// Device states read as words (they printed DEVICE_STATE_HEALTHY), through a drain and back.
TEST_F(BraidctlTest, DevicesAndDrainSayEachDevicesStateInWords) {
  const std::string agent = "--agent unix:" + dir_ + "/a.sock ";
  auto line_of = [](const std::string& out, const std::string& device) {
    const size_t at = out.find(device + " ");
    return at == std::string::npos ? std::string() : out.substr(at, out.find('\n', at) - at);
  };
  CommandResult r = Braidctl(agent + "devices");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(line_of(r.output, "soft0").find(" healthy "), std::string::npos) << r.output;
  EXPECT_NE(line_of(r.output, "soft1").find(" healthy "), std::string::npos) << r.output;
  r = Braidctl(agent + "drain soft1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "soft1: drained\n");
  r = Braidctl(agent + "devices");
  EXPECT_NE(line_of(r.output, "soft1").find(" drained "), std::string::npos) << r.output;
  r = Braidctl(agent + "undrain soft1");
  EXPECT_EQ(r.output, "soft1: healthy\n");
}

// `health` is readiness; `health --liveness` is what a liveness probe asks: with every device
// drained the agent takes no new work but is alive (a probe restarting it would destroy its VQPs).
TEST_F(BraidctlTest, HealthTellsAnAgentThatTakesNoWorkFromOneThatIsDead) {
  const std::string agent = "--agent unix:" + dir_ + "/a.sock ";
  ASSERT_EQ(Braidctl(agent + "drain soft0").exit_code, 0);
  ASSERT_EQ(Braidctl(agent + "drain soft1").exit_code, 0);
  CommandResult ready = Braidctl(agent + "health");
  for (int i = 0; i < 40 && ready.exit_code == 0; ++i) {  // the agent checks twice a second
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ready = Braidctl(agent + "health");
  }
  EXPECT_EQ(ready.exit_code, 1) << ready.output;
  EXPECT_EQ(ready.output, "NOT_SERVING\n");
  const CommandResult live = Braidctl(agent + "health --liveness");
  EXPECT_EQ(live.exit_code, 0) << live.output;
  EXPECT_EQ(live.output, "SERVING\n");
  ASSERT_EQ(Braidctl(agent + "undrain soft0").exit_code, 0);
  ASSERT_EQ(Braidctl(agent + "undrain soft1").exit_code, 0);
}

// An operator sees what memory is registered (size, grants, transfers in flight), a label a client
// chose escaped, and gives a region back by its id.
TEST_F(BraidctlTest, RegionsShowsWhatIsRegisteredAndDeregisterGivesARegionBack) {
  auto register_memory = [&](uint64_t length, const std::string& label) {
    grpc::ClientContext ctx;
    v1::RegisterMemoryRequest request;
    request.set_length(length);
    request.set_label(label);
    v1::RegionInfo out;
    EXPECT_TRUE(a_->stub().RegisterMemory(&ctx, request, &out).ok());
    return std::to_string(out.region_id());
  };
  const std::string staging = register_memory(4096, "staging");
  const std::string hostile = register_memory(1 << 20, "x\x1b[2J\nregion 999 forged");
  const std::string agent = "--agent unix:" + dir_ + "/a.sock ";
  CommandResult r = Braidctl(agent + "regions");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("region " + staging + " "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("staging        4.00 KiB granted to 0 VQPs, 0 transfers in flight\n"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("x\\x1b[2J\\nregion 999 forged   1.00 MiB"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << "a raw escape: " << r.output;

  r = Braidctl(agent + "deregister " + staging);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Braidctl(agent + "regions");
  EXPECT_EQ(r.output.find("region " + staging + " "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("region " + hostile + " "), std::string::npos) << r.output;
  r = Braidctl(agent + "deregister " + staging);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(
      r.output.find("braidctl: deregister: NotFound: no region " + staging + " on agent ctl-a"),
      std::string::npos)
      << r.output;
  r = Braidctl(agent + "--json regions");
  EXPECT_NE(r.output.find("\"region_id\": \"" + hostile + "\""), std::string::npos) << r.output;
}

// `events --json` writes one JSON object per line (JSON Lines), as line-oriented tools and log
// shippers read a stream; an indented object spread over many lines broke them.
TEST_F(BraidctlTest, EventsInJsonAreOneObjectPerLine) {
  const std::string agent = "--agent unix:" + dir_ + "/a.sock ";
  CommandResult events;
  std::thread watcher([&] { events = Braidctl(agent + "--json events --count 2 --seconds 20"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // subscribed
  v1::VirtualQpInfo mine = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 1);
  v1::VirtualQpInfo theirs = CreateVqp(b_->stub(), v1::SCHEME_SPRAY, 1);
  ConnectOne(a_->stub(), mine, theirs);
  grpc::ClientContext ctx;
  v1::DestroyVirtualQpRequest destroy;
  destroy.set_vqp_id(mine.vqp_id());
  v1::DestroyVirtualQpResponse destroyed;
  ASSERT_TRUE(a_->stub().DestroyVirtualQp(&ctx, destroy, &destroyed).ok());
  watcher.join();
  EXPECT_EQ(events.exit_code, 0) << events.output;
  std::vector<std::string> kinds;
  std::istringstream lines(events.output);
  for (std::string line; std::getline(lines, line);) {
    if (line == "braidctl events: subscribed") continue;  // on stderr
    const auto e = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(e.is_object()) << "not one object on a line: " << line;
    EXPECT_EQ(e["vqp_id"], std::to_string(mine.vqp_id())) << line;
    kinds.push_back(e["kind"]);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"vqp_connected", "vqp_destroyed"})) << events.output;
}

TEST_F(BraidctlTest, TextOtherClientsChoseCannotDriveTheOperatorsTerminal) {
  const std::string hostile = "x\x1b[2J\nvqp 999 forged";
  grpc::ClientContext ctx;
  v1::CreateVirtualQpRequest request;
  request.set_scheme(v1::SCHEME_SPRAY);
  request.set_num_qps(1);
  request.set_label(hostile);
  v1::VirtualQpInfo mine;
  ASSERT_TRUE(a_->stub().CreateVirtualQp(&ctx, request, &mine).ok());
  const std::string agent = "--agent unix:" + dir_ + "/a.sock ";
  const CommandResult list = Braidctl(agent + "list");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("x\\x1b[2J\\nvqp 999 forged"), std::string::npos) << list.output;
  // An event whose cause carries the peer card's control endpoint.
  CommandResult events;
  std::thread watcher([&] { events = Braidctl(agent + "events --count 1 --seconds 20"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // subscribed
  v1::VirtualQpInfo theirs = CreateVqp(b_->stub(), v1::SCHEME_SPRAY, 1);
  theirs.mutable_card()->set_control_endpoint(hostile);
  ConnectOne(a_->stub(), mine, theirs);
  watcher.join();
  EXPECT_EQ(events.exit_code, 0) << events.output;
  EXPECT_NE(events.output.find("of x\\x1b[2J\\nvqp 999 forged"), std::string::npos)
      << events.output;
  for (const CommandResult* r : {&list, const_cast<const CommandResult*>(&events)}) {
    EXPECT_EQ(r->output.find('\x1b'), std::string::npos) << "a raw escape: " << r->output;
    EXPECT_EQ(r->output.find("\nvqp 999"), std::string::npos) << "a forged line: " << r->output;
  }
}

}  // namespace
}  // namespace braid::testing
