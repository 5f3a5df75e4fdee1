#include "tests/agent/agent_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <set>
#include <sstream>

#include "tests/testutil/test_port.h"

namespace braid::testing {

namespace {

constexpr uint16_t kSoftPortSlot = 15;

std::string Endpoint(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

}  // namespace

bool SoftVerbsAvailable() {
#ifdef BRAID_SOFT_VERBS_LIB
  return true;
#else
  return false;
#endif
}

std::string TestNicIp(int agent, int nic) {
  const int b = 100 + static_cast<int>(static_cast<uint32_t>(getpid()) % 150);
  return "127." + std::to_string(b) + "." + std::to_string(agent + 1) + "." +
         std::to_string(nic + 1);
}

std::unique_ptr<AgentProcess> AgentProcess::Spawn(const AgentSpec& spec) {
  std::unique_ptr<AgentProcess> p(new AgentProcess());
  p->id_ = spec.id;
  if (spec.region_dir.empty()) {
    char dir[] = "/dev/shm/braid-test-XXXXXX";
    if (mkdtemp(dir) == nullptr) {
      ADD_FAILURE() << "mkdtemp: " << strerror(errno);
      return nullptr;
    }
    p->region_dir_ = dir;
    p->owns_region_dir_ = true;
  } else {
    p->region_dir_ = spec.region_dir;
  }
  const uint16_t grpc_port = TestPort(spec.port_slot);
  p->metrics_port_ = TestPort(spec.port_slot + 1);
  std::vector<std::string> args = {BRAID_BRAIDD_PATH,
                                   "--agent-id",
                                   spec.id,
                                   "--grpc-tcp",
                                   spec.grpc_host + ":" + std::to_string(grpc_port),
                                   "--metrics",
                                   Endpoint(p->metrics_port_),
                                   "--region-dir",
                                   p->region_dir_,
                                   "--log-level",
                                   spec.log_level};
  std::vector<std::pair<std::string, std::string>> env;
  std::string nics;
  for (size_t i = 0; i < spec.nic_ips.size(); ++i) {
    const std::string nic = "soft" + std::to_string(i) + "=" + spec.nic_ips[i];
    nics += (i == 0 ? "" : ",") + nic;
    if (!spec.soft_verbs) {
      args.push_back("--soft-nic");
      args.push_back(nic);
    }
  }
  if (spec.soft_verbs) {
#ifdef BRAID_SOFT_VERBS_LIB
    args.push_back("--provider");
    args.push_back(spec.soft_verbs_provider);
    env = {{"LD_PRELOAD", BRAID_SOFT_VERBS_LIB},
           {"BRAID_SOFT_NICS", nics},
           {"BRAID_SOFT_PORT", std::to_string(TestPort(kSoftPortSlot))}};
#else
    ADD_FAILURE() << "libbraid_verbs.so is not built here (sanitizer build)";
    return nullptr;
#endif
  } else {
    args.push_back("--soft-port");
    args.push_back(std::to_string(TestPort(kSoftPortSlot)));
  }
  if (spec.fault_injection) args.push_back("--enable-fault-injection");
  if (spec.security_args.empty()) {
    args.insert(args.end(), {"--plaintext", "--anonymous-role", "admin"});
  } else {
    args.insert(args.end(), spec.security_args.begin(), spec.security_args.end());
  }
  for (const auto& a : spec.extra_args) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The agent's log and anything else it prints (a sanitizer's report) go to a file, shown only
  // when it matters (see the destructor): a passing run's output stays readable and a failure's is
  // not buried.
  static std::atomic<int> spawned{0};
  p->log_path_ = "/tmp/braidd-" + std::to_string(getpid()) + "-" + std::to_string(++spawned) + "-" +
                 spec.id + ".log";
  const int log_fd = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    ADD_FAILURE() << p->log_path_ << ": " << strerror(errno);
    return nullptr;
  }
  p->pid_ = fork();
  if (p->pid_ == 0) {
    if (dup2(log_fd, STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0) _exit(126);
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    if (spec.fd_soft_limit != 0) {
      const rlimit fds{spec.fd_soft_limit, spec.fd_hard_limit};
      if (setrlimit(RLIMIT_NOFILE, &fds) != 0) _exit(126);
    }
    if (spec.memlock_limit != 0) {
      const rlimit locked{spec.memlock_limit, spec.memlock_limit};
      if (setrlimit(RLIMIT_MEMLOCK, &locked) != 0) _exit(126);
    }
    if (spec.drop_ipc_lock && prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  grpc::ChannelArguments channel_args;  // the agent starts in milliseconds: retry quickly
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  p->endpoint_ = Endpoint(grpc_port);
  p->channel_ = grpc::CreateCustomChannel(
      p->endpoint_, spec.credentials ? spec.credentials : grpc::InsecureChannelCredentials(),
      channel_args);
  p->stub_ = v1::Agent::NewStub(p->channel_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      ADD_FAILURE() << "braidd " << spec.id << " exited at start, status " << status;
      return nullptr;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    ctx.set_wait_for_ready(true);
    v1::AgentInfo info;
    if (p->stub_->GetInfo(&ctx, v1::GetInfoRequest(), &info).ok()) return p;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "braidd " << spec.id << " did not answer within 20 s";
  return nullptr;
}

int AgentProcess::Kill(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  for (int i = 0; i < 1000; ++i) {  // 10 s, then SIGKILL
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

AgentProcess::~AgentProcess() {
  stub_.reset();
  channel_.reset();
  const int status = Kill(SIGTERM);
  const bool clean = status == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                     (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  std::error_code ec;
  if (!clean || ::testing::Test::HasFailure()) {
    std::ifstream in(log_path_);
    std::printf("---- braidd %s log (wait status %d) ----\n%s---- end of braidd %s log ----\n",
                id_.c_str(), status, std::string(std::istreambuf_iterator<char>(in), {}).c_str(),
                id_.c_str());
  }
  std::filesystem::remove(log_path_, ec);
  if (owns_region_dir_) std::filesystem::remove_all(region_dir_, ec);
}

grpc::Status BreakQp(v1::Agent::Stub& stub, uint64_t vqp, uint32_t qp_index) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::InjectFaultRequest fault;
  fault.set_kind(v1::FAULT_KIND_BREAK_QP);
  fault.set_vqp_id(vqp);
  fault.set_qp_index(qp_index);
  v1::InjectFaultResponse out;
  return stub.InjectFault(&ctx, fault, &out);
}

MappedRegion::MappedRegion(const std::string& path, uint64_t length) : length_(length) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open " << path << ": " << strerror(errno);
    return;
  }
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mmap " << path << ": " << strerror(errno);
    return;
  }
  data_ = static_cast<uint8_t*>(p);
}

MappedRegion::~MappedRegion() {
  if (data_ != nullptr) munmap(data_, length_);
}

uint64_t Checksum(const uint8_t* data, uint64_t length) {
  uint64_t h = 0xcbf29ce484222325ull;
  uint64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < length; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

void FillPattern(uint8_t* data, uint64_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  uint64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    const uint64_t w = rng();
    std::memcpy(data + i, &w, 8);
  }
  for (; i < length; ++i) data[i] = static_cast<uint8_t>(rng());
}

v1::TransferRequest OneOp(const v1::TransferOp& op) {
  v1::TransferRequest request;
  *request.add_ops() = op;
  return request;
}

TransferRun RunTransfers(v1::Agent::Stub& stub, const std::vector<v1::TransferOp>& ops,
                         uint32_t max_outstanding, uint32_t batch) {
  TransferRun run;
  grpc::ClientContext ctx;
  auto stream = stub.Transfer(&ctx);
  v1::TransferResponse response;
  if (!stream->Read(&response) || !response.has_window()) {
    run.status = stream->Finish();
    return run;
  }
  run.window = response.window().max_in_flight();
  const uint32_t limit = max_outstanding != 0 ? max_outstanding : run.window;
  size_t sent = 0;
  uint64_t outstanding = 0;
  bool broken = false;
  while (!broken && (sent < ops.size() || outstanding > 0)) {
    // What the window has room for goes out, `batch` operations per message (0: all in one).
    while (!broken && sent < ops.size() && outstanding < limit) {
      v1::TransferRequest request;
      while (sent < ops.size() && outstanding < limit &&
             (batch == 0 || static_cast<uint32_t>(request.ops_size()) < batch)) {
        *request.add_ops() = ops[sent];
        ++sent;
        ++outstanding;
      }
      broken = !stream->Write(request);
    }
    if (broken || !stream->Read(&response)) {
      broken = true;
      break;
    }
    for (const v1::TransferCompletion& c : response.completions()) {
      run.completions.push_back(c);
      --outstanding;
    }
  }
  stream->WritesDone();
  while (stream->Read(&response)) {
    for (const v1::TransferCompletion& c : response.completions()) run.completions.push_back(c);
  }
  run.status = stream->Finish();
  return run;
}

HoldCall::HoldCall(v1::Agent::Stub& stub, uint64_t resume) {
  context_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::HoldRequest request;
  request.set_resume_lease_id(resume);
  reader_ = stub.Hold(&context_, request);
  v1::HoldResponse first;
  if (reader_->Read(&first)) {
    lease_ = first.lease_id();
    grace_ms_ = first.grace_ms();
  } else {
    refusal_ = reader_->Finish();
    reader_.reset();
  }
}

grpc::Status HoldCall::AwaitEnd() {
  if (!reader_) return refusal_;
  v1::HoldResponse more;
  while (reader_->Read(&more)) {
  }
  grpc::Status s = reader_->Finish();
  reader_.reset();
  return s;
}

void HoldCall::End() {
  if (!reader_) return;
  context_.TryCancel();
  (void)reader_->Finish();
  reader_.reset();
}

NotificationCollector::NotificationCollector(v1::Agent::Stub& stub, uint64_t vqp_id) {
  v1::WatchNotificationsRequest request;
  request.set_vqp_id(vqp_id);
  reader_ = stub.WatchNotifications(&context_, request);
  std::promise<void> subscribed;
  auto ready = subscribed.get_future();
  thread_ = std::thread([this, &subscribed] {
    v1::WatchNotificationsResponse r;
    bool told = false;
    while (reader_->Read(&r)) {
      if (r.has_subscribed() && !told) {
        subscribed_.store(true);
        subscribed.set_value();
        told = true;
      } else if (r.has_notification()) {
        std::lock_guard<std::mutex> lock(mu_);
        got_.push_back(r.notification());
      }
    }
    if (!told) subscribed.set_value();
    (void)reader_->Finish();
  });
  ready.wait();
}

NotificationCollector::~NotificationCollector() {
  context_.TryCancel();
  thread_.join();
}

std::vector<v1::Notification> NotificationCollector::WaitFor(size_t count, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (got_.size() >= count || std::chrono::steady_clock::now() > deadline) return got_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string ScrapeMetrics(uint16_t port) { return HttpGet(port, "/metrics"); }

bool PortOpen(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool open = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return open;
}

std::string HttpGet(uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    ADD_FAILURE() << "connect to port " << port << ": " << strerror(errno);
    return "";
  }
  // An agent that no longer answers fails the test instead of hanging it.
  const timeval limit{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

double MetricSum(const std::string& text, const std::string& name,
                 const std::map<std::string, std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos || line.compare(0, name_end, name) != 0 ||
        name_end != name.size()) {
      continue;
    }
    std::map<std::string, std::string> have;
    size_t pos = name_end;
    if (line[pos] == '{') {
      const size_t close_brace = line.find('}', pos);
      std::string body = line.substr(pos + 1, close_brace - pos - 1);
      size_t p = 0;
      while (p < body.size()) {
        const size_t eq = body.find('=', p);
        const size_t q1 = body.find('"', eq);
        const size_t q2 = body.find('"', q1 + 1);
        have[body.substr(p, eq - p)] = body.substr(q1 + 1, q2 - q1 - 1);
        p = q2 + 2;  // past '",'
      }
      pos = close_brace + 1;
    }
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = have.find(k);
      if (it == have.end() || it->second != v) match = false;
    }
    if (match) sum += std::stod(line.substr(pos + 1));
  }
  return sum;
}

grpc::Status Drain(AgentProcess& agent, const std::string& device, bool drain, v1::Device* out) {
  grpc::ClientContext ctx;
  v1::DrainDeviceRequest request;
  request.set_device(device);
  v1::Device answer;
  return drain ? agent.stub().DrainDevice(&ctx, request, out != nullptr ? out : &answer)
               : agent.stub().UndrainDevice(&ctx, request, out != nullptr ? out : &answer);
}

int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service}: field 1, length-delimited; "" is no bytes at all.
  const std::string encoded =
      service.empty() ? "" : std::string{'\x0a', static_cast<char>(service.size())} + service;
  grpc::Slice body(encoded);
  grpc::ByteBuffer request(&body, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  if (!done.get_future().get().ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status = 1}: field 1, varint → 0x08 <status>. An empty message is 0.
  if (bytes.empty()) return 0;
  if (bytes.size() != 2 || bytes[0] != 0x08) return -1;
  return bytes[1];
}

CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  char buf[4096];
  while (p != nullptr && fgets(buf, sizeof(buf), p) != nullptr) r.output += buf;
  const int status = p != nullptr ? pclose(p) : -1;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

v1::VirtualQpInfo CreateVqp(v1::Agent::Stub& stub, v1::Scheme scheme, uint32_t num_qps,
                            uint64_t lease) {
  grpc::ClientContext ctx;
  v1::CreateVirtualQpRequest request;
  request.set_scheme(scheme);
  request.set_num_qps(num_qps);
  request.set_lease_id(lease);
  v1::VirtualQpInfo info;
  const grpc::Status s = stub.CreateVirtualQp(&ctx, request, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return info;
}

void ConnectOne(v1::Agent::Stub& stub, const v1::VirtualQpInfo& mine,
                const v1::VirtualQpInfo& theirs) {
  grpc::ClientContext ctx;
  v1::ConnectVirtualQpRequest request;
  request.set_vqp_id(mine.vqp_id());
  *request.mutable_remote_card() = theirs.card();
  v1::VirtualQpInfo info;
  const grpc::Status s = stub.ConnectVirtualQp(&ctx, request, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(info.connected());
}

void ConnectPair(v1::Agent::Stub& a, const v1::VirtualQpInfo& va, v1::Agent::Stub& b,
                 const v1::VirtualQpInfo& vb) {
  ConnectOne(a, va, vb);
  ConnectOne(b, vb, va);
}

void DestroyVqp(v1::Agent::Stub& stub, uint64_t vqp_id) {
  grpc::ClientContext ctx;
  v1::DestroyVirtualQpRequest request;
  request.set_vqp_id(vqp_id);
  v1::DestroyVirtualQpResponse response;
  const grpc::Status s = stub.DestroyVirtualQp(&ctx, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

v1::RegionInfo Register(v1::Agent::Stub& stub, uint64_t length, const std::string& label,
                        const std::vector<uint64_t>& grant_vqps, uint64_t lease) {
  grpc::ClientContext ctx;
  v1::RegisterMemoryRequest request;
  request.set_length(length);
  request.set_lease_id(lease);
  request.set_label(label);
  for (uint64_t v : grant_vqps) request.add_grant_vqp_ids(v);
  v1::RegionInfo info;
  const grpc::Status s = stub.RegisterMemory(&ctx, request, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return info;
}

v1::RegionInfo WithGrant(v1::Agent::Stub& stub, const v1::RegionInfo& region, uint64_t vqp) {
  grpc::ClientContext ctx;
  v1::GrantAccessRequest request;
  request.set_region_id(region.region_id());
  request.set_vqp_id(vqp);
  v1::RegionInfo out = region;
  out.clear_grants();
  const grpc::Status s = stub.GrantAccess(&ctx, request, out.add_grants());
  EXPECT_TRUE(s.ok()) << s.error_message();
  return out;
}

const v1::RemoteRegion& GrantOf(const v1::RegionInfo& region) {
  static const v1::RemoteRegion kNone;
  EXPECT_EQ(region.grants_size(), 1) << "region " << region.region_id() << " has "
                                     << region.grants_size() << " grants; the test expects one";
  return region.grants_size() > 0 ? region.grants(0) : kNone;
}

std::vector<v1::TransferOp> Transfers(v1::Op op, uint64_t vqp, const v1::RegionInfo& local,
                                      const v1::RegionInfo& remote, uint64_t size, uint64_t count,
                                      uint64_t slots) {
  std::vector<v1::TransferOp> out;
  out.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    v1::TransferOp r;
    r.set_op_id(i);
    r.set_vqp_id(vqp);
    r.set_op(op);
    r.set_local_region_id(local.region_id());
    r.set_local_offset(i % slots * size);
    *r.mutable_remote() = GrantOf(remote);
    r.set_remote_offset(i % slots * size);
    r.set_length(size);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<v1::TransferOp> MiBWrites(uint64_t vqp, const v1::RegionInfo& src,
                                      const v1::RegionInfo& dst, int count, int slots) {
  return Transfers(v1::OP_WRITE_WITH_IMM, vqp, src, dst, kMiB, static_cast<uint64_t>(count),
                   static_cast<uint64_t>(slots));
}

v1::VirtualQpInfo GetVqp(AgentProcess& agent, uint64_t vqp) {
  grpc::ClientContext ctx;
  v1::GetVirtualQpRequest request;
  request.set_vqp_id(vqp);
  v1::VirtualQpInfo info;
  EXPECT_TRUE(agent.stub().GetVirtualQp(&ctx, request, &info).ok());
  return info;
}

// Lists with `list` from the first page, `release`s every entry, and lists again until a page is
// the last (what was released is gone, so each list starts over; a page holds at most 1,000).
template <typename Request, typename Response, typename List, typename Entries, typename Release>
void ReleasePages(List list, Entries entries, Release release) {
  for (bool more = true; more;) {
    grpc::ClientContext ctx;
    Request request;
    request.set_page_size(1000);
    Response page;
    ASSERT_TRUE(list(&ctx, request, &page).ok());
    for (const auto& e : entries(page)) release(e);
    more = !page.next_page_token().empty();
  }
}

void ReleaseEverything(v1::Agent::Stub& stub) {
  ReleasePages<v1::ListVirtualQpsRequest, v1::ListVirtualQpsResponse>(
      [&](auto* ctx, const auto& request, auto* page) {
        return stub.ListVirtualQps(ctx, request, page);
      },
      [](const v1::ListVirtualQpsResponse& page) -> const auto& { return page.vqps(); },
      [&](const v1::VirtualQpInfo& v) {
        grpc::ClientContext ctx;
        v1::DestroyVirtualQpRequest request;
        request.set_vqp_id(v.vqp_id());
        v1::DestroyVirtualQpResponse response;
        EXPECT_TRUE(stub.DestroyVirtualQp(&ctx, request, &response).ok());
      });
  ReleasePages<v1::ListRegionsRequest, v1::ListRegionsResponse>(
      [&](auto* ctx, const auto& request, auto* page) {
        return stub.ListRegions(ctx, request, page);
      },
      [](const v1::ListRegionsResponse& page) -> const auto& { return page.regions(); },
      [&](const v1::RegionInfo& r) {
        grpc::ClientContext ctx;
        v1::DeregisterMemoryRequest request;
        request.set_region_id(r.region_id());
        v1::DeregisterMemoryResponse response;
        EXPECT_TRUE(stub.DeregisterMemory(&ctx, request, &response).ok());
      });
  grpc::ClientContext after_vqps_ctx, after_regions_ctx;
  v1::ListVirtualQpsResponse after_vqps;
  v1::ListRegionsResponse after_regions;
  ASSERT_TRUE(stub.ListVirtualQps(&after_vqps_ctx, {}, &after_vqps).ok());
  ASSERT_TRUE(stub.ListRegions(&after_regions_ctx, {}, &after_regions).ok());
  EXPECT_EQ(after_vqps.vqps_size(), 0);
  EXPECT_EQ(after_regions.regions_size(), 0);
}

AgentPair SpawnConnectedPair(const std::string& prefix, uint64_t region_bytes,
                             const std::string& unix_socket, const std::string& unix_socket_b) {
  AgentPair p;
  AgentSpec a{prefix + "-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0};
  if (!unix_socket.empty()) a.extra_args = {"--grpc-unix", unix_socket};
  AgentSpec b{prefix + "-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2};
  if (!unix_socket_b.empty()) b.extra_args = {"--grpc-unix", unix_socket_b};
  p.a = AgentProcess::Spawn(a);
  p.b = AgentProcess::Spawn(b);
  if (!p.a || !p.b) {
    p.a.reset();
    p.b.reset();
    return p;
  }
  p.va = CreateVqp(p.a->stub(), v1::SCHEME_SPRAY, 8);
  p.vb = CreateVqp(p.b->stub(), v1::SCHEME_SPRAY, 8);
  ConnectPair(p.a->stub(), p.va, p.b->stub(), p.vb);
  p.src = Register(p.a->stub(), region_bytes, "src");
  p.dst = Register(p.b->stub(), region_bytes, "dst", {p.vb.vqp_id()});
  return p;
}

}  // namespace braid::testing
