// Failure-containment scenarios in network namespaces (netns_recovery_test.sh runs them):
//   "imm-outage" every link down with write-with-immediate messages in flight, then back: the
//                receiver's notifications resume, 1,000 messages arrive with theirs, in order;
//   "flap"       one link down/up every 200 ms under a stream of 1 MiB writes: at most 5
//                operations fail (the goal is none) and the stream keeps going; the throughput
//                kept is printed next to its goal (0.6 of before), a benchmark figure that
//                this VM's drift moves by more than the margin (0.74 one day, 0.52-0.61 on
//                another, for this build and the one before): checked here against 0.4 only.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "braid/notifications.h"
#include "tests/integration/netns_scenarios.h"

namespace braid::netns {
namespace {

using namespace braid::client;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Run(const std::string& command) {
  if (std::system(command.c_str()) != 0)
    std::fprintf(stderr, "command failed: %s\n", command.c_str());
}

// Data QPs of `vqp` not (yet) healthy; -1 if the agent does not answer.
int NotHealthy(AgentClient& agent, uint64_t vqp) {
  auto info = agent.GetVqp(vqp);
  if (!info.ok()) return -1;
  int n = 0;
  for (const auto& q : info->qps()) n += q.health() != v1::QP_HEALTH_HEALTHY ? 1 : 0;
  return n;
}

// 1 MiB writes kept `window` deep for `seconds`; `tick(t)` runs between submissions.
struct StreamResult {
  uint64_t bytes = 0;
  uint64_t failed = 0;
  double seconds = 0;
  std::string first_error;
};
template <typename Tick>
StreamResult Stream(TransferSession& session, const Region& src, const Region& dst, double seconds,
                    Tick tick) {
  StreamResult out;
  std::deque<std::future<TransferResult>> inflight;
  auto reap = [&] {
    auto r = inflight.front().get();
    inflight.pop_front();
    if (r.status.ok()) {
      out.bytes += r.bytes;
    } else if (out.failed++ == 0) {
      out.first_error = r.status.ToString();
    }
  };
  const auto t0 = Clock::now();
  for (uint64_t i = 0; Since(t0) < seconds; ++i) {
    tick(Since(t0));
    inflight.push_back(session.Submit(Write(src, dst, i, 10.0)));
    while (inflight.size() >= 64) reap();
  }
  while (!inflight.empty()) reap();
  out.seconds = Since(t0);
  return out;
}

}  // namespace

int ImmOutageScenario(std::shared_ptr<AgentClient> a, std::shared_ptr<AgentClient> b,
                      v1::Scheme scheme, const Region& src, const Region& dst,
                      const std::string& link_cmd) {
  const char* name = scheme == v1::SCHEME_DQPLB ? "DQPLB" : "SPRAY";
  auto conn = Connect(a, b, {.scheme = scheme, .num_qps = 8, .label = "netns-imm-outage"});
  if (!conn.ok()) {
    std::fprintf(stderr, "connect: %s\n", conn.status().ToString().c_str());
    return 1;
  }
  auto session = TransferSession::Open(a, (*conn)->vqp_a());
  if (!session.ok()) return 1;
  std::mutex mu;
  std::vector<v1::Notification> notes;
  auto stream = NotificationStream::Open(b, (*conn)->vqp_b(), [&](const v1::Notification& n) {
    std::lock_guard<std::mutex> lock(mu);
    notes.push_back(n);
  });
  if (!stream.ok()) return 1;
  auto grant = b->GrantAccess(dst.id(), (*conn)->vqp_b());  // this scenario's own VQP pair
  if (!grant.ok()) {
    std::fprintf(stderr, "grant: %s\n", grant.status().ToString().c_str());
    return 1;
  }
  auto imm_write = [&](uint64_t i, uint32_t imm, double timeout_s) {
    TransferOp op = Write(src, dst, i, timeout_s);
    op.remote = *grant;
    op.op = v1::OP_WRITE_WITH_IMM;
    op.imm = imm;
    return (*session)->Submit(op);
  };
  // Every link down, then eight messages: they are in flight with no path, and cannot finish.
  for (int k = 0; k < 4; ++k) Run(link_cmd + " " + std::to_string(k) + " down");
  std::vector<std::future<TransferResult>> outage;
  for (uint32_t i = 0; i < 8; ++i) outage.push_back(imm_write(i, 0xF000 + i, 3.0));
  int outage_failed = 0;
  for (auto& f : outage) outage_failed += f.get().status.ok() ? 0 : 1;
  for (int k = 0; k < 4; ++k) Run(link_cmd + " " + std::to_string(k) + " up");
  const auto up = Clock::now();
  double back_s = -1;
  while (back_s < 0 && Since(up) < 20) {
    if (NotHealthy(*a, (*conn)->vqp_a()) == 0 && NotHealthy(*b, (*conn)->vqp_b()) == 0) {
      back_s = Since(up);
    } else {
      usleep(50000);
    }
  }
  // 1,000 messages after: all succeed, and the receiver sees their notifications in order.
  std::deque<std::future<TransferResult>> inflight;
  uint64_t ok = 0;
  std::string error;
  for (uint32_t i = 0; i < 1000; ++i) {
    inflight.push_back(imm_write(100 + i, i, 10.0));
    while (inflight.size() >= 64 || (i == 999 && !inflight.empty())) {
      auto r = inflight.front().get();
      inflight.pop_front();
      if (r.status.ok()) {
        ++ok;
      } else if (error.empty()) {
        error = r.status.ToString();
      }
    }
  }
  std::vector<v1::Notification> got;
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      got = notes;
    }
    // Wait for the last message's notification. A message the sender failed in the outage may
    // still have landed (as on an HCA, a failed send says nothing about the responder), so the
    // count of successes alone does not say that all 1,000 are here.
    if (!got.empty() && got.back().imm() == 999) break;
    usleep(50000);
  }
  // The last 1,000 successful notifications carry immediates 0..999 in order.
  std::vector<uint32_t> imms;
  uint64_t aborted = 0;
  for (const auto& n : got) {
    if (n.wc_status() == "success") {
      imms.push_back(n.imm());
    } else {
      ++aborted;
    }
  }
  bool in_order = imms.size() >= 1000;
  for (size_t k = 0; in_order && k < 1000; ++k) {
    in_order = imms[imms.size() - 1000 + k] == k;
  }
  if (!in_order) {
    // Say what arrived, runs of consecutive immediates collapsed: "0-57 59 58 60-999".
    std::string seen;
    for (size_t k = 0; k < got.size();) {
      size_t e = k;
      while (e + 1 < got.size() && got[e + 1].imm() == got[e].imm() + 1 &&
             got[e + 1].wc_status() == got[k].wc_status()) {
        ++e;
      }
      seen += " " + std::to_string(got[k].imm());
      if (e > k) seen += "-" + std::to_string(got[e].imm());
      if (got[k].wc_status() != "success") seen += "(" + got[k].wc_status() + ")";
      k = e + 1;
    }
    // The agent numbers its notifications: a gap or a step back says the stream reordered them.
    std::string numbering = "in order";
    for (size_t k = 1; k < got.size(); ++k) {
      if (got[k].seq() != got[k - 1].seq() + 1) {
        numbering = "out of order at #" + std::to_string(k) + " (" +
                    std::to_string(got[k - 1].seq()) + " then " + std::to_string(got[k].seq()) +
                    ")";
        break;
      }
    }
    std::printf("%s: the receiver's notifications in arrival order:%s; their numbers: %s\n", name,
                seen.c_str(), numbering.c_str());
  }
  std::printf(
      "%s: all links down with 8 messages in flight: %d failed at the sender; every QP "
      "healthy %.2f s after the links came back; then 1000 messages: %lu succeeded%s%s; "
      "the receiver: %zu notifications (%lu for failed messages), the last 1000 %s\n",
      name, outage_failed, back_s, static_cast<unsigned long>(ok),
      error.empty() ? "" : ", first error: ", error.c_str(), got.size(),
      static_cast<unsigned long>(aborted), in_order ? "in order" : "NOT in order");
  const bool pass = outage_failed > 0 && back_s >= 0 && ok == 1000 && in_order;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

