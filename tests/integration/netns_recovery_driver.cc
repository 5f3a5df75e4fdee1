// Drives the link-fault recovery test (netns_recovery_test.sh): connects an 8-QP VQP between two
// agents, streams 1 MiB writes, takes a link down at --down-at seconds and up at --up-at (by
// running the given commands), and measures: failed transfers (must be 0), throughput before,
// during and after the fault, dead QPs over time, and how long after the link came back until no
// QP is dead. Prints a timeline and a summary; exit 0 when every check holds.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/transfer_session.h"
#include "tests/integration/netns_scenarios.h"

using namespace braid::client;
using Clock = std::chrono::steady_clock;

namespace {

int DeadQps(AgentClient& a, uint64_t vqp) {
  auto info = a.GetVqp(vqp);
  if (!info.ok()) return -1;
  int dead = 0;
  // Not yet back: dead, or reconnected and still probing its path.
  for (const auto& q : info->qps()) dead += q.health() != braid::v1::QP_HEALTH_HEALTHY ? 1 : 0;
  return dead;
}

}  // namespace

// Scenario "all-down": two of the links go down at 2 s (everything still completes), the other two
// at 4 s (nothing can: every transfer in flight or submitted must end with a clear error by its
// deadline, never hang), all come back at 7 s: the QPs recover and a final 256 MiB succeeds.
int AllDown(AgentClient& a, Connection& conn, TransferSession& session, const Region& src,
            const Region& dst, const std::string& cmd_prefix, double backoff_cap_s) {
  constexpr uint64_t kMiB = 1 << 20;
  const auto t0 = Clock::now();
  auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto run = [&](const std::string& c) {
    if (std::system(c.c_str()) != 0) std::fprintf(stderr, "command failed: %s\n", c.c_str());
  };
  struct Op {
    std::future<TransferResult> f;
    double submitted;
  };
  std::deque<Op> inflight;
  uint64_t ok_before = 0, failed_before = 0, ok_down = 0, failed_down = 0, late = 0;
  double worst_fail_s = 0;
  std::string first_error;
  constexpr double kTimeout = 3.0;
  int stage = 0;
  auto reap_one = [&] {
    Op op = std::move(inflight.front());
    inflight.pop_front();
    auto r = op.f.get();
    const double took = since() - op.submitted;
    // When it completed (the engine's latency from acceptance): an op still in flight when the
    // last links die may fail; none that completed while two links lived may.
    const bool before = op.submitted + static_cast<double>(r.latency_ns) * 1e-9 < 4.0;
    if (r.status.ok()) {
      (before ? ok_before : ok_down)++;
      return;
    }
    (before ? failed_before : failed_down)++;
    if (first_error.empty()) first_error = r.status.ToString();
    worst_fail_s = std::max(worst_fail_s, took);
    if (took > kTimeout + 1.0) ++late;
  };
  for (uint64_t i = 0; since() < 7.0; ++i) {
    const double t = since();
    if (stage == 0 && t >= 2.0) {
      run(cmd_prefix + " 1 down; " + cmd_prefix + " 2 down");
      stage = 1;
    }
    if (stage == 1 && t >= 4.0) {
      run(cmd_prefix + " 0 down; " + cmd_prefix + " 3 down");
      stage = 2;
    }
    inflight.push_back({session.Submit(braid::netns::Write(src, dst, i, kTimeout)), t});
    while (inflight.size() >= 64) reap_one();
    if (stage == 2) usleep(20000);  // nothing moves: do not spin through the region
  }
  while (!inflight.empty()) reap_one();
  for (int k = 0; k < 4; ++k) run(cmd_prefix + " " + std::to_string(k) + " up");
  const double up_at = since();
  double back_s = -1;
  for (int i = 0; i < 200 && back_s < 0; ++i) {
    if (DeadQps(a, conn.vqp_a()) == 0) back_s = since() - up_at;
    if (back_s < 0) usleep(50000);
  }
  uint64_t ok_after = 0, failed_after = 0;
  std::vector<std::future<TransferResult>> final_batch;
  for (uint64_t i = 0; i < 256; ++i) {
    TransferOp op;
    op.local_region = src.id();
    op.local_offset = i * kMiB;
    op.remote = dst.info().grants(0);
    op.remote_offset = i * kMiB;
    op.length = kMiB;
    final_batch.push_back(session.Submit(op));
  }
  for (auto& f : final_batch) (f.get().status.ok() ? ok_after : failed_after)++;
  const bool same = std::memcmp(src.data(), dst.data(), 256 * kMiB) == 0;
  std::printf(
      "completed before all links were down (0-4 s, two down from 2 s): %lu succeeded, %lu "
      "failed\n",
      static_cast<unsigned long>(ok_before), static_cast<unsigned long>(failed_before));
  std::printf(
      "completed after (in flight at 4 s, or submitted 4-7 s): %lu succeeded, %lu failed with a "
      "clear error; slowest "
      "failure %.2f s (deadline %.1f s), %lu past deadline + 1 s\n",
      static_cast<unsigned long>(ok_down), static_cast<unsigned long>(failed_down), worst_fail_s,
      kTimeout, static_cast<unsigned long>(late));
  std::printf("first error: %s\n", first_error.c_str());
  std::printf(
      "links back: every QP healthy %.2f s later (limit %.1f s); then 256 MiB: %lu "
      "succeeded, %lu failed, data %s\n",
      back_s, 2 * backoff_cap_s, static_cast<unsigned long>(ok_after),
      static_cast<unsigned long>(failed_after), same ? "identical" : "DIFFERENT");
  const bool ok = failed_before == 0 && failed_down > 0 && late == 0 && back_s >= 0 &&
                  back_s <= 2 * backoff_cap_s && failed_after == 0 && ok_after == 256 && same;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

// Scenario "bench": 64 MiB writes for `seconds`, pipelined; prints GB/s.
int Bench(AgentClient& a, uint64_t vqp, TransferSession& session, const Region& src,
          const Region& dst, double seconds) {
  constexpr uint64_t kOp = 64ull << 20;
  std::deque<std::future<TransferResult>> inflight;
  uint64_t bytes = 0, failed = 0;
  auto reap = [&] {
    auto r = inflight.front().get();
    inflight.pop_front();
    if (r.status.ok()) {
      bytes += r.bytes;
    } else {
      ++failed;
    }
  };
  // Warm-up, then the measured window.
  for (int i = 0; i < 4; ++i) {
    TransferOp op{.local_region = src.id(),
                  .local_offset = 0,
                  .remote = dst.info().grants(0),
                  .remote_offset = 0,
                  .length = kOp};
    inflight.push_back(session.Submit(op));
  }
  while (!inflight.empty()) reap();
  bytes = 0;
  const auto t0 = Clock::now();
  for (uint64_t i = 0; std::chrono::duration<double>(Clock::now() - t0).count() < seconds; ++i) {
    TransferOp op{.local_region = src.id(),
                  .local_offset = (i % 4) * kOp,
                  .remote = dst.info().grants(0),
                  .remote_offset = (i % 4) * kOp,
                  .length = kOp};
    inflight.push_back(session.Submit(op));
    while (inflight.size() >= 4) reap();
  }
  while (!inflight.empty()) reap();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("64 MiB writes: %.3f GB/s over %.1f s, failed %lu\n",
              static_cast<double>(bytes) / s / 1e9, s, static_cast<unsigned long>(failed));
  // Where the scheduler put the bytes, and each QP's drain rate as it measured it.
  if (auto info = a.GetVqp(vqp); info.ok()) {
    for (const auto& q : info->qps()) {
      if (q.message_qp()) continue;
      std::printf("  QP %u on %s: %8.1f MiB written, drain rate %.3f GB/s\n", q.index(),
                  q.device().c_str(), static_cast<double>(q.bytes_written()) / 1048576.0,
                  q.drain_rate_bytes_per_second() / 1e9);
    }
  }
  return failed == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  CLI::App app{"netns recovery driver"};
  std::string a_addr, b_addr, down_cmd, up_cmd, scenario = "one-down", link_cmd;
  double total_gib = 4, down_at = 2, up_at = 5, backoff_cap_s = 2;
  uint32_t qps = 8;
  app.add_option("--a", a_addr)->required();
  app.add_option("--b", b_addr)->required();
  app.add_option("--total-gib", total_gib);
  app.add_option("--qps", qps);
  app.add_option("--down-at", down_at);
  app.add_option("--up-at", up_at);
  app.add_option("--scenario", scenario,
                 "one-down | all-down | drain | peer-kill | bench | imm-outage | flap | port");
  std::string scheme = "spray";
  app.add_option("--scheme", scheme, "imm-outage: spray | dqplb");
  double flap_seconds = 30;
  app.add_option("--flap-seconds", flap_seconds);
  std::string kill_cmd, start_cmd;
  app.add_option("--kill-cmd", kill_cmd, "peer-kill: SIGKILLs the peer agent");
  app.add_option("--start-cmd", start_cmd, "peer-kill: starts it again");
  double bench_seconds = 10;
  app.add_option("--bench-seconds", bench_seconds);
  app.add_option("--down-cmd", down_cmd);
  app.add_option("--up-cmd", up_cmd);
  app.add_option("--link-cmd", link_cmd, "all-down: '<cmd> K up|down' switches link K");
  app.add_option("--backoff-cap-s", backoff_cap_s);
  CLI11_PARSE(app, argc, argv);

  auto a = AgentClient::Open(a_addr);
  auto b = AgentClient::Open(b_addr);
  if (!a.ok() || !b.ok()) {
    std::fprintf(stderr, "agents unreachable\n");
    return 1;
  }
  if (scenario == "port") {
    b->reset();  // the scenario restarts the peer
    return braid::netns::PortScenario(*a, b_addr, link_cmd, kill_cmd, start_cmd);
  }
  auto conn = Connect(*a, *b, {.num_qps = qps, .label = "netns"});
  if (!conn.ok()) {
    std::fprintf(stderr, "connect: %s\n", conn.status().ToString().c_str());
    return 1;
  }
  constexpr uint64_t kMiB = 1 << 20;
  constexpr uint64_t kRegion = 256 * kMiB;
  auto src = (*a)->RegisterMemory(kRegion, "src");
  auto dst = (*b)->RegisterMemory(kRegion, "dst", {(*conn)->vqp_b()});
  if (!src.ok() || !dst.ok()) return 1;
  for (uint64_t i = 0; i < kRegion; ++i)
    (*src)->data()[i] = static_cast<uint8_t>(i * 7 + (i >> 16));
  auto session = TransferSession::Open(*a, (*conn)->vqp_a());
  if (!session.ok()) return 1;
  if (scenario == "bench")
    return Bench(**a, (*conn)->vqp_a(), **session, **src, **dst, bench_seconds);
  if (scenario == "drain")
    return braid::netns::DrainScenario(**a, (*conn)->vqp_a(), **session, **src, **dst);
  if (scenario == "peer-kill") {
    return braid::netns::PeerKillScenario(*a, b_addr, *conn, *session, **src, *dst, kill_cmd,
                                          start_cmd);
  }
  if (scenario == "imm-outage") {
    return braid::netns::ImmOutageScenario(
        *a, *b, scheme == "dqplb" ? braid::v1::SCHEME_DQPLB : braid::v1::SCHEME_SPRAY, **src, **dst,
        link_cmd);
  }
  if (scenario == "flap") {
    return braid::netns::FlapScenario(**session, **src, **dst, link_cmd, flap_seconds);
  }
  if (scenario == "all-down") {
    return AllDown(**a, **conn, **session, **src, **dst, link_cmd, backoff_cap_s);
  }

  const uint64_t total = static_cast<uint64_t>(total_gib * 1024) * kMiB;
  const auto t0 = Clock::now();
  auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::deque<std::future<TransferResult>> inflight;
  uint64_t done_bytes = 0, failed = 0;
  bool downed = false, upped = false;
  double up_time = -1, clear_time = -1, next_sample = 0.25;
  int max_dead = 0;
  uint64_t last_bytes = 0;
  double last_t = 0;
  struct Sample {
    double t;
    double gbs;
    int dead;
  };
  std::vector<Sample> samples;
  auto reap_one = [&] {
    auto r = inflight.front().get();
    inflight.pop_front();
    if (!r.status.ok()) {
      if (failed++ < 5) std::fprintf(stderr, "transfer failed: %s\n", r.status.ToString().c_str());
    } else {
      done_bytes += r.bytes;
    }
  };
  for (uint64_t off = 0, i = 0; off < total; off += kMiB, ++i) {
    TransferOp op;
    op.local_region = (*src)->id();
    op.local_offset = (i % 256) * kMiB;
    op.remote = (*dst)->info().grants(0);
    op.remote_offset = (i % 256) * kMiB;
    op.length = kMiB;
    op.timeout = std::chrono::seconds(30);
    inflight.push_back((*session)->Submit(op));
    while (inflight.size() >= 128) reap_one();
    const double t = since();
    if (!downed && t >= down_at) {
      downed = true;
      if (std::system(down_cmd.c_str()) != 0) std::fprintf(stderr, "down command failed\n");
    }
    if (downed && !upped && t >= up_at) {
      upped = true;
      up_time = t;
      if (std::system(up_cmd.c_str()) != 0) std::fprintf(stderr, "up command failed\n");
    }
    if (t >= next_sample) {
      const int dead = DeadQps(**a, (*conn)->vqp_a());
      max_dead = std::max(max_dead, dead);
      const double gbs = static_cast<double>(done_bytes - last_bytes) / (t - last_t) / 1e9;
      samples.push_back({t, gbs, dead});
      if (upped && clear_time < 0 && dead == 0) clear_time = t;
      last_bytes = done_bytes;
      last_t = t;
      next_sample = t + 0.25;
    }
  }
  while (!inflight.empty()) reap_one();
  // After the stream: wait (bounded) for the dead QPs to clear if they have not yet.
  for (int i = 0; clear_time < 0 && i < 100; ++i) {
    const int dead = DeadQps(**a, (*conn)->vqp_a());
    if (upped && dead == 0) clear_time = since();
    if (clear_time < 0) usleep(100000);
  }
  const bool same = std::memcmp((*src)->data(), (*dst)->data(), kRegion) == 0;

  double before = 0, during = 0, after = 0;
  int nb = 0, nd = 0, na = 0;
  for (const auto& s : samples) {
    std::printf("t=%5.2fs %6.3f GB/s QPs out %d\n", s.t, s.gbs, s.dead);
    if (s.t > 0.5 && s.t <= down_at) before += s.gbs, ++nb;
    if (s.t > down_at + 1.0 && s.t <= up_at) during += s.gbs, ++nd;  // after the QPs timed out
    if (clear_time >= 0 && s.t > clear_time + 0.5) after += s.gbs, ++na;
  }
  before = nb ? before / nb : 0;
  during = nd ? during / nd : 0;
  after = na ? after / na : 0;
  const double recover_s = clear_time >= 0 && up_time >= 0 ? clear_time - up_time : -1;
  std::printf("moved %.2f GiB, failed transfers %lu, data %s\n",
              static_cast<double>(done_bytes) / (1 << 30), static_cast<unsigned long>(failed),
              same ? "identical" : "DIFFERENT");
  std::printf(
      "throughput: before %.3f GB/s, link down %.3f GB/s (%.2f of before), after "
      "recovery %.3f GB/s (%.2f)\n",
      before, during, before > 0 ? during / before : 0, after, before > 0 ? after / before : 0);
  std::printf(
      "QPs out of service: max %d while down; 0 again %.2f s after the link came back "
      "(limit 2 x backoff cap = %.1f s)\n",
      max_dead, recover_s, 2 * backoff_cap_s);
  bool ok = failed == 0 && same && max_dead > 0 && recover_s >= 0 && recover_s <= 2 * backoff_cap_s;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
