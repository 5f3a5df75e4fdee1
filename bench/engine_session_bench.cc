// The engine's own cost on the local data path: an engine over the null provider (a write
// completes the moment it is posted and moves no bytes) driven through a session's rings by one
// client thread, next to the same writes submitted one command each through
// Engine::SubmitTransfer (the path the gRPC server uses today). Both figures are from the same
// run, on the same VQP. Every completion's status is checked; a run with a failure exits 1.
//
// Usage: braid_engine_session_bench [ops] [qps per VQP]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/engine/engine.h"
#include "dataplane/session/session_client.h"
#include "tests/testutil/null_provider.h"

namespace {

using braid::engine::Engine;
namespace engine = braid::engine;
namespace session = braid::session;

constexpr uint64_t kOpBytes = 4096;
constexpr uint64_t kRegionBytes = 64ull << 20;
constexpr uint32_t kRing = 1024;
constexpr uint32_t kBatch = 64;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void Print(const char* path, uint64_t ops, double seconds) {
  std::printf("%-44s %10.3f Mops/s %8.1f ns/op  (%llu ops in %.3f s)\n", path, ops / seconds / 1e6,
              seconds * 1e9 / static_cast<double>(ops), static_cast<unsigned long long>(ops),
              seconds);
}

// `ops` 4 KiB writes through a session's rings, batches of kBatch; false on any failure.
bool RunRing(Engine& e, uint64_t vqp, uint64_t region, const engine::RemoteRegion& remote,
             uint64_t ops) {
  auto fds = e.OpenSession({.rings = {kRing, kRing, kRing}});
  if (!fds.ok()) return std::fprintf(stderr, "%s\n", fds.status().ToString().c_str()), false;
  auto handle = e.BindRemote(fds->id, vqp, remote);
  if (!handle.ok()) return std::fprintf(stderr, "%s\n", handle.status().ToString().c_str()), false;
  auto client = session::SessionClient::Attach(fds->segment.release(), fds->submit_bell.release(),
                                               fds->complete_bell.release());
  if (!client.ok()) return std::fprintf(stderr, "%s\n", client.status().ToString().c_str()), false;
  std::vector<session::SubmitEntry> batch(kBatch);
  std::vector<session::CompletionEntry> out(kBatch * 2);
  uint64_t submitted = 0, done = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  while (done < ops) {
    if (submitted < ops) {
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kBatch, ops - submitted));
      for (uint32_t i = 0; i < n; ++i) {
        session::SubmitEntry& s = batch[i];
        s = {};
        s.user_data = submitted + i;
        s.vqp_id = vqp;
        s.local_region = static_cast<uint32_t>(region);
        s.remote_region = *handle;
        s.local_offset = s.remote_offset = ((submitted + i) * kOpBytes) % kRegionBytes;
        s.length = kOpBytes;
        s.op = static_cast<uint8_t>(session::RingOp::kWrite);
      }
      submitted += (*client)->Submit({batch.data(), n});
    }
    const uint32_t n = (*client)->Reap(out);
    for (uint32_t i = 0; i < n; ++i) failed += out[i].status != 0 ? 1 : 0;
    done += n;
  }
  const double seconds = Seconds(start);
  Print("engine over the null provider, session ring", ops, seconds);
  (void)e.CloseSession(fds->id);
  if (failed != 0) std::fprintf(stderr, "%llu ring ops failed\n", (unsigned long long)failed);
  return failed == 0;
}

// The same writes, one SubmitTransfer command each, at most kRing in flight.
bool RunCommands(Engine& e, uint64_t vqp, uint64_t region, const engine::RemoteRegion& remote,
                 uint64_t ops) {
  auto sink = std::make_shared<engine::TransferSink>(kRing * 2);
  uint64_t submitted = 0, done = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  while (done < ops) {
    while (submitted < ops && submitted - done < kRing) {
      engine::TransferRequest t;
      t.op_id = submitted;
      t.vqp_id = vqp;
      t.op = engine::TransferOp::kWrite;
      t.local_region = region;
      t.local_offset = t.remote_offset = (submitted * kOpBytes) % kRegionBytes;
      t.remote = remote;
      t.length = kOpBytes;
      if (!e.SubmitTransfer(t, sink).ok()) break;  // the command queue is full: reap first
      ++submitted;
    }
    bool any = false;
    while (auto r = sink->results.TryPop()) {
      failed += r->status.ok() ? 0 : 1;
      ++done;
      any = true;
    }
    if (!any) sink->results.Wait(1);
  }
  Print("engine over the null provider, command queue", ops, Seconds(start));
  if (failed != 0) std::fprintf(stderr, "%llu commanded ops failed\n", (unsigned long long)failed);
  return failed == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t ops = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 4'000'000;
  const uint32_t qps = argc > 2 ? static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10)) : 8;
  // Two engines (a transfer targets a peer agent's memory); only the first one works.
  braid::testing::NullProvider provider, peer_provider;
  engine::EngineOptions o;
  o.provider = &provider;
  o.agent_id = "session-bench";
  o.region_dir = "/dev/shm/braid-session-bench-" + std::to_string(getpid());
  std::filesystem::create_directories(o.region_dir);
  engine::EngineOptions peer_options = o;
  peer_options.provider = &peer_provider;
  peer_options.agent_id = "session-bench-peer";
  int rc = 1;
  {
    auto started = Engine::Start(o);
    auto peer = Engine::Start(peer_options);
    if (!started.ok() || !peer.ok()) {
      std::fprintf(stderr, "engine: %s %s\n", started.status().ToString().c_str(),
                   peer.status().ToString().c_str());
      std::filesystem::remove_all(o.region_dir);
      return 1;
    }
    Engine& e = **started;
    Engine& p = **peer;
    engine::CreateVqpRequest r;
    r.config.num_qps = qps;
    auto va = e.CreateVirtualQp(r);
    auto vb = p.CreateVirtualQp(r);
    if (va.ok() && vb.ok() && e.ConnectVirtualQp(va->id, vb->card).ok() &&
        p.ConnectVirtualQp(vb->id, va->card).ok()) {
      auto local =
          e.RegisterMemory({.length = kRegionBytes, .label = "src", .grant_vqps = {va->id}});
      auto remote =
          p.RegisterMemory({.length = kRegionBytes, .label = "dst", .grant_vqps = {vb->id}});
      if (local.ok() && remote.ok()) {
        std::printf("%llu 4 KiB writes, one client thread, %u-QP %s VQP, ring %u, batch %u\n",
                    static_cast<unsigned long long>(ops), qps, qps > 1 ? "multi-QP" : "single-QP",
                    kRing, kBatch);
        const bool ring = RunRing(e, va->id, local->id, remote->grants[0], ops);
        const bool commands = RunCommands(e, va->id, local->id, remote->grants[0], ops / 4);
        rc = ring && commands ? 0 : 1;
      } else {
        std::fprintf(stderr, "register: %s %s\n", local.status().ToString().c_str(),
                     remote.status().ToString().c_str());
      }
    } else {
      std::fprintf(stderr, "could not create and connect two VQPs on the null provider\n");
    }
  }
  std::filesystem::remove_all(o.region_dir);
  return rc;
}
