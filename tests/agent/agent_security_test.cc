// Security: TLS and mutual TLS on the agent's listener, identities and roles, ownership of VQPs,
// regions and streams, audit counters. Two agents with certificates from a test CA
// (testdata/make_test_certs.sh), callers with different identities.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "tests/agent/agent_harness.h"
#include "tests/agent/event_collector.h"

namespace braid::testing {
namespace {

// Replaces `to` in one step (a reader sees the old file or the new one, never half of it).
void ReplaceFile(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".new";
  std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(tmp, to);
}

class SecurityTest : public ::testing::Test {
 protected:
  static constexpr const char* kClientA = "spiffe://braid/client/a";
  static constexpr const char* kClientC = "spiffe://braid/client/c";  // by token only

  void SetUp() override {
    pki_ = TestPki::Make();
    ASSERT_TRUE(pki_);
    tokens_ = pki_->Path("tokens");
    std::ofstream(tokens_) << "# identity token\n" << kClientC << " token-for-c-0123456789\n";
    a_ = Spawn("agent-a", 0, "require");
    ASSERT_TRUE(a_);
    b_ = Spawn("agent-b", 1, "optional");  // tokens over TLS without a client certificate
    ASSERT_TRUE(b_);
  }

  void TearDown() override {
    a_.reset();
    b_.reset();
    pki_.reset();
  }

  std::unique_ptr<AgentProcess> Spawn(const std::string& name, int index,
                                      const std::string& client_auth,
                                      std::vector<std::string> extra_args = {}) {
    AgentSpec spec{name, {TestNicIp(index, 0), TestNicIp(index, 1)}, index * 2};
    spec.extra_args = std::move(extra_args);
    spec.fault_injection = true;
    spec.security_args = pki_->AgentArgs(name, client_auth, tokens_);
    spec.credentials = Tls("ca1", "admin");
    return AgentProcess::Spawn(spec);
  }

  std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca, const std::string& cert,
                                                const std::string& token = "") {
    return pki_->Tls(ca, cert, token);
  }

  // A fresh channel (a new connection, a new handshake) to `agent` with `creds`.
  static std::unique_ptr<v1::Agent::Stub> Stub(AgentProcess& agent,
                                               std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetInt("braid.test.unique", static_cast<int>(++channels_));  // no shared subchannel
    return v1::Agent::NewStub(grpc::CreateCustomChannel(agent.endpoint(), creds, args));
  }

  static grpc::Status Info(v1::Agent::Stub& stub, v1::AgentInfo* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::AgentInfo info;
    return stub.GetInfo(&ctx, {}, out != nullptr ? out : &info);
  }

