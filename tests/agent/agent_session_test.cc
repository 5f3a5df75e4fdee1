// The local data path through a real agent: a client opens a session on braidd's session socket,
// registers its own memfd (RegisterFd), binds the peer's region over gRPC, and moves bytes through
// the rings; what the peer agent holds is compared with what the client wrote into its own
// mapping. A client killed mid-stream is reclaimed (its session ends, its region is deregistered
// once nothing of it is in flight, the agent's descriptors come back) while another client keeps
// moving verified bytes. Garbage on the session socket closes that connection only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/session_client.h"
#include "dataplane/session/session_wire.h"
#include "tests/agent/agent_harness.h"

namespace braid::testing {
namespace {

constexpr uint64_t kBytes = 16 * kMiB;

// A memfd of `bytes`, sealed against shrinking, mapped; the pattern of `seed` written into it.
struct ClientMemory {
  explicit ClientMemory(uint64_t seed, uint64_t size = kBytes) : bytes(size) {
    fd = memfd_create("braid-test-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
      return;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return;
    data = static_cast<uint8_t*>(p);
    FillPattern(data, bytes, seed);
  }
  ~ClientMemory() {
    if (data != nullptr) munmap(data, bytes);
    if (fd >= 0) close(fd);
  }
  uint64_t bytes;
  int fd = -1;
  uint8_t* data = nullptr;
};

uint32_t Bind(v1::Agent::Stub& stub, uint64_t session, uint64_t vqp,
              const v1::RemoteRegion& remote) {
  grpc::ClientContext ctx;
  v1::BindRemoteRequest request;
  request.set_session_id(session);
  request.set_vqp_id(vqp);
  *request.mutable_remote() = remote;
  v1::BindRemoteResponse response;
  const grpc::Status s = stub.BindRemote(&ctx, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response.handle();
}

// `count` 1 MiB operations `op` between `region` and the bound handle, offsets i MiB (mod kBytes);
// how many completed successfully.
int MoveMiBs(session::SessionClient& client, uint64_t vqp, uint64_t region, uint32_t handle,
             int count, session::RingOp op = session::RingOp::kWrite) {
  std::vector<session::SubmitEntry> entries;
  for (int i = 0; i < count; ++i) {
    session::SubmitEntry e{};
    e.user_data = static_cast<uint64_t>(i);
    e.vqp_id = vqp;
    e.local_region = static_cast<uint32_t>(region);
    e.remote_region = handle;
    e.local_offset = e.remote_offset = (static_cast<uint64_t>(i) * kMiB) % kBytes;
    e.length = kMiB;
    e.op = static_cast<uint8_t>(op);
    entries.push_back(e);
  }
  std::vector<session::CompletionEntry> out(64);
  size_t submitted = 0;
  int ok = 0, done = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (done < count && std::chrono::steady_clock::now() < give_up) {
    if (submitted < entries.size()) {
      submitted += client.Submit({entries.data() + submitted, entries.size() - submitted});
    }
    const uint32_t n = client.Reap(out);
    for (uint32_t i = 0; i < n; ++i) ok += out[i].status == 0 ? 1 : 0;
    done += static_cast<int>(n);
    if (n == 0) client.Wait(5);
  }
  return ok;
}

bool RegionListed(v1::Agent::Stub& stub, uint64_t region) {
  grpc::ClientContext ctx;
  v1::ListRegionsResponse out;
  EXPECT_TRUE(stub.ListRegions(&ctx, v1::ListRegionsRequest(), &out).ok());
  for (const auto& r : out.regions()) {
    if (r.region_id() == region) return true;
  }
  return false;
}

// A connection to the session socket that speaks no protocol by itself (-1 on failure).
int RawConnect(const std::string& path) {
  const int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(s);
    return -1;
  }
  return s;
}

class AgentSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_);
    AgentSpec a{"session-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0};
    a.extra_args = {"--grpc-unix", dir_ + "/braidd.sock"};
    a_ = AgentProcess::Spawn(a);
    b_ = AgentProcess::Spawn({"session-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2});
    ASSERT_TRUE(a_ && b_);
    va_ = CreateVqp(a_->stub(), v1::SCHEME_SPRAY, 8);
    vb_ = CreateVqp(b_->stub(), v1::SCHEME_SPRAY, 8);
    ConnectPair(a_->stub(), va_, b_->stub(), vb_);
    dst_ = Register(b_->stub(), kBytes, "dst", {vb_.vqp_id()});
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string socket() const { return dir_ + "/braidd.sock.session"; }

  std::string dir_ = "/tmp/braid-session-test-" + std::to_string(getpid());
  std::unique_ptr<AgentProcess> a_, b_;
  v1::VirtualQpInfo va_, vb_;
  v1::RegionInfo dst_;
};

TEST_F(AgentSessionTest, AClientsOwnMemoryMovesThroughTheRingsWithNoCopy) {
  ClientMemory mem(7);
  ASSERT_NE(mem.data, nullptr);
  auto client = session::SessionClient::Connect(socket(), {256, 256, 64});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const uint64_t vqp = va_.vqp_id();
  auto region = (*client)->RegisterFd(mem.fd, 0, kBytes, {&vqp, 1}, "client");
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  const uint32_t handle = Bind(a_->stub(), (*client)->id(), vqp, GrantOf(dst_));
  MappedRegion peer(dst_.path(), kBytes);
  ASSERT_EQ(MoveMiBs(**client, vqp, *region, handle, 16), 16);
  EXPECT_EQ(std::memcmp(peer.data(), mem.data, kBytes), 0);
  // Written into the client's own mapping after registering: the agent reads it where it lies.
  FillPattern(mem.data, kBytes, 8);
  ASSERT_EQ(MoveMiBs(**client, vqp, *region, handle, 16), 16);
  EXPECT_EQ(std::memcmp(peer.data(), mem.data, kBytes), 0);
  // A file not in shared memory is refused with the reason.
  const int on_disk = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(on_disk, 0);
  auto refused = (*client)->RegisterFd(on_disk, 0, 1, {});
  close(on_disk);
  EXPECT_EQ(refused.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(refused.status().message()).find("/dev/shm"), std::string::npos)
      << refused.status().ToString();
  // A label longer than the session request carries is refused; it was cut to 63 bytes silently.
  auto long_label = (*client)->RegisterFd(mem.fd, 0, kBytes, {}, std::string(64, 'l'));
  EXPECT_EQ(long_label.status().code(), common::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(long_label.status().message()).find("at most 63 bytes"), std::string::npos)
      << long_label.status().ToString();
  auto full_label = (*client)->RegisterFd(mem.fd, 0, kBytes, {}, std::string(63, 'f'));
  ASSERT_TRUE(full_label.ok()) << full_label.status().ToString();
  grpc::ClientContext ctx;
  v1::ListRegionsResponse regions;
  ASSERT_TRUE(a_->stub().ListRegions(&ctx, {}, &regions).ok());
  int whole = 0;
  for (const auto& r : regions.regions()) whole += r.label() == std::string(63, 'f');
  EXPECT_EQ(whole, 1);
}

// A file in /dev/shm cannot be sealed: its owner may cut it short while the agent maps it.
TEST_F(AgentSessionTest, AFileInDevShmMovesWhereItLiesAndCuttingItShortHarmsOnlyItsOwner) {
  const std::string path = "/dev/shm/braid-session-test-" + std::to_string(getpid()) + "-file";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  unlink(path.c_str());
  ASSERT_EQ(ftruncate(fd, kBytes), 0);
  void* mapped = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  auto* data = static_cast<uint8_t*>(mapped);
  FillPattern(data, kBytes, 21);
  auto client = session::SessionClient::Connect(socket(), {256, 256, 64});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const uint64_t vqp = va_.vqp_id();
  auto region = (*client)->RegisterFd(fd, 0, kBytes, {&vqp, 1}, "dev-shm");
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  const uint32_t handle = Bind(a_->stub(), (*client)->id(), vqp, GrantOf(dst_));
  MappedRegion peer(dst_.path(), kBytes);
  ASSERT_EQ(MoveMiBs(**client, vqp, *region, handle, 16), 16);
  EXPECT_EQ(std::memcmp(peer.data(), data, kBytes), 0);
  FillPattern(peer.data(), kBytes, 22);  // and back, straight into the file
  ASSERT_EQ(MoveMiBs(**client, vqp, *region, handle, 16, session::RingOp::kRead), 16);
  EXPECT_EQ(std::memcmp(peer.data(), data, kBytes), 0);

  // Its owner cuts the file short: the transfers on it fail, and the agent lives on.
  munmap(mapped, kBytes);
  ASSERT_EQ(ftruncate(fd, 0), 0);
  EXPECT_EQ(MoveMiBs(**client, vqp, *region, handle, 16, session::RingOp::kRead), 0);
  EXPECT_EQ(MoveMiBs(**client, vqp, *region, handle, 16), 0);
  close(fd);
  // Another client's memory still moves, through the same QPs.
  ClientMemory mem(23);
  ASSERT_NE(mem.data, nullptr);
  auto other = session::SessionClient::Connect(socket(), {256, 256, 64});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto kept = (*other)->RegisterFd(mem.fd, 0, kBytes, {&vqp, 1}, "intact");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  const uint32_t other_handle = Bind(a_->stub(), (*other)->id(), vqp, GrantOf(dst_));
  ASSERT_EQ(MoveMiBs(**other, vqp, *kept, other_handle, 16), 16);
  EXPECT_EQ(std::memcmp(peer.data(), mem.data, kBytes), 0);
  EXPECT_TRUE(RegionListed(a_->stub(), *region)) << "the agent still answers";
}

// The agent's own region file is handed to its client, who may open it read-write and cut it short.
TEST_F(AgentSessionTest, ARegionFileCutShortByItsClientFailsOnlyItsOwnTransfers) {
  const v1::RegionInfo victim = Register(a_->stub(), kBytes, "victim");
  const v1::RegionInfo intact = Register(a_->stub(), kBytes, "intact");
  ASSERT_EQ(truncate(victim.path().c_str(), 0), 0);
  const uint64_t vqp = va_.vqp_id();
  const TransferRun cut =
      RunTransfers(a_->stub(), Transfers(v1::OP_WRITE, vqp, victim, dst_, kMiB, 16, 16));
  ASSERT_TRUE(cut.status.ok()) << cut.status.error_message();
  ASSERT_EQ(cut.completions.size(), 16u);
  for (const auto& c : cut.completions) EXPECT_NE(c.code(), 0) << c.message();
  // The agent lives on, and another region of the same client moves its bytes.
  MappedRegion mine(intact.path(), kBytes), peer(dst_.path(), kBytes);
  FillPattern(mine.data(), kBytes, 31);
  const TransferRun ok =
      RunTransfers(a_->stub(), Transfers(v1::OP_WRITE, vqp, intact, dst_, kMiB, 16, 16));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_EQ(ok.completions.size(), 16u);
  for (const auto& c : ok.completions) EXPECT_EQ(c.code(), 0) << c.message();
  EXPECT_EQ(std::memcmp(peer.data(), mine.data(), kBytes), 0);
  EXPECT_TRUE(RegionListed(a_->stub(), victim.region_id()));
}

TEST_F(AgentSessionTest, AKilledClientIsReclaimedWhileAnotherKeepsMovingBytes) {
  const size_t fds_before = SteadyOpenFds(a_->pid());
  int to_child[2], from_child[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(from_child), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The client to kill: connects, registers, then writes until it is killed.
    close(to_child[1]);
    close(from_child[0]);
    ClientMemory mem(3);
    auto c = session::SessionClient::Connect(socket(), {64, 64, 64});
    if (!c.ok() || mem.data == nullptr) _exit(2);
    const uint64_t vqp = va_.vqp_id();
    auto region = (*c)->RegisterFd(mem.fd, 0, kBytes, {&vqp, 1});
    if (!region.ok()) _exit(3);
    const uint64_t ids[2] = {(*c)->id(), *region};
    if (write(from_child[1], ids, sizeof(ids)) != sizeof(ids)) _exit(4);
    uint32_t handle = 0;
    if (read(to_child[0], &handle, sizeof(handle)) != sizeof(handle)) _exit(5);
    for (int round = 0;; ++round) {
      MoveMiBs(**c, vqp, *region, handle, 64);
      if (round == 0 && write(from_child[1], "r", 1) != 1) _exit(6);
    }
  }
  close(to_child[0]);
  close(from_child[1]);
  uint64_t ids[2] = {};
  ASSERT_EQ(read(from_child[0], ids, sizeof(ids)), static_cast<ssize_t>(sizeof(ids)));
  const uint32_t child_handle = Bind(a_->stub(), ids[0], va_.vqp_id(), GrantOf(dst_));
  ASSERT_EQ(write(to_child[1], &child_handle, sizeof(child_handle)), 4);
  char running = 0;
  ASSERT_EQ(read(from_child[0], &running, 1), 1);  // a round done: it is mid-stream
  EXPECT_TRUE(RegionListed(a_->stub(), ids[1]));
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  close(to_child[1]);
  close(from_child[0]);
  // Reclaimed: its region goes once nothing of it is in flight.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (RegionListed(a_->stub(), ids[1]) && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(RegionListed(a_->stub(), ids[1]));
  // Another client is served as before.
  {
    ClientMemory mem(11);
    ASSERT_NE(mem.data, nullptr);
    auto client = session::SessionClient::Connect(socket(), {64, 64, 64});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    const uint64_t vqp = va_.vqp_id();
    auto region = (*client)->RegisterFd(mem.fd, 0, kBytes, {&vqp, 1});
    ASSERT_TRUE(region.ok()) << region.status().ToString();
    const uint32_t handle = Bind(a_->stub(), (*client)->id(), vqp, GrantOf(dst_));
    MappedRegion peer(dst_.path(), kBytes);
    ASSERT_EQ(MoveMiBs(**client, vqp, *region, handle, 16), 16);
    EXPECT_EQ(std::memcmp(peer.data(), mem.data, kBytes), 0);
  }
  // Everything of both sessions given back (the second one's region after its close).
  size_t fds_after = 0;
  const auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    fds_after = OpenFds(a_->pid());
  } while (fds_after != fds_before && std::chrono::steady_clock::now() < settle);
  EXPECT_EQ(fds_after, fds_before);
}

// One session of the churn below, of kind `cycle % 4`: a clean one (four verified writes), one
// whose client goes away with sixteen writes in flight and none reaped, one that only watches its
// VQP, and one that registers its memory and leaves at once. Each of the four `lane`s writes its
// own quarter of `dst`.
void SessionCycle(const std::string& socket, v1::Agent::Stub& stub, uint64_t vqp,
                  const v1::RegionInfo& dst, uint8_t* peer, int lane, int cycle) {
  constexpr uint64_t kSize = kMiB;
  ClientMemory mem(static_cast<uint64_t>(cycle) + 100, kSize);
  ASSERT_NE(mem.data, nullptr);
  auto client = session::SessionClient::Connect(socket, {64, 64, 64});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  session::SessionClient& c = **client;
  if (cycle % 4 == 2) {
    const session::SubmitEntry watch = session::SessionClient::Watch(vqp, 1);
    ASSERT_EQ(c.Submit({&watch, 1}), 1u);
    session::CompletionEntry done{};
    for (int i = 0; i < 1000 && c.Reap({&done, 1}) == 0; ++i) c.Wait(5);
    EXPECT_EQ(done.user_data, 1u);
    EXPECT_EQ(done.status, 0);
    return;
  }
  auto region = c.RegisterFd(mem.fd, 0, kSize, {&vqp, 1}, "churn");
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  if (cycle % 4 == 3) return;
  const uint32_t handle = Bind(stub, c.id(), vqp, GrantOf(dst));
  constexpr uint64_t kSlotsPerLane = kBytes / kSize / 4;
  const uint64_t slot = (static_cast<uint64_t>(lane) * kSlotsPerLane +
                         static_cast<uint64_t>(cycle / 4) % kSlotsPerLane) *
                        kSize;
  const int count = cycle % 4 == 0 ? 4 : 16;
  std::vector<session::SubmitEntry> writes(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    session::SubmitEntry& e = writes[static_cast<size_t>(i)];
    e = {};
    e.user_data = static_cast<uint64_t>(i);
    e.vqp_id = vqp;
    e.local_region = static_cast<uint32_t>(*region);
    e.remote_region = handle;
    e.length = kSize / static_cast<uint64_t>(count);
    e.local_offset = static_cast<uint64_t>(i) * e.length;
    e.remote_offset = slot + e.local_offset;
    e.op = static_cast<uint8_t>(session::RingOp::kWrite);
  }
  ASSERT_EQ(c.Submit(writes), static_cast<uint32_t>(count));
  if (cycle % 4 == 1) return;  // gone with its writes in flight
  std::vector<session::CompletionEntry> out(64);
  int ok = 0, done = 0;
  for (int i = 0; i < 2000 && done < count; ++i) {
    const uint32_t n = c.Reap(out);
    for (uint32_t k = 0; k < n; ++k) ok += out[k].status == 0 ? 1 : 0;
    done += static_cast<int>(n);
    if (n == 0) c.Wait(5);
  }
  EXPECT_EQ(ok, count);
  EXPECT_EQ(std::memcmp(peer + slot, mem.data, kSize), 0) << "cycle " << cycle;
}

struct SessionHoldings {
  size_t fds = 0, threads = 0, mappings = 0, regions = 0;
  uint64_t rss_kib = 0;
};

SessionHoldings SessionHoldingsOf(AgentProcess& agent) {
  grpc::ClientContext ctx;
  v1::ListRegionsResponse regions;
  EXPECT_TRUE(agent.stub().ListRegions(&ctx, v1::ListRegionsRequest(), &regions).ok());
  return {SteadyOpenFds(agent.pid()), OwnThreads(agent.pid()), SharedMappings(agent.pid()),
          static_cast<size_t>(regions.regions_size()), RssKiB(agent.pid())};
}

TEST_F(AgentSessionTest, SessionChurnReturnsFdsThreadsMappingsAndMemoryToBaseline) {
  int cycles = 400;
  if (const char* env = std::getenv("BRAID_SOAK_CYCLES")) cycles = std::atoi(env);
  const uint64_t vqp = va_.vqp_id();
  MappedRegion peer(dst_.path(), kBytes);
  // Four clients at once, each opening session after session; a first round of eight each warms
  // up gRPC and the allocator.
  auto churn = [&](int per_client) {
    std::vector<std::thread> clients;
    for (int lane = 0; lane < 4; ++lane) {
      clients.emplace_back([&, lane] {
        for (int i = 0; i < per_client && !HasFatalFailure(); ++i) {
          SessionCycle(socket(), a_->stub(), vqp, dst_, peer.data(), lane, i);
        }
      });
    }
    for (std::thread& t : clients) t.join();
  };
  churn(8);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const SessionHoldings base = SessionHoldingsOf(*a_);
  churn(cycles / 4);
  // Sessions whose clients left with work in flight are reclaimed once it completes.
  SessionHoldings end;
  for (int i = 0; i < 100; ++i) {
    end = SessionHoldingsOf(*a_);
    if (end.fds <= base.fds && end.mappings <= base.mappings && end.regions <= base.regions) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf(
      "session churn: %d sessions, four clients at once; fds %zu -> %zu, threads %zu -> %zu, "
      "shared mappings %zu -> %zu, regions %zu -> %zu, RSS %.1f -> %.1f MiB\n",
      cycles, base.fds, end.fds, base.threads, end.threads, base.mappings, end.mappings,
      base.regions, end.regions, static_cast<double>(base.rss_kib) / 1024,
      static_cast<double>(end.rss_kib) / 1024);
  EXPECT_EQ(end.fds, base.fds);
  EXPECT_EQ(end.threads, base.threads);
  EXPECT_EQ(end.mappings, base.mappings);
  EXPECT_EQ(end.regions, base.regions);
#ifndef BRAID_SANITIZED  // ASan holds freed memory in quarantine
  EXPECT_LE(end.rss_kib, base.rss_kib + 10 * 1024);
#endif
  // And the agent still moves a new client's bytes; while its session is open, its segment and
  // its region are mapped in the agent (what the count above would have kept had they leaked).
  ClientMemory mem(1, kMiB);
  auto client = session::SessionClient::Connect(socket(), {64, 64, 64});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto region = (*client)->RegisterFd(mem.fd, 0, kMiB, {&vqp, 1}, "last");
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  EXPECT_GE(SharedMappings(a_->pid()), base.mappings + 2);
  client->reset();
  SessionCycle(socket(), a_->stub(), vqp, dst_, peer.data(), 0, 0);
}

TEST_F(AgentSessionTest, GarbageOnTheSessionSocketClosesOnlyThatConnection) {
  // A connection that never sends a thing holds nothing up.
  const int idle = RawConnect(socket());
  ASSERT_GE(idle, 0);
  auto good = session::SessionClient::Connect(socket(), {64, 64, 64});
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  for (size_t size : {size_t{1}, size_t{7}, sizeof(session::WireRequest) + 1}) {
    const int s = RawConnect(socket());
    ASSERT_GE(s, 0);
    std::vector<uint8_t> junk(size, 0xA5);
    ASSERT_EQ(send(s, junk.data(), junk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(size));
    char byte;
    EXPECT_EQ(recv(s, &byte, 1, 0), 0) << "the agent closes a connection that sends garbage";
    close(s);
  }
  // A well-formed request of an unknown kind is answered with an error, and the connection stays.
  {
    const int s = RawConnect(socket());
    ASSERT_GE(s, 0);
    session::WireRequest request;
    request.op = 77;
    ASSERT_TRUE(session::SendMessage(s, &request, sizeof(request), {}).ok());
    session::WireReply reply;
    std::vector<int> fds;
    ASSERT_TRUE(session::ReceiveMessage(s, &reply, sizeof(reply), &fds).ok());
    EXPECT_EQ(reply.code, static_cast<uint32_t>(common::StatusCode::kInvalidArgument));
    EXPECT_TRUE(fds.empty());
    close(s);
  }
  ClientMemory mem(5);
  const uint64_t vqp = va_.vqp_id();
  auto region = (*good)->RegisterFd(mem.fd, 0, kBytes, {&vqp, 1});
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  const uint32_t handle = Bind(a_->stub(), (*good)->id(), vqp, GrantOf(dst_));
  MappedRegion peer(dst_.path(), kBytes);
  ASSERT_EQ(MoveMiBs(**good, vqp, *region, handle, 16), 16);
  EXPECT_EQ(std::memcmp(peer.data(), mem.data, kBytes), 0);
  close(idle);
}

}  // namespace
}  // namespace braid::testing
