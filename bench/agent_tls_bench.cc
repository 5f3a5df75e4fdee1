// What mutual TLS costs through braidd agents.
// - 1 MiB WRITE throughput through the Transfer stream (8-QP SPRAY VQP, two soft NICs per agent),
//   plaintext agent pairs and mutual-TLS agent pairs in alternating rounds; medians of the rounds.
// - Control-call latency on an open connection (GetInfo, the health check, CreateVirtualQp +
//   DestroyVirtualQp): a plaintext agent and a mutual-TLS agent side by side, calls interleaved
//   in blocks of 100, p50 of all calls.
// - The floor: the same interleaved echo call on bare gRPC, plaintext and mutual TLS, no Braid.
//
// Usage: braid_agent_tls_bench [rounds]   (default 3; 0: control calls only)
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "tests/agent/agent_harness.h"

namespace {

using braid::testing::AgentProcess;
using braid::testing::AgentSpec;
using braid::testing::TestNicIp;
namespace v1 = braid::v1;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRegion = 256 * kMiB;

struct Round {
  double write_gbs = 0;
  double call_p50_us = 0;    // GetInfo: the agent's service and its engine
  double health_p50_us = 0;  // gRPC's health service: the transport alone
  double vqp_p50_us = 0;     // CreateVirtualQp (8 QPs) + DestroyVirtualQp: control calls at work
  bool ok = true;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Agent `i` of two ("agent-a", "agent-b"), two soft NICs, with mutual TLS or plaintext.
std::unique_ptr<AgentProcess> SpawnAgent(int i, bool tls, const braid::testing::TestPki& pki) {
  const std::string name = i == 0 ? "agent-a" : "agent-b";
  AgentSpec spec{name, {TestNicIp(i, 0), TestNicIp(i, 1)}, i * 2};
  if (tls) {
    spec.security_args = pki.AgentArgs(name, "require", "");
    spec.credentials = pki.Tls("ca1", "client-a");
  }
  return AgentProcess::Spawn(spec);
}

Round Measure(bool tls, const braid::testing::TestPki& pki) {
  Round out;
  std::unique_ptr<AgentProcess> agents[2];
  for (int i = 0; i < 2; ++i) {
    agents[i] = SpawnAgent(i, tls, pki);
    if (!agents[i]) {
      out.ok = false;
      return out;
    }
  }
  AgentProcess& a = *agents[0];
  AgentProcess& b = *agents[1];
  auto va = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 8);
  auto vb = braid::testing::CreateVqp(b.stub(), v1::SCHEME_SPRAY, 8);
  braid::testing::ConnectPair(a.stub(), va, b.stub(), vb);
  auto src = braid::testing::Register(a.stub(), kRegion, "src");
  auto dst = braid::testing::Register(b.stub(), kRegion, "dst", {vb.vqp_id()});
  auto writes = [&](uint64_t count) {
    return braid::testing::Transfers(v1::OP_WRITE, va.vqp_id(), src, dst, kMiB, count,
                                     kRegion / kMiB);
  };
  braid::testing::RunTransfers(a.stub(), writes(256));  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  braid::testing::TransferRun run = braid::testing::RunTransfers(a.stub(), writes(2048));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = 0;
  out.ok = run.status.ok() && run.completions.size() == 2048;
  for (const auto& c : run.completions) {
    out.ok = out.ok && c.code() == 0;
    bytes += c.bytes();
  }
  out.write_gbs = static_cast<double>(bytes) / seconds / 1e9;
  std::vector<double> calls;
  for (int i = 0; i < 2000; ++i) {
    grpc::ClientContext ctx;
    v1::AgentInfo info;
    const auto c0 = std::chrono::steady_clock::now();
    out.ok = out.ok && a.stub().GetInfo(&ctx, {}, &info).ok();
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.call_p50_us = Median(calls);
  calls.clear();
  for (int i = 0; i < 2000; ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    out.ok = out.ok && braid::testing::HealthStatus(a.channel()) == 1;
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.health_p50_us = Median(calls);
  calls.clear();
  for (int i = 0; i < 300; ++i) {
    const auto c0 = std::chrono::steady_clock::now();
    const v1::VirtualQpInfo v = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 8);
    braid::testing::DestroyVqp(a.stub(), v.vqp_id());
    out.ok = out.ok && v.vqp_id() != 0;
    calls.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  }
  out.vqp_p50_us = Median(calls);
  return out;
}

// Control-call latency, plaintext and mutual TLS interleaved: one plaintext agent and one mTLS
// agent run side by side and the calls alternate between them in small blocks, so drift in the
// machine's state (other processes, frequency, caches) lands on both sides alike.
struct Calls {
  std::vector<double> info[2], health[2], vqp[2];  // [0] plaintext, [1] mTLS
  bool ok = true;
};

template <typename F>
void Time(std::vector<double>* out, F&& call) {
  const auto c0 = std::chrono::steady_clock::now();
  call();
  out->push_back(
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
}

Calls MeasureCalls(const braid::testing::TestPki& pki, int blocks) {
  Calls out;
  std::unique_ptr<AgentProcess> agents[2];
  for (int i = 0; i < 2; ++i) {
    agents[i] = SpawnAgent(i, /*tls=*/i == 1, pki);
    if (!agents[i]) {
      out.ok = false;
      return out;
    }
  }
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < 2; ++t) {
      AgentProcess& a = *agents[(b + t) % 2];
      const int side = (b + t) % 2;
      for (int i = 0; i < 100; ++i) {
        Time(&out.info[side], [&] {
          grpc::ClientContext ctx;
          v1::AgentInfo info;
          out.ok = out.ok && a.stub().GetInfo(&ctx, {}, &info).ok();
        });
        Time(&out.health[side],
             [&] { out.ok = out.ok && braid::testing::HealthStatus(a.channel()) == 1; });
      }
      for (int i = 0; i < 10; ++i) {
        Time(&out.vqp[side], [&] {
          const v1::VirtualQpInfo v = braid::testing::CreateVqp(a.stub(), v1::SCHEME_SPRAY, 8);
          braid::testing::DestroyVqp(a.stub(), v.vqp_id());
          out.ok = out.ok && v.vqp_id() != 0;
        });
      }
    }
  }
  return out;
}

// The floor: gRPC alone, no Braid. One in-process server answers an echo call on a plaintext port
// and on a mutual-TLS port (the agents' test certificates); the calls alternate as above. What
// mTLS adds here is what Debian's gRPC and OpenSSL add to any unary call on this machine.
class Echo final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      Reactor() { StartRead(&message_); }
      void OnReadDone(bool ok) override {
        if (ok) {
          StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
        } else {
          Finish(grpc::Status::OK);
        }
      }
      void OnDone() override { delete this; }  // gRPC's reactor contract: it owns itself