  static inline std::atomic<int> channels_{0};
  std::unique_ptr<TestPki> pki_;
  std::string tokens_;
  std::unique_ptr<AgentProcess> a_;
  std::unique_ptr<AgentProcess> b_;
};

TEST_F(SecurityTest, CallersWithoutAValidIdentityAreRefusedAndCounted) {
  // Agent A requires a client certificate from CA 1: the handshake itself fails without one.
  struct Case {
    const char* what;
    std::shared_ptr<grpc::ChannelCredentials> creds;
  };
  for (const Case& c : {Case{"plaintext", grpc::InsecureChannelCredentials()},
                        Case{"TLS without a client certificate", Tls("ca1", "")},
                        Case{"a certificate from another CA", Tls("ca1", "other-ca")},
                        Case{"an expired certificate", Tls("ca1", "expired")}}) {
    const grpc::Status s = Info(*Stub(*a_, c.creds));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << c.what << ": " << s.error_message();
  }
  // A valid certificate whose identity the config does not name.
  const grpc::Status mallory = Info(*Stub(*a_, Tls("ca1", "mallory")));
  EXPECT_EQ(mallory.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(mallory.error_message(),
            "identity 'spiffe://braid/client/mallory' has no role on this agent: add it to "
            "auth.identities");
  v1::AgentInfo info;
  ASSERT_TRUE(Info(*Stub(*a_, Tls("ca1", "client-a")), &info).ok());
  EXPECT_EQ(info.caller_identity(), kClientA);
  EXPECT_EQ(info.caller_role(), "client");
  EXPECT_FALSE(info.plaintext());

  // Agent B takes callers without a certificate, if they bring a known token.
  const grpc::Status nobody = Info(*Stub(*b_, Tls("ca1", "")));
  EXPECT_EQ(nobody.error_code(), grpc::StatusCode::UNAUTHENTICATED) << nobody.error_message();
  auto with_token = Stub(*b_, Tls("ca1", "", "token-for-c-0123456789"));
  ASSERT_TRUE(Info(*with_token, &info).ok());
  EXPECT_EQ(info.caller_identity(), kClientC);
  // The token is revoked (taken out of the file): the next call on the same connection fails.
  std::ofstream(tokens_ + ".new") << "# every token revoked\n";
  std::filesystem::rename(tokens_ + ".new", tokens_);
  const grpc::Status revoked = Info(*with_token);
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED) << revoked.error_message();
  const grpc::Status forged = Info(*Stub(*b_, Tls("ca1", "", "a-guessed-token")));
  EXPECT_EQ(forged.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  const std::string ma = ScrapeMetrics(a_->metrics_port());
  EXPECT_EQ(MetricSum(ma, "braid_auth_failures_total", {{"reason", "unknown_identity"}}), 1);
  // The refused handshakes are counted too, each with its reason (gRPC may retry a handshake on
  // its own: at least once each). A client that speaks no TLS at all never gets that far.
  EXPECT_GE(MetricSum(ma, "braid_auth_failures_total", {{"reason", "no_certificate"}}), 1);
  EXPECT_GE(MetricSum(ma, "braid_auth_failures_total", {{"reason", "untrusted_certificate"}}), 1);
  EXPECT_GE(MetricSum(ma, "braid_auth_failures_total", {{"reason", "expired_certificate"}}), 1);
  const std::string mb = ScrapeMetrics(b_->metrics_port());
  EXPECT_EQ(MetricSum(mb, "braid_auth_failures_total", {{"reason", "no_identity"}}), 1);
  EXPECT_EQ(MetricSum(mb, "braid_auth_failures_total", {{"reason", "bad_token"}}), 2);
}

TEST_F(SecurityTest, ACertificateRotatedOnDiskServesNewConnectionsWithoutARestart) {
  const pid_t pid = a_->pid();
  // A client that trusts only CA 2 cannot reach agent A yet (its certificate is from CA 1).
  EXPECT_EQ(Info(*Stub(*a_, Tls("ca2", "client-a"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  ReplaceFile(pki_->Path("agent-a-rotated.key"), pki_->Path("serving-agent-a.key"));
  ReplaceFile(pki_->Path("agent-a-rotated.crt"), pki_->Path("serving-agent-a.crt"));
  const auto t0 = std::chrono::steady_clock::now();
  bool rotated = false;
  while (!rotated && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    rotated = Info(*Stub(*a_, Tls("ca2", "client-a"))).ok();
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(rotated) << "the new certificate was not served within 10 s";
  std::printf("new certificate served %.1f s after it was written\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  // The old certificate is gone from new handshakes; the agent never restarted.
  EXPECT_EQ(Info(*Stub(*a_, Tls("ca1", "client-a"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(a_->pid(), pid);
  EXPECT_EQ(kill(pid, 0), 0);
}

// Client a's resources, with its transfers running; client b tries everything on them.
// A 4 KiB region of `stub`'s caller on its agent; its id, or why not.
grpc::Status RegisterSmall(v1::Agent::Stub& stub, uint64_t* id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::RegisterMemoryRequest request;
  request.set_length(4096);
  v1::RegionInfo region;
  const grpc::Status s = stub.RegisterMemory(&ctx, request, &region);
  *id = region.region_id();
  return s;
}

// A caller registering small regions without end (each is a mapping of the agent's, of which a
// process has at most vm.max_map_count: one caller took all 65,530 in 22 s, and then nobody could
// create a VQP or register memory) is stopped at its own limit, told which; another caller still
// registers and creates VQPs until the agent-wide limit, and a region deregistered makes room.
// The same for VQPs: a caller at its limit is refused, another still creates them.
TEST_F(SecurityTest, ACallerTakingRegionsAndVqpsWithoutEndIsStoppedAtItsOwnLimits) {
  a_.reset();
  a_ = Spawn(
      "agent-a", 0, "require",
      {"--max-regions-per-caller", "40", "--max-regions", "60", "--max-vqps-per-caller", "3"});
  ASSERT_TRUE(a_);
  auto greedy = Stub(*a_, Tls("ca1", "client-a"));
  auto other = Stub(*a_, Tls("ca1", "client-b"));
  std::vector<uint64_t> greedy_regions;
  grpc::Status refused;
  for (int i = 0; i < 100 && refused.ok(); ++i) {
    uint64_t id = 0;
    refused = RegisterSmall(*greedy, &id);
    if (refused.ok()) greedy_regions.push_back(id);
  }
  EXPECT_EQ(greedy_regions.size(), 40u);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("this caller holds 40 registered regions, its limit "
                                         "(max_regions_per_caller)"),
            std::string::npos)
      << refused.error_message();
  // The other caller has its own 40, of which the agent-wide 60 leave it 20.
  size_t other_regions = 0;
  grpc::Status other_refused;
  for (int i = 0; i < 100 && other_refused.ok(); ++i) {
    uint64_t id = 0;
    other_refused = RegisterSmall(*other, &id);
    if (other_refused.ok()) ++other_regions;
  }
  EXPECT_EQ(other_regions, 20u);
  EXPECT_EQ(other_refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(other_refused.error_message().find("the agent holds 60 registered regions, its limit "
                                               "(max_regions)"),
            std::string::npos)
      << other_refused.error_message();
  for (int i = 0; i < 3; ++i) EXPECT_NE(CreateVqp(*greedy, v1::SCHEME_SPRAY, 2).vqp_id(), 0u);
  {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest request;
    request.set_scheme(v1::SCHEME_SPRAY);
    request.set_num_qps(2);
    v1::VirtualQpInfo info;
    const grpc::Status s = greedy->CreateVirtualQp(&ctx, request, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(s.error_message().find("this caller has 3 VQPs, its limit (max_vqps_per_caller)"),
              std::string::npos)
        << s.error_message();
  }
  EXPECT_NE(CreateVqp(*other, v1::SCHEME_SPRAY, 8).vqp_id(), 0u);
  // Room comes back with a deregistered region.
  ASSERT_FALSE(greedy_regions.empty());
  grpc::ClientContext ctx;
  v1::DeregisterMemoryRequest dereg;
  dereg.set_region_id(greedy_regions.back());
  v1::DeregisterMemoryResponse dereg_out;
  ASSERT_TRUE(greedy->DeregisterMemory(&ctx, dereg, &dereg_out).ok());
  uint64_t id = 0;
  EXPECT_TRUE(RegisterSmall(*other, &id).ok());
}

TEST_F(SecurityTest, AClientCannotPutWhatItCreatesIntoAnotherClientsLeaseNorTakeItOver) {
  auto victim = Stub(*a_, Tls("ca1", "client-a"));
  auto other = Stub(*a_, Tls("ca1", "client-b"));
  HoldCall hold(*victim);
  ASSERT_NE(hold.lease(), 0u);
  grpc::ClientContext ctx;
  v1::CreateVirtualQpRequest request;
  request.set_scheme(v1::SCHEME_SPRAY);
  request.set_num_qps(1);
  request.set_lease_id(hold.lease());
  v1::VirtualQpInfo out;
  const grpc::Status s = other->CreateVirtualQp(&ctx, request, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << "as if it did not exist";
  grpc::ClientContext list_ctx;
  v1::ListVirtualQpsResponse all;
  ASSERT_TRUE(Stub(*a_, Tls("ca1", "admin"))->ListVirtualQps(&list_ctx, {}, &all).ok());
  EXPECT_EQ(all.vqps_size(), 0) << "nothing was created";
  HoldCall takeover(*other, hold.lease());
  EXPECT_EQ(takeover.lease(), 0u);
  EXPECT_EQ(takeover.refusal().error_code(), grpc::StatusCode::NOT_FOUND)
      << "another client cannot take a lease over";
}

TEST_F(SecurityTest, AnotherClientSeesAndTouchesNothingOfAClientsAndItsTransfersAllSucceed) {
  auto va = Stub(*a_, Tls("ca1", "client-a"));
  auto vb = Stub(*b_, Tls("ca1", "client-a"));
  const v1::VirtualQpInfo qa = CreateVqp(*va, v1::SCHEME_SPRAY, 4);
  const v1::VirtualQpInfo qb = CreateVqp(*vb, v1::SCHEME_SPRAY, 4);
  ConnectPair(*va, qa, *vb, qb);
  const v1::RegionInfo src = Register(*va, 64 * kMiB, "victim-src");
  const v1::RegionInfo dst = Register(*vb, 64 * kMiB, "victim-dst", {qb.vqp_id()});
  EXPECT_EQ(qa.owner(), kClientA);
  EXPECT_EQ(src.owner(), kClientA);
  {
    MappedRegion m(src.path(), src.length());
    FillPattern(m.data(), m.size(), 7);
  }
  // The victim keeps writing while the attacker works.
  std::atomic<bool> stop{false};
  uint64_t victim_ok = 0, victim_failed = 0;
  std::thread victim([&] {
    for (int round = 0; round < 3 || !stop.load(); ++round) {
      TransferRun run = RunTransfers(*va, MiBWrites(qa.vqp_id(), src, dst, 64));
      EXPECT_TRUE(run.status.ok()) << run.status.error_message();
      for (const auto& c : run.completions) (c.code() == 0 ? victim_ok : victim_failed)++;
    }
  });
  // A failed assertion below returns early: the victim still stops and is joined.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~Joiner() {
      stop.store(true);
      if (thread.joinable()) thread.join();
    }
  } joiner{stop, victim};

  auto attacker = Stub(*a_, Tls("ca1", "client-b"));
  auto attacker_b = Stub(*b_, Tls("ca1", "client-b"));
  const v1::VirtualQpInfo aq = CreateVqp(*attacker, v1::SCHEME_SPRAY, 2);
  const v1::VirtualQpInfo aqb = CreateVqp(*attacker_b, v1::SCHEME_SPRAY, 2);
  ConnectPair(*attacker, aq, *attacker_b, aqb);
  const v1::RegionInfo own = Register(*attacker, 4 * kMiB, "attacker");
  const v1::RegionInfo own_b = Register(*attacker_b, 4 * kMiB, "attacker", {aqb.vqp_id()});

  using Call = std::function<grpc::Status(v1::Agent::Stub&)>;
  struct Probe {
    const char* what;
    Call call;
    grpc::StatusCode expected;
  };
  // A Transfer stream with one operation: the operation's status.
  auto one_op = [](v1::Agent::Stub& s, v1::TransferOp op) {
    TransferRun run = RunTransfers(s, {op});
    if (!run.status.ok()) return run.status;
    if (run.completions.size() != 1) return grpc::Status(grpc::StatusCode::INTERNAL, "no result");
    return grpc::Status(static_cast<grpc::StatusCode>(run.completions[0].code()),
                        run.completions[0].message());
  };
  const std::vector<Probe> probes = {
      {"GetVirtualQp of the victim's VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::GetVirtualQpRequest r;
         r.set_vqp_id(qa.vqp_id());
         v1::VirtualQpInfo out;
         return s.GetVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"DestroyVirtualQp of the victim's VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DestroyVirtualQpRequest r;
         r.set_vqp_id(qa.vqp_id());
         v1::DestroyVirtualQpResponse out;
         return s.DestroyVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"ConnectVirtualQp of the victim's VQP to the victim's peer",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::ConnectVirtualQpRequest r;
         r.set_vqp_id(qa.vqp_id());
         *r.mutable_remote_card() = qb.card();
         v1::VirtualQpInfo out;
         return s.ConnectVirtualQp(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"DeregisterMemory of the victim's region",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DeregisterMemoryRequest r;
         r.set_region_id(src.region_id());
         v1::DeregisterMemoryResponse out;
         return s.DeregisterMemory(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"WatchNotifications of the victim's VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::WatchNotificationsRequest r;
         r.set_vqp_id(qa.vqp_id());
         auto reader = s.WatchNotifications(&c, r);
         v1::WatchNotificationsResponse out;
         while (reader->Read(&out)) {
         }
         return reader->Finish();
       },
       grpc::StatusCode::NOT_FOUND},
      {"a WRITE on the victim's VQP",
       [&](v1::Agent::Stub& s) {
         return one_op(s, Transfers(v1::OP_WRITE, qa.vqp_id(), own, dst, kMiB, 1, 1)[0]);
       },
       grpc::StatusCode::NOT_FOUND},
      {"a WRITE from the victim's region on its own VQP",
       [&](v1::Agent::Stub& s) {
         return one_op(s, Transfers(v1::OP_WRITE, aq.vqp_id(), src, own_b, kMiB, 1, 1)[0]);
       },
       grpc::StatusCode::NOT_FOUND},
      {"GrantAccess of the victim's region to its own VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::GrantAccessRequest r;
         r.set_region_id(src.region_id());
         r.set_vqp_id(aq.vqp_id());
         v1::RemoteRegion out;
         return s.GrantAccess(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"GrantAccess of its own region to the victim's VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::GrantAccessRequest r;
         r.set_region_id(own.region_id());
         r.set_vqp_id(qa.vqp_id());
         v1::RemoteRegion out;
         return s.GrantAccess(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"RevokeAccess of the victim's grant (on agent B, where it is)",
       [&](v1::Agent::Stub&) {
         grpc::ClientContext c;
         v1::RevokeAccessRequest r;
         r.set_region_id(dst.region_id());
         r.set_vqp_id(qb.vqp_id());
         v1::RevokeAccessResponse out;
         return attacker_b->RevokeAccess(&c, r, &out);
       },
       grpc::StatusCode::NOT_FOUND},
      {"DrainDevice",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DrainDeviceRequest r;
         r.set_device("soft0");
         v1::Device out;
         return s.DrainDevice(&c, r, &out);
       },
       grpc::StatusCode::PERMISSION_DENIED},
      {"UndrainDevice",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::DrainDeviceRequest r;
         r.set_device("soft0");
         v1::Device out;
         return s.UndrainDevice(&c, r, &out);
       },
       grpc::StatusCode::PERMISSION_DENIED},
      {"WatchEvents",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         auto reader = s.WatchEvents(&c, {});
         v1::WatchEventsResponse out;
         while (reader->Read(&out)) {
         }
         return reader->Finish();
       },
       grpc::StatusCode::PERMISSION_DENIED},
      {"InjectFault (break the victim's QP)",
       [&](v1::Agent::Stub& s) { return BreakQp(s, qa.vqp_id(), 0); },
       grpc::StatusCode::PERMISSION_DENIED},
      {"RecoverQp on the victim's VQP",
       [&](v1::Agent::Stub& s) {
         grpc::ClientContext c;
         v1::RecoverQpRequest r;
         r.set_vqp_id(qa.vqp_id());
         v1::RecoverQpResponse out;
         return s.RecoverQp(&c, r, &out);
       },
       grpc::StatusCode::PERMISSION_DENIED},
  };
  for (const Probe& p : probes) {
    const grpc::Status s = p.call(*attacker);
    EXPECT_EQ(s.error_code(), p.expected) << p.what << ": " << s.error_message();
  }
  // The attacker learned the victim's remote region (address and rkeys) and aims its own connected
  // VQP at it, claiming the grant is for its own peer VQP: the peer's NIC refuses, because the
  // region is registered only in the protection domain of the victim's granted VQP and the
  // attacker's QPs are in their own. (The QPs such an operation hits die, as on an HCA: each
  // attempt gets a VQP pair of its own.)
  for (v1::Op op : {v1::OP_WRITE, v1::OP_READ}) {
    const v1::VirtualQpInfo x = CreateVqp(*attacker, v1::SCHEME_SPRAY, 2);
    const v1::VirtualQpInfo xb = CreateVqp(*attacker_b, v1::SCHEME_SPRAY, 2);
    ConnectPair(*attacker, x, *attacker_b, xb);
    std::vector<v1::TransferOp> forged = Transfers(op, x.vqp_id(), own, dst, kMiB, 1, 1);
    forged[0].mutable_remote()->set_vqp_id(xb.vqp_id());
    TransferRun run = RunTransfers(*attacker, forged);
    DestroyVqp(*attacker, x.vqp_id());
    DestroyVqp(*attacker_b, xb.vqp_id());
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.completions.size(), 1u);
    EXPECT_NE(run.completions[0].code(), 0);
    EXPECT_EQ(run.completions[0].wc_status(), "rem_access_err")
        << v1::Op_Name(op) << ": " << run.completions[0].message();
  }
  // Lists show the attacker its own only.
  {
    grpc::ClientContext c;
    v1::ListVirtualQpsResponse vqps;
    ASSERT_TRUE(attacker->ListVirtualQps(&c, {}, &vqps).ok());
    ASSERT_EQ(vqps.vqps_size(), 1);
    EXPECT_EQ(vqps.vqps(0).vqp_id(), aq.vqp_id());
    grpc::ClientContext c2;
    v1::ListRegionsResponse regions;
    ASSERT_TRUE(attacker->ListRegions(&c2, {}, &regions).ok());
    ASSERT_EQ(regions.regions_size(), 1);
    EXPECT_EQ(regions.regions(0).region_id(), own.region_id());
  }
  // Another agent (role peer) may not act as a client.
  {
    grpc::ClientContext c;
    v1::CreateVirtualQpRequest r;
    r.set_scheme(v1::SCHEME_SPRAY);
    v1::VirtualQpInfo out;
    const grpc::Status s = Stub(*a_, Tls("ca1", "agent-b"))->CreateVirtualQp(&c, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_EQ(s.error_message(),
              "spiffe://braid/agent/b (role peer) may not call CreateVirtualQp: it needs the "
              "client role or above");
  }
  // Recovery is pinned to the agent whose card the VQP was connected with (agent B): agent A's
  // own identity, a peer too, is told the VQP does not exist; agent B gets past the check (to a
  // QP index out of range, so nothing is reset).
  EXPECT_EQ(qb.card().agent_identity(), "spiffe://braid/agent/b");
  auto recover_as = [&](const std::string& cert) {
    grpc::ClientContext c;
    v1::RecoverQpRequest r;
    r.set_vqp_id(qa.vqp_id());
    r.set_qp_index(99);
    *r.mutable_qp() = qb.card().data_qps(0);
    r.set_epoch(qb.card().epoch() + 1);
    r.set_from_endpoint(qb.card().control_endpoint());
    r.set_from_vqp_id(qb.vqp_id());
    r.set_from_incarnation(qb.card().incarnation());
    r.set_to_incarnation(qa.card().incarnation());
    v1::RecoverQpResponse out;
    return Stub(*a_, Tls("ca1", cert))->RecoverQp(&c, r, &out);
  };
  const grpc::Status impostor = recover_as("agent-a");
  EXPECT_EQ(impostor.error_code(), grpc::StatusCode::NOT_FOUND) << impostor.error_message();
  const grpc::Status pinned = recover_as("agent-b");
  EXPECT_EQ(pinned.error_code(), grpc::StatusCode::OUT_OF_RANGE) << pinned.error_message();
  // A card already connected is refused to a second VQP.
  {
    const v1::VirtualQpInfo second = CreateVqp(*va, v1::SCHEME_SPRAY, 4);
    grpc::ClientContext c;
    v1::ConnectVirtualQpRequest r;
    r.set_vqp_id(second.vqp_id());
    *r.mutable_remote_card() = qb.card();
    v1::VirtualQpInfo out;
    const grpc::Status s = va->ConnectVirtualQp(&c, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
    DestroyVqp(*va, second.vqp_id());
  }
  // The operator sees every client's VQPs, with their owners.
  {
    grpc::ClientContext c;
    v1::ListVirtualQpsResponse vqps;
    ASSERT_TRUE(Stub(*a_, Tls("ca1", "operator"))->ListVirtualQps(&c, {}, &vqps).ok());
    ASSERT_EQ(vqps.vqps_size(), 2);
    EXPECT_EQ(vqps.vqps(0).owner(), kClientA);
    EXPECT_EQ(vqps.vqps(1).owner(), "spiffe://braid/client/b");
  }
  stop.store(true);
  victim.join();
  EXPECT_GT(victim_ok, 0u);
  EXPECT_EQ(victim_failed, 0u);
  {
    MappedRegion s(src.path(), src.length());
    MappedRegion d(dst.path(), dst.length());
    EXPECT_EQ(Checksum(s.data(), s.size()), Checksum(d.data(), d.size()));
  }
  // An admin breaks one of the victim's QPs: the agents recover it between themselves over mutual
  // TLS (RecoverQp from agent A, whose certificate is a peer's on agent B).
  {
    ASSERT_TRUE(BreakQp(a_->stub(), qa.vqp_id(), 1).ok());
    TransferRun run = RunTransfers(*va, MiBWrites(qa.vqp_id(), src, dst, 64));
    for (const auto& done : run.completions) EXPECT_EQ(done.code(), 0) << done.message();
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t recoveries = 0;
    while (recoveries == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(15)) {
      const v1::VirtualQpInfo now = GetVqp(*a_, qa.vqp_id());
      for (const auto& q : now.qps()) recoveries += q.recoveries();
      if (recoveries == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_GT(recoveries, 0u) << "the broken QP was not recovered over mutual TLS";
  }
  std::printf(
      "victim: %lu writes of 1 MiB succeeded, %lu failed, bytes identical; attacker: %zu "
      "probes refused\n",
      static_cast<unsigned long>(victim_ok), static_cast<unsigned long>(victim_failed),
      probes.size());
  const std::string m = ScrapeMetrics(a_->metrics_port());
  EXPECT_EQ(MetricSum(m, "braid_denied_requests_total", {{"rpc", "DrainDevice"}}), 1);
  EXPECT_EQ(MetricSum(m, "braid_denied_requests_total", {{"rpc", "CreateVirtualQp"}}), 1);
  EXPECT_EQ(MetricSum(m, "braid_denied_requests_total", {{"reason", "role"}}), 6);
}

// Within one client too, a region is reachable only through the VQPs it is granted to: a VQP
// granted later reaches it, one never granted gets a remote access error from the NIC, and a
// revoked grant fails the very next access (and shows as an access_revoked event).
TEST_F(SecurityTest, ARegionIsReachableOnlyThroughItsGrantedVqpsAndARevokedGrantFailsAtOnce) {
  auto va = Stub(*a_, Tls("ca1", "client-a"));
  auto vb = Stub(*b_, Tls("ca1", "client-a"));
  struct VqpPair {
    v1::VirtualQpInfo a, b;
  };
  std::vector<VqpPair> pairs(3);
  for (VqpPair& p : pairs) {
    p.a = CreateVqp(*va, v1::SCHEME_SPRAY, 2);
    p.b = CreateVqp(*vb, v1::SCHEME_SPRAY, 2);
    ConnectPair(*va, p.a, *vb, p.b);
  }
  const v1::RegionInfo src = Register(*va, 4 * kMiB, "src");
  const v1::RegionInfo dst = Register(*vb, 4 * kMiB, "dst", {pairs[0].b.vqp_id()});
  MappedRegion s(src.path(), src.length()), d(dst.path(), dst.length());
  ASSERT_TRUE(s.data() && d.data());
  auto operator_b = Stub(*b_, Tls("ca1", "operator"));
  EventCollector events(*operator_b);
  ASSERT_TRUE(events.subscribed());
  // One MiB write through pair `i` aimed at `target`: its completion.
  auto write = [&](size_t i, const v1::RemoteRegion& target, uint64_t seed) {
    FillPattern(s.data(), kMiB, seed);
    std::vector<v1::TransferOp> ops =
        Transfers(v1::OP_WRITE, pairs[i].a.vqp_id(), src, dst, kMiB, 1, 1);
    *ops[0].mutable_remote() = target;
    TransferRun run = RunTransfers(*va, ops);
    EXPECT_TRUE(run.status.ok()) << run.status.error_message();
    return run.completions.empty() ? v1::TransferCompletion() : run.completions[0];
  };
  const v1::RemoteRegion granted = GrantOf(dst);
  EXPECT_EQ(granted.vqp_id(), pairs[0].b.vqp_id());
  v1::TransferCompletion c = write(0, granted, 1);
  EXPECT_EQ(c.code(), 0) << c.message();
  EXPECT_EQ(Checksum(d.data(), kMiB), Checksum(s.data(), kMiB));

  // Pair 1 was never granted: the agent says so, and a forged claim meets the NIC's refusal.
  c = write(1, granted, 2);
  EXPECT_EQ(c.code(), grpc::StatusCode::FAILED_PRECONDITION) << c.message();
  v1::RemoteRegion forged = granted;
  forged.set_vqp_id(pairs[1].b.vqp_id());
  c = write(1, forged, 3);
  EXPECT_EQ(c.wc_status(), "rem_access_err") << c.message();

  // Pair 2 granted now: its own keys, and it reaches the region.
  grpc::ClientContext gc;
  v1::GrantAccessRequest grant;
  grant.set_region_id(dst.region_id());
  grant.set_vqp_id(pairs[2].b.vqp_id());
  v1::RemoteRegion later;
  ASSERT_TRUE(vb->GrantAccess(&gc, grant, &later).ok());
  ASSERT_EQ(later.keys_size(), granted.keys_size());
  for (int k = 0; k < later.keys_size(); ++k)
    EXPECT_NE(later.keys(k).rkey(), granted.keys(k).rkey());
  c = write(2, later, 4);
  EXPECT_EQ(c.code(), 0) << c.message();
  EXPECT_EQ(Checksum(d.data(), kMiB), Checksum(s.data(), kMiB));

  // Pair 0's grant revoked: its next write fails at the NIC; pair 2's grant still works.
  auto revoke = [&](uint64_t vqp) {
    grpc::ClientContext rc;
    v1::RevokeAccessRequest r;
    r.set_region_id(dst.region_id());
    r.set_vqp_id(vqp);
    v1::RevokeAccessResponse out;
    return vb->RevokeAccess(&rc, r, &out);
  };
  ASSERT_TRUE(revoke(pairs[0].b.vqp_id()).ok());
  c = write(0, granted, 5);
  EXPECT_EQ(c.wc_status(), "rem_access_err") << c.message();
  EXPECT_EQ(revoke(pairs[0].b.vqp_id()).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(events.WaitFor("access_revoked", pairs[0].b.vqp_id(), 5000));
  c = write(2, later, 6);
  EXPECT_EQ(c.code(), 0) << c.message();
  EXPECT_EQ(Checksum(d.data(), kMiB), Checksum(s.data(), kMiB));
  grpc::ClientContext lc;
  v1::ListRegionsResponse listed;
  ASSERT_TRUE(vb->ListRegions(&lc, {}, &listed).ok());
  ASSERT_EQ(listed.regions_size(), 1);
  ASSERT_EQ(listed.regions(0).grants_size(), 1);
  EXPECT_EQ(listed.regions(0).grants(0).vqp_id(), pairs[2].b.vqp_id());
}

}  // namespace
}  // namespace braid::testing