int FlapScenario(TransferSession& session, const Region& src, const Region& dst,
                 const std::string& link_cmd, double seconds) {
  const StreamResult before = Stream(session, src, dst, 3.0, [](double) {});
  bool down = false;
  double next = 0.2;
  int flaps = 0;
  const StreamResult during = Stream(session, src, dst, seconds, [&](double t) {
    if (t < next) return;
    next += 0.2;
    down = !down;
    flaps += down ? 1 : 0;
    Run(link_cmd + " 1 " + (down ? "down" : "up") + " &");  // never block the stream on tc
  });
  Run(link_cmd + " 1 up");
  const double gbs_before = static_cast<double>(before.bytes) / before.seconds / 1e9;
  const double gbs_during = static_cast<double>(during.bytes) / during.seconds / 1e9;
  const double ratio = gbs_before > 0 ? gbs_during / gbs_before : 0;
  std::printf(
      "link 1 flapping every 200 ms for %.0f s (%d flaps): %.3f GB/s against %.3f GB/s "
      "before = %.2f (goal >= 0.6, floor 0.4); failed operations: %lu before, %lu while flapping"
      "%s%s\n",
      during.seconds, flaps, gbs_during, gbs_before, ratio,
      static_cast<unsigned long>(before.failed), static_cast<unsigned long>(during.failed),
      during.first_error.empty() ? "" : "; first error: ", during.first_error.c_str());
  const bool pass = ratio >= 0.4 && before.failed == 0 && during.failed <= 5;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace braid::netns
