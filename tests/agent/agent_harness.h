// Test harness for braidd: real agent processes on loopback, driven over gRPC.
//
// AgentProcess forks and execs the braidd binary with its own soft NICs (127.x addresses derived
// from the test's pid), gRPC, metrics and soft ports, and a fresh region directory; it waits until
// GetInfo answers and stops the process (SIGTERM, then SIGKILL) when destroyed. Its log goes to
// a file, printed only if the test failed or the agent did not exit cleanly.
// Helpers: map a region file, drive a Transfer stream with a window, read notifications, scrape
// and parse /metrics, ask the gRPC health service, read a process's CPU time.
#ifndef BRAID_TESTS_AGENT_AGENT_HARNESS_H_
#define BRAID_TESTS_AGENT_AGENT_HARNESS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "braid/v1/agent.grpc.pb.h"
#include "tests/agent/test_pki.h"

namespace braid::testing {

inline constexpr uint64_t kMiB = 1 << 20;

struct AgentSpec {
  std::string id;
  std::vector<std::string> nic_ips;  // soft0, soft1, ...
  int port_slot = 0;                 // TestPort slots: grpc = slot, metrics = slot + 1
  bool fault_injection = false;
  std::vector<std::string> extra_args;
  std::string log_level = "warn";       // --log-level
  std::string grpc_host = "127.0.0.1";  // --grpc-tcp's host (the harness calls 127.0.0.1)
  std::string region_dir;  // "": a fresh directory, removed with the process; else this one, kept
  // The rdma-core code path: `--provider ibverbs` with libbraid_verbs.so preloaded, the NICs
  // given to it (BRAID_SOFT_NICS). Only where the library is built (not in sanitizer builds).
  bool soft_verbs = false;
  std::string soft_verbs_provider = "ibverbs";  // --provider then (auto picks ibverbs too)
  // RLIMIT_NOFILE given to the agent at start (0: inherited).
  uint64_t fd_soft_limit = 0;
  uint64_t fd_hard_limit = 0;
  // RLIMIT_MEMLOCK given to the agent at start, soft and hard (0: inherited), and whether it runs
  // without CAP_IPC_LOCK (dropped from its bounding set), as a real agent might.
  uint64_t memlock_limit = 0;
  bool drop_ipc_lock = false;
  // Security. Empty: plaintext TCP with anonymous callers as admins (every test that is not about
  // security). Otherwise these flags instead (TLS, identities), and the harness's own channel
  // calls with `credentials` (it needs a role that may call GetInfo).
  std::vector<std::string> security_args;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};
// Whether AgentSpec::soft_verbs can be used in this build.
bool SoftVerbsAvailable();

// 127.<b>.<agent>.<nic>, with <b> derived from the pid (concurrent runs use other addresses).
std::string TestNicIp(int agent, int nic);

class AgentProcess {
 public:
  static std::unique_ptr<AgentProcess> Spawn(const AgentSpec& spec);
  ~AgentProcess();

  v1::Agent::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  pid_t pid() const { return pid_; }
  const std::string& id() const { return id_; }
  const std::string& region_dir() const { return region_dir_; }
  uint16_t metrics_port() const { return metrics_port_; }
  std::string endpoint() const { return endpoint_; }         // its gRPC TCP address
  const std::string& log_path() const { return log_path_; }  // its stderr
  // Stops the process now with `signal`; returns its wait status.
  int Kill(int signal);