     private:
      grpc::ByteBuffer message_;
    };
    return new Reactor;
  }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool MeasureBareGrpc(const braid::testing::TestPki& pki, int blocks, std::vector<double> out[2]) {
  Echo echo;
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = ReadFile(pki.Path("ca1.crt"));
  tls.pem_key_cert_pairs.push_back(
      {ReadFile(pki.Path("agent-a.key")), ReadFile(pki.Path("agent-a.crt"))});
  int ports[2] = {0, 0};
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &ports[0]);
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(tls), &ports[1]);
  builder.RegisterCallbackGenericService(&echo);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return false;
  std::unique_ptr<grpc::GenericStub> stubs[2] = {
      std::make_unique<grpc::GenericStub>(grpc::CreateChannel(
          "127.0.0.1:" + std::to_string(ports[0]), grpc::InsecureChannelCredentials())),
      std::make_unique<grpc::GenericStub>(grpc::CreateChannel(
          "127.0.0.1:" + std::to_string(ports[1]), pki.Tls("ca1", "client-a")))};
  bool ok = true;
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < 2; ++t) {
      const int side = (b + t) % 2;
      for (int i = 0; i < 100; ++i) {
        Time(&out[side], [&] {
          grpc::ClientContext ctx;
          grpc::Slice empty;
          grpc::ByteBuffer request(&empty, 1), response;
          std::promise<grpc::Status> done;
          stubs[side]->UnaryCall(&ctx, "/bench.Echo/Echo", grpc::StubOptions(), &request, &response,
                                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
          ok = ok && done.get_future().get().ok();
        });
      }
    }
  }
  server->Shutdown();
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  auto pki = braid::testing::TestPki::Make();
  if (!pki) return 1;
  std::vector<double> plain_w, tls_w;
  for (int r = 0; r < rounds; ++r) {
    for (bool tls : {false, true}) {
      const Round m = Measure(tls, *pki);
      if (!m.ok) {
        std::fprintf(stderr, "agent_tls_bench: a %s round failed\n", tls ? "TLS" : "plaintext");
        return 1;
      }
      std::printf("round %d %-9s 1 MiB WRITE %.3f GB/s\n", r + 1, tls ? "mTLS" : "plaintext",
                  m.write_gbs);
      (tls ? tls_w : plain_w).push_back(m.write_gbs);
    }
  }
  const Calls calls = MeasureCalls(*pki, 10 * std::max(rounds, 1));
  std::vector<double> bare[2];
  if (!calls.ok || !MeasureBareGrpc(*pki, 10 * std::max(rounds, 1), bare)) {
    std::fprintf(stderr, "agent_tls_bench: a control call failed\n");
    return 1;
  }
  std::printf("%-50s %10s %10s %8s\n", "through two agents", "plaintext", "mTLS", "ratio");
  if (rounds > 0) {
    const double w0 = Median(plain_w), w1 = Median(tls_w);
    std::printf("%-50s %10.3f %10.3f %8.3f  (GB/s, median of rounds; throughput kept)\n",
                "8-QP SPRAY VQP, 2 NICs each, 1 MiB WRITE", w0, w1, w1 / w0);
  }
  const struct {
    const char* what;
    const std::vector<double>* samples;
  } rows[] = {{"control call (GetInfo) p50, open connection", calls.info},
              {"gRPC health check p50, open connection", calls.health},
              {"CreateVirtualQp (8 QPs) + DestroyVirtualQp p50", calls.vqp},
              {"floor: bare gRPC echo (no Braid) p50", bare}};
  for (const auto& row : rows) {
    const double c0 = Median(row.samples[0]), c1 = Median(row.samples[1]);
    std::printf("%-50s %10.1f %10.1f %8.3f  (us, %zu calls each, interleaved; latency added)\n",
                row.what, c0, c1, c1 / c0, row.samples[0].size());
  }
  return 0;
}
