// Issue 9's operator scenarios in network namespaces (netns_recovery_test.sh runs them):
//   "drain"     drain soft1 under a stream of 1 MiB writes, undrain it later;
//   "peer-kill" SIGKILL the peer agent mid-stream, restart it, reconnect through the SDK;
//   "port"      links going down and up with no traffic; the peer started with every link down.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <string>
#include <vector>

#include "tests/integration/netns_scenarios.h"

namespace braid::netns {
namespace {

using namespace braid::client;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1 << 20;

// The QPs of `vqp` on `device`: bytes they wrote, WRs outstanding, and whether all are draining.
struct DeviceQps {
  uint64_t bytes = 0;
  uint32_t outstanding = 0;
  bool all_draining = true;
  bool all_healthy = true;
  int count = 0;
};
DeviceQps OnDevice(AgentClient& a, uint64_t vqp, const std::string& device) {
  DeviceQps d;
  auto info = a.GetVqp(vqp);
  if (!info.ok()) return d;
  for (const auto& q : info->qps()) {
    if (q.device() != device || q.message_qp()) continue;
    ++d.count;
    d.bytes += q.bytes_written();
    d.outstanding += q.outstanding_wrs();
    d.all_draining &= q.health() == v1::QP_HEALTH_DRAINING;
    d.all_healthy &= q.health() == v1::QP_HEALTH_HEALTHY;
  }
  return d;
}

}  // namespace

TransferOp Write(const Region& src, const Region& dst, uint64_t i, double timeout_s) {
  TransferOp op;
  op.local_region = src.id();
  op.local_offset = (i % 256) * kMiB;
  op.remote = dst.info().grants(0);
  op.remote_offset = (i % 256) * kMiB;
  op.length = kMiB;
  op.timeout = std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  return op;
}

namespace {

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

// Drain soft1 at 1 s, look at its QPs from 1.5 s until nothing is outstanding (by 2.9 s) and at
// 3 s (no byte more, nothing outstanding, all draining), undrain at 3 s, stop at 4.5 s: zero
// failures, data identical, soft1 carries again.
int DrainScenario(AgentClient& a, uint64_t vqp, TransferSession& session, const Region& src,
                  const Region& dst) {
  const std::string kDevice = "soft1";
  const auto t0 = Clock::now();
  std::deque<std::future<TransferResult>> inflight;
  uint64_t ok = 0, failed = 0;
  int stage = 0;
  DeviceQps at_drain, settled, at_undrain, end;
  double settled_at = 0;
  std::string error;
  auto reap = [&] {
    auto r = inflight.front().get();
    inflight.pop_front();
    if (r.status.ok()) {
      ++ok;
    } else if (failed++ == 0) {
      error = r.status.ToString();
    }
  };
  for (uint64_t i = 0; Since(t0) < 4.5; ++i) {
    const double t = Since(t0);
    if (stage == 0 && t >= 1.0) {
      at_drain = OnDevice(a, vqp, kDevice);
      auto d = a.DrainDevice(kDevice);
      if (!d.ok()) std::fprintf(stderr, "drain: %s\n", d.status().ToString().c_str());
      stage = 1;
    } else if (stage == 1 && t >= 1.5) {
      // In-flight work finishes where it is (a shaped link may need a while: a TCP loss there
      // stalls it for a retransmission timeout); no new work is taken.
      settled = OnDevice(a, vqp, kDevice);
      settled_at = t;
      if (settled.outstanding == 0 || t >= 2.9) stage = 2;
    } else if (stage == 2 && t >= 3.0) {
      at_undrain = OnDevice(a, vqp, kDevice);
      auto d = a.UndrainDevice(kDevice);
      if (!d.ok()) std::fprintf(stderr, "undrain: %s\n", d.status().ToString().c_str());
      stage = 3;
    }
    inflight.push_back(session.Submit(Write(src, dst, i, 30)));
    while (inflight.size() >= 128) reap();
  }
  while (!inflight.empty()) reap();
  end = OnDevice(a, vqp, kDevice);
  const bool same = std::memcmp(src.data(), dst.data(), 256 * kMiB) == 0;
  std::printf(
      "drain %s at 1 s under 1 MiB writes: its %d QPs had written %.1f MiB; at %.2f s "
      "%.1f MiB, %u outstanding, %s; at 3 s %.1f MiB, %u outstanding\n",
      kDevice.c_str(), at_drain.count, at_drain.bytes / 1048576.0, settled_at,
      settled.bytes / 1048576.0, settled.outstanding,
      settled.all_draining ? "all draining" : "NOT ALL DRAINING", at_undrain.bytes / 1048576.0,
      at_undrain.outstanding);
  std::printf("undrain at 3 s: by 4.5 s its QPs wrote %.1f MiB more, %s\n",
              (end.bytes - at_undrain.bytes) / 1048576.0,
              end.all_healthy ? "all healthy" : "NOT ALL HEALTHY");
  std::printf("transfers: %lu succeeded, %lu failed%s%s; data %s\n", static_cast<unsigned long>(ok),
              static_cast<unsigned long>(failed), failed ? ", first: " : "", error.c_str(),
              same ? "identical" : "DIFFERENT");
  const bool pass = failed == 0 && same && at_drain.count > 0 && at_drain.bytes > 0 &&
                    settled.all_draining && settled.outstanding == 0 &&
                    at_undrain.bytes == settled.bytes && at_undrain.outstanding == 0 &&
                    end.all_healthy && end.bytes > at_undrain.bytes;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

// SIGKILL the peer at 1 s (by `kill_cmd`) while 1 MiB writes with a 3 s deadline stream; submit
// until 2 s. Every transfer must end, the failures by their deadline (+1 s of slack); then
// `start_cmd` restarts the peer and the orchestrator's path (AgentClient::Open, Connect, a new
// region) must carry 256 MiB again, verified.
int PeerKillScenario(std::shared_ptr<AgentClient> a, const std::string& b_addr,
                     std::unique_ptr<Connection>& conn, std::unique_ptr<TransferSession>& session,
                     const Region& src, std::unique_ptr<Region>& dst, const std::string& kill_cmd,
                     const std::string& start_cmd) {
  constexpr double kTimeout = 3.0;
  const auto t0 = Clock::now();
  struct Op {
    std::future<TransferResult> f;
    double submitted;
  };
  std::deque<Op> inflight;
  uint64_t ok = 0, failed = 0, late = 0;
  double worst = 0;
  std::string first_error;
  bool killed = false;
  auto reap = [&] {
    Op op = std::move(inflight.front());
    inflight.pop_front();
    auto r = op.f.get();
    if (r.status.ok()) {
      ++ok;
      return;
    }
    ++failed;
    if (first_error.empty()) first_error = r.status.ToString();
    const double took = Since(t0) - op.submitted;
    worst = std::max(worst, took);
    if (took > kTimeout + 1.0) ++late;
  };
  for (uint64_t i = 0; Since(t0) < 2.0; ++i) {
    if (!killed && Since(t0) >= 1.0) {
      killed = true;
      if (std::system(kill_cmd.c_str()) != 0) std::fprintf(stderr, "kill command failed\n");
    }
    inflight.push_back({session->Submit(Write(src, *dst, i, kTimeout)), Since(t0)});
    while (inflight.size() >= 128) reap();
    if (killed) usleep(5000);
  }
  while (!inflight.empty()) reap();
  std::printf(
      "peer SIGKILLed at 1 s: %lu transfers succeeded, %lu failed; slowest failure %.2f s "
      "after submission (deadline %.1f s), %lu past deadline + 1 s\n",
      static_cast<unsigned long>(ok), static_cast<unsigned long>(failed), worst, kTimeout,
      static_cast<unsigned long>(late));
  std::printf("first error: %s\n", first_error.c_str());
  // The orchestrator restarts the peer and reconnects, while our old VQP, whose QPs died with the
  // peer, is still trying to recover with it: it must never touch the new VQP (which reuses its
  // id), and must learn that its peer is gone.
  const uint64_t old_vqp = conn->vqp_a();
  session.reset();
  conn->Release();
  conn.reset();
  dst.reset();
  if (std::system(start_cmd.c_str()) != 0) std::fprintf(stderr, "start command failed\n");
  const auto restart = Clock::now();
  std::shared_ptr<AgentClient> b;
  for (int i = 0; i < 100 && b == nullptr; ++i) {
    auto c = AgentClient::Open(b_addr);
    if (c.ok()) {
      auto serving = (*c)->Serving();
      if (serving.ok() && *serving) b = *c;
    }
    if (b == nullptr) usleep(100000);
  }
  bool again = false;
  uint64_t ok_after = 0;
  int64_t new_deaths = -1, new_epoch = -1;
  std::string old_state;
  if (b != nullptr) {
    auto c = Connect(a, b, {.num_qps = 8, .label = "netns-reconnected"});
    auto d = b->RegisterMemory(256 * kMiB, "dst-again", {(*c)->vqp_b()});
    if (c.ok()) {
      // No traffic for 3 s: the new VQP must see no death, and the old one must have failed.
      usleep(3000000);
      auto fresh = b->GetVqp((*c)->vqp_b());
      auto old = a->GetVqp(old_vqp);
      new_deaths = fresh.ok() ? static_cast<int64_t>(fresh->qps_died()) : -1;
      new_epoch = fresh.ok() ? static_cast<int64_t>(fresh->epoch()) : -1;
      old_state = old.ok() ? old->state() + " (" + old->failure() + ")" : old.status().ToString();
      std::printf(
          "new VQP %lu on the restarted peer (old one here: %lu): %ld deaths, epoch %ld "
          "after 3 s idle; old VQP: %s\n",
          static_cast<unsigned long>((*c)->vqp_b()), static_cast<unsigned long>(old_vqp),
          static_cast<long>(new_deaths), static_cast<long>(new_epoch), old_state.c_str());
    }
    if (c.ok() && d.ok()) {
      auto s = TransferSession::Open(a, (*c)->vqp_a());
      if (s.ok()) {
        std::vector<std::future<TransferResult>> batch;
        for (uint64_t i = 0; i < 256; ++i) batch.push_back((*s)->Submit(Write(src, **d, i, 30)));
        for (auto& f : batch) ok_after += f.get().status.ok() ? 1 : 0;
        again = ok_after == 256 && std::memcmp(src.data(), (*d)->data(), 256 * kMiB) == 0;
      }
    } else {
      std::fprintf(stderr, "reconnect: %s / %s\n", c.status().ToString().c_str(),
                   d.status().ToString().c_str());
    }
  }
  std::printf(
      "peer restarted: serving after %.2f s; SDK Connect + 256 MiB: %lu succeeded, data "
      "%s\n",
      Since(restart), static_cast<unsigned long>(ok_after), again ? "identical" : "NOT VERIFIED");
  (void)a->DestroyVqp(old_vqp);
  const bool pass = failed > 0 && late == 0 && !first_error.empty() && again && new_deaths == 0 &&
                    new_epoch == 0 && old_state.rfind("failed", 0) == 0;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

namespace {

// Seconds until `device` on `agent` is in `want` (healthy or faulted) with its port shown up or
// down to match (polled), or -1 after `limit_s`.
double WaitForDevice(AgentClient& agent, const std::string& device, v1::DeviceState want,
                     double limit_s) {
  const auto t0 = Clock::now();
  while (Since(t0) < limit_s) {
    if (auto devices = agent.ListDevices(); devices.ok()) {
      for (const auto& d : *devices) {
        if (d.name() == device && d.state() == want &&
            d.port_active() == (want == v1::DEVICE_STATE_HEALTHY)) {
          return Since(t0);
        }
      }
    }
    usleep(50000);
  }
  return -1;
}

void Run(const std::string& command) {
  if (std::system(command.c_str()) != 0) std::fprintf(stderr, "failed: %s\n", command.c_str());
}

}  // namespace

// Link 1 goes down with no traffic: both ends' soft1 is faulted (nothing had to fail first), a
// VQP made meanwhile leaves it out, and it is healthy again once the link is back. Then the peer
// is restarted with every data link down: it does not serve, and it serves (every device healthy,
// a new 8-QP VQP over all four, 64 MiB verified) once the links come up, without a restart.
int PortScenario(std::shared_ptr<AgentClient> a, const std::string& b_addr,
                 const std::string& link_cmd, const std::string& kill_cmd,
                 const std::string& start_cmd) {
  constexpr double kLimit = 5.0;
  auto b = AgentClient::Open(b_addr);
  if (!b.ok()) return 1;
  Run(link_cmd + " 1 down");
  const double a_down = WaitForDevice(*a, "soft1", v1::DEVICE_STATE_FAULTED, kLimit);
  const double b_down = WaitForDevice(**b, "soft1", v1::DEVICE_STATE_FAULTED, kLimit);
  int on_soft1 = -1;
  if (auto c = Connect(a, *b, {.num_qps = 8, .label = "port-down"}); c.ok()) {
    on_soft1 = OnDevice(*a, (*c)->vqp_a(), "soft1").count;
  }
  Run(link_cmd + " 1 up");
  const double a_up = WaitForDevice(*a, "soft1", v1::DEVICE_STATE_HEALTHY, kLimit);
  const double b_up = WaitForDevice(**b, "soft1", v1::DEVICE_STATE_HEALTHY, kLimit);
  std::printf(
      "link 1 down, no traffic: soft1 faulted here after %.2f s, on the peer after %.2f s; a VQP "
      "made meanwhile has %d QPs there; link up: healthy after %.2f s here, %.2f s there\n",
      a_down, b_down, on_soft1, a_up, b_up);
  b->reset();
  Run(kill_cmd);
  for (int k = 0; k < 4; ++k) Run(link_cmd + " " + std::to_string(k) + " down");
  Run(start_cmd);
  std::shared_ptr<AgentClient> peer;
  for (int i = 0; i < 100 && peer == nullptr; ++i) {
    if (auto c = AgentClient::Open(b_addr); c.ok()) peer = *c;
    if (peer == nullptr) usleep(100000);
  }
  if (peer == nullptr) return 1;
  usleep(1500000);  // a port check or two
  auto serving = peer->Serving();
  const bool down_refused = serving.ok() && !*serving;
  int faulted = 0;
  if (auto devices = peer->ListDevices(); devices.ok()) {
    for (const auto& d : *devices) faulted += d.state() == v1::DEVICE_STATE_FAULTED ? 1 : 0;
  }
  const auto up = Clock::now();
  for (int k = 0; k < 4; ++k) Run(link_cmd + " " + std::to_string(k) + " up");
  double serving_s = -1;
  while (serving_s < 0 && Since(up) < kLimit) {
    serving = peer->Serving();
    if (serving.ok() && *serving) serving_s = Since(up);
    if (serving_s < 0) usleep(50000);
  }
  int healthy = 0;  // on the peer; here too (these links went down at this end)
  for (const char* name : {"soft0", "soft1", "soft2", "soft3"}) {
    healthy += WaitForDevice(*peer, name, v1::DEVICE_STATE_HEALTHY, kLimit) >= 0 ? 1 : 0;
    healthy += WaitForDevice(*a, name, v1::DEVICE_STATE_HEALTHY, kLimit) >= 0 ? 1 : 0;
  }
  int devices_used = 0;
  bool verified = false;
  auto c = Connect(a, peer, {.num_qps = 8, .label = "port-up"});
  if (c.ok()) {
    for (const char* name : {"soft0", "soft1", "soft2", "soft3"}) {
      devices_used += OnDevice(*a, (*c)->vqp_a(), name).count > 0 ? 1 : 0;
    }
    auto src = a->RegisterMemory(64 * kMiB, "port-src");
    auto dst = peer->RegisterMemory(64 * kMiB, "port-dst", {(*c)->vqp_b()});
    auto session = TransferSession::Open(a, (*c)->vqp_a());
    if (src.ok() && dst.ok() && session.ok()) {
      for (uint64_t i = 0; i < 64 * kMiB; ++i) (*src)->data()[i] = static_cast<uint8_t>(i * 13);
      std::vector<std::future<TransferResult>> ops;
      for (uint64_t i = 0; i < 64; ++i)
        ops.push_back((*session)->Submit(Write(**src, **dst, i, 30)));
      int ok = 0;
      for (auto& f : ops) ok += f.get().status.ok() ? 1 : 0;
      verified = ok == 64 && std::memcmp((*src)->data(), (*dst)->data(), 64 * kMiB) == 0;
    }
  } else {
    std::fprintf(stderr, "connect: %s\n", c.status().ToString().c_str());
  }
  std::printf(
      "peer started with every data link down: %s, %d of 4 devices faulted; links up: serving "
      "after %.2f s, %d of 8 healthy (both ends); a new 8-QP VQP on %d devices, 64 MiB %s\n",
      down_refused ? "NOT_SERVING" : "serving", faulted, serving_s, healthy, devices_used,
      verified ? "identical" : "NOT VERIFIED");
  const bool pass = a_down >= 0 && b_down >= 0 && on_soft1 == 0 && a_up >= 0 && b_up >= 0 &&
                    down_refused && faulted == 4 && serving_s >= 0 && healthy == 8 &&
                    devices_used == 4 && verified;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace braid::netns
