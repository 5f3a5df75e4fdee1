// The C++ SDK's rates, the reference for the Python SDK's (bench/python_sdk.sh runs both on the
// same agents): 1 MiB WRITEs pipelined through futures (the window kept full), and 4 KiB WRITEs
// submitted with SubmitBatch, 1,024 per batch; then 4 KiB WRITEs one at a time (the latency of
// each, p50 and p99). Bytes are not checked here (the tests do).
// Usage: braid_sdk_bench AGENT_A AGENT_B   (e.g. unix:/tmp/a.sock 127.0.0.1:7652)
// Prints: "cpp 1MiB_write_gbs X", "cpp 4KiB_batch_mops Y", "cpp 4KiB_one_at_a_time_p50_us Z" and
// "cpp 4KiB_one_at_a_time_p99_us W".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/transfer_session.h"

namespace {

using braid::client::TransferOp;
using braid::client::TransferResult;
using braid::client::TransferSession;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRegion = 256 * kMiB;

TransferOp Write(const braid::client::Region& src, const braid::v1::RemoteRegion& dst,
                 uint64_t size, uint64_t i) {
  TransferOp op;
  op.op = braid::v1::OP_WRITE;
  op.local_region = src.id();
  op.local_offset = op.remote_offset = (i % (kRegion / size)) * size;
  op.remote = dst;
  op.length = size;
  return op;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s AGENT_A AGENT_B\n", argv[0]);
    return 2;
  }
  auto a = braid::client::AgentClient::Open(argv[1]);
  auto b = braid::client::AgentClient::Open(argv[2]);
  if (!a.ok() || !b.ok()) return 1;
  auto conn = braid::client::Connect(*a, *b, {.num_qps = 8});
  if (!conn.ok()) return 1;
  auto src = (*a)->RegisterMemory(kRegion, "sdk-bench-src");
  auto dst = (*b)->RegisterMemory(kRegion, "sdk-bench-dst", {(*conn)->vqp_b()});
  if (!src.ok() || !dst.ok()) return 1;
  const braid::v1::RemoteRegion& remote = *(*dst)->remote((*conn)->vqp_b());
  auto session = TransferSession::Open(*a, (*conn)->vqp_a());
  if (!session.ok()) return 1;
  TransferSession& s = **session;

  const uint64_t big_ops = 2048;  // 2 GiB
  std::deque<std::future<TransferResult>> inflight;
  uint64_t failed = 0;
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < big_ops; ++i) {
    inflight.push_back(s.Submit(Write(**src, remote, kMiB, i)));
    while (inflight.size() >= s.window()) {
      failed += inflight.front().get().status.ok() ? 0 : 1;
      inflight.pop_front();
    }
  }
  for (auto& f : inflight) failed += f.get().status.ok() ? 0 : 1;
  const double big_s = std::chrono::duration<double>(Clock::now() - t0).count();

  const uint64_t batches = 200, per_batch = 1024;
  std::vector<TransferOp> batch(per_batch);
  std::vector<std::future<TransferResult>> futures;
  t0 = Clock::now();
  for (uint64_t k = 0; k < batches; ++k) {
    for (uint64_t i = 0; i < per_batch; ++i)
      batch[i] = Write(**src, remote, 4096, k * per_batch + i);
    for (auto& f : futures) failed += f.get().status.ok() ? 0 : 1;
    futures = s.SubmitBatch(batch);
  }
  for (auto& f : futures) failed += f.get().status.ok() ? 0 : 1;
  const double small_s = std::chrono::duration<double>(Clock::now() - t0).count();
  // One 4 KiB WRITE at a time: submit, wait for its future, next (latency through the SDK, the
  // agents and back).
  const int one_ops = 5000;
  std::vector<double> one_us;
  one_us.reserve(one_ops);
  for (int i = 0; i < one_ops; ++i) {
    const auto t = Clock::now();
    failed +=
        s.Submit(Write(**src, remote, 4096, static_cast<uint64_t>(i))).get().status.ok() ? 0 : 1;
    one_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  std::sort(one_us.begin(), one_us.end());
  if (failed != 0) {
    std::fprintf(stderr, "sdk_bench: %lu operations failed\n", static_cast<unsigned long>(failed));
    return 1;
  }
  std::printf("cpp 1MiB_write_gbs %.3f\n", static_cast<double>(big_ops * kMiB) / big_s / 1e9);
  std::printf("cpp 4KiB_batch_mops %.4f\n",
              static_cast<double>(batches * per_batch) / small_s / 1e6);
  std::printf("cpp 4KiB_one_at_a_time_p50_us %.1f\n", one_us[one_us.size() / 2]);
  std::printf("cpp 4KiB_one_at_a_time_p99_us %.1f\n", one_us[one_us.size() * 99 / 100]);
  std::printf("cpp path %s\n", s.path());
  return 0;
}