 private:
  AgentProcess() = default;
  pid_t pid_ = -1;
  std::string id_;
  std::string region_dir_;
  std::string log_path_;  // its stderr; printed when it exits badly or the test failed
  bool owns_region_dir_ = false;
  uint16_t metrics_port_ = 0;
  std::string endpoint_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

// A mapping of a region's shared-memory file (unmapped on destruction).
class MappedRegion {
 public:
  MappedRegion(const std::string& path, uint64_t length);
  ~MappedRegion();
  uint8_t* data() const { return data_; }
  uint64_t size() const { return length_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t length_ = 0;
};

uint64_t Checksum(const uint8_t* data, uint64_t length);
void FillPattern(uint8_t* data, uint64_t length, uint64_t seed);

struct TransferRun {
  grpc::Status status;
  uint32_t window = 0;
  std::vector<v1::TransferCompletion> completions;  // in arrival order
};
// A Transfer stream message carrying `op` alone.
v1::TransferRequest OneOp(const v1::TransferOp& op);
// Sends `ops` on one Transfer stream, at most `max_outstanding` at a time (0: the agent's window),
// as many per message as there is room for, at most `batch` (0: no further bound).
TransferRun RunTransfers(v1::Agent::Stub& stub, const std::vector<v1::TransferOp>& ops,
                         uint32_t max_outstanding = 0, uint32_t batch = 0);

// A Hold call: the agent's lease, held until End() or destruction (the call is cancelled).
class HoldCall {
 public:
  // Returns once the lease came (lease() 0 if not); `resume`: the lease to take over.
  explicit HoldCall(v1::Agent::Stub& stub, uint64_t resume = 0);
  ~HoldCall() { End(); }
  uint64_t lease() const { return lease_; }
  uint32_t grace_ms() const { return grace_ms_; }
  // Waits for the agent to end the call (the call's deadline is 5 minutes); how it ended.
  grpc::Status AwaitEnd();
  // Why no lease came (OK when one did).
  const grpc::Status& refusal() const { return refusal_; }
  void End();

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::HoldResponse>> reader_;
  uint64_t lease_ = 0;
  uint32_t grace_ms_ = 0;
  grpc::Status refusal_;
};

// Collects a VQP's notifications on a thread until Stop().
class NotificationCollector {
 public:
  NotificationCollector(v1::Agent::Stub& stub, uint64_t vqp_id);  // returns once subscribed
  ~NotificationCollector();
  // Waits until `count` arrived (or `timeout_ms`), then returns them.
  std::vector<v1::Notification> WaitFor(size_t count, int timeout_ms);
  bool subscribed() const { return subscribed_.load(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchNotificationsResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<v1::Notification> got_;
  std::atomic<bool> subscribed_{false};
};

// GET http://127.0.0.1:<port><path>; the body ("" on failure).
std::string HttpGet(uint16_t port, const std::string& path);
// Whether something accepts TCP connections on 127.0.0.1:<port> (no test failure if not).
bool PortOpen(uint16_t port);
std::string ScrapeMetrics(uint16_t port);
// Sum of the samples of `name` whose labels include every pair of `labels`.
double MetricSum(const std::string& text, const std::string& name,
                 const std::map<std::string, std::string>& labels = {});
// The gRPC health service's answer for `service` ("": readiness, the whole server): 1 SERVING,
// 2 NOT_SERVING, -1 no answer (an unknown service is NOT_FOUND).
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "");
// DrainDevice (`drain`) or UndrainDevice of `device`; the device as answered into `out` if given.
grpc::Status Drain(AgentProcess& agent, const std::string& device, bool drain,
                   v1::Device* out = nullptr);
// Runs `command` through the shell; its exit code (-1 if it did not exit), stdout and stderr
// together, and how long it took.
struct CommandResult {
  int exit_code = -1;
  std::string output;
  double seconds = 0;
};
CommandResult RunCommand(const std::string& command);
// utime + stime of `pid`, in clock ticks.
uint64_t CpuTicks(pid_t pid);
// Sends SIGSTOP to `pid` and returns once every thread of it has stopped (kill returns before they
// do: a loaded machine let a "stopped" agent answer a write 4 ms later); false after 5 s.
bool StopProcess(pid_t pid);
// What a process holds: open fds, threads, resident memory (KiB), and TCP sockets in CLOSE_WAIT
// (the peer closed, the process never did).
size_t OpenFds(pid_t pid);
// The fewest descriptors `pid` holds over ~100 ms: its steady count, without one a thread holds
// for a moment (a /proc read, a connection being made). The baseline of a leak check.
size_t SteadyOpenFds(pid_t pid);
// What each open fd of `pid` is ("socket:[123]", "anon_inode:[eventfd]", a path), sorted.
std::vector<std::string> FdTargets(pid_t pid);
size_t Threads(pid_t pid);
// gRPC's callback executor ("default-executor" threads, which run the streams' reactions): a pool
// that grows on demand up to twice the cores and keeps its threads, not a per-call resource.
size_t ExecutorThreads(pid_t pid);
// Every other thread: what a per-call leak would add to.
inline size_t OwnThreads(pid_t pid) { return Threads(pid) - ExecutorThreads(pid); }
// The executor's bound (twice the cores).
size_t MaxExecutorThreads();
// The names (comm) of `pid`'s threads, sorted.
std::vector<std::string> ThreadNames(pid_t pid);
uint64_t RssKiB(pid_t pid);
// How many shared mappings `pid` has (lines of /proc/<pid>/maps with an `s` in their permissions):
// its regions and session segments; a region or segment never unmapped adds to it, while thread
// stacks and the allocator's arenas, private, do not.
size_t SharedMappings(pid_t pid);
size_t CloseWaitSockets(pid_t pid);

// `lease`: a Hold call's (0: none).
v1::VirtualQpInfo CreateVqp(v1::Agent::Stub& stub, v1::Scheme scheme, uint32_t num_qps,
                            uint64_t lease = 0);
v1::VirtualQpInfo GetVqp(AgentProcess& agent, uint64_t vqp);
// Connects `mine` (on `stub`) with the card of `theirs`; expects success.
void ConnectOne(v1::Agent::Stub& stub, const v1::VirtualQpInfo& mine,
                const v1::VirtualQpInfo& theirs);
void DestroyVqp(v1::Agent::Stub& stub, uint64_t vqp_id);
// Exchanges cards and connects both sides.
void ConnectPair(v1::Agent::Stub& a, const v1::VirtualQpInfo& va, v1::Agent::Stub& b,
                 const v1::VirtualQpInfo& vb);

// The benches' setup: agents "<prefix>-a" and "<prefix>-b" with two soft NICs each, an 8-QP SPRAY
// VQP pair between them, a region `src` on A and `dst` on B granted to B's VQP. Null agents when
// one did not start. With `unix_socket`, agent A also listens there (and on its session socket,
// `unix_socket` + ".session").
struct AgentPair {
  std::unique_ptr<AgentProcess> a, b;
  v1::VirtualQpInfo va, vb;
  v1::RegionInfo src, dst;
};
// Agent A (and B) also serve gRPC on `unix_socket` (`unix_socket_b`) when given.
AgentPair SpawnConnectedPair(const std::string& prefix, uint64_t region_bytes,
                             const std::string& unix_socket = "",
                             const std::string& unix_socket_b = "");
// Registers a region; `grant_vqps` (VQPs on the same agent) may reach it over the wire.
v1::RegionInfo Register(v1::Agent::Stub& stub, uint64_t length, const std::string& label = "",
                        const std::vector<uint64_t>& grant_vqps = {}, uint64_t lease = 0);
// `region` as granted to `vqp` (GrantAccess): its grants are that one.
v1::RegionInfo WithGrant(v1::Agent::Stub& stub, const v1::RegionInfo& region, uint64_t vqp);
// The region's one grant (what the peer of the granted VQP targets); a test failure otherwise.
const v1::RemoteRegion& GrantOf(const v1::RegionInfo& region);
// `count` operations `op` of `size` bytes from `local` to `remote` on `vqp`, cycling over the
// regions' first `slots` slots of `size`; op ids 0, 1, 2, ...
std::vector<v1::TransferOp> Transfers(v1::Op op, uint64_t vqp, const v1::RegionInfo& local,
                                      const v1::RegionInfo& remote, uint64_t size, uint64_t count,
                                      uint64_t slots);
// `count` write-with-immediate operations of 1 MiB from `src` to `dst` on `vqp`, cycling over the
// regions' first `slots` MiB; op ids 0, 1, 2, ...
std::vector<v1::TransferOp> MiBWrites(uint64_t vqp, const v1::RegionInfo& src,
                                      const v1::RegionInfo& dst, int count, int slots = 64);
// Breaks physical QP `qp_index` of `vqp` (InjectFault BREAK_QP; the agent must allow faults and the
// caller be an admin); the status of the call.
grpc::Status BreakQp(v1::Agent::Stub& stub, uint64_t vqp, uint32_t qp_index);
// Destroys every VQP and deregisters every region through the API; expects both lists empty after.
void ReleaseEverything(v1::Agent::Stub& stub);

}  // namespace braid::testing

#endif  // BRAID_TESTS_AGENT_AGENT_HARNESS_H_
