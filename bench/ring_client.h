// The benches' client of an agent's session rings (doc/local_data_path.md): its own memory (a
// sealed memfd) registered with RegisterFd, the peer's region bound to its session, and an 8-byte
// WRITE_WITH_IMM ping-pong between a client of each of two agents, notifications included.
// Used by agent_bench.cc and agent_contention_bench.cc.
//
// Threading: a RingClient is used by one thread at a time; RingPingPong runs the answering side
// on a thread of its own.
#ifndef BRAID_BENCH_RING_CLIENT_H_
#define BRAID_BENCH_RING_CLIENT_H_

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dataplane/session/session_client.h"
#include "tests/agent/agent_harness.h"

namespace braid::bench {

struct RingClient {
  std::unique_ptr<session::SessionClient> client;
  uint64_t region = 0;
  uint32_t handle = 0;
  int fd = -1;
  uint8_t* data = nullptr;
  uint64_t size = 0;
  RingClient() = default;
  RingClient(const RingClient&) = delete;
  RingClient& operator=(const RingClient&) = delete;
  ~RingClient() {
    client.reset();
    if (data != nullptr) munmap(data, size);
    if (fd >= 0) close(fd);
  }
};

// A session on agent `a`'s socket with `size` bytes of the client's own memory registered for
// `vqp`, and `dst` (the peer's region) bound to the session. False (and why, on stderr) on failure.
inline bool OpenRing(testing::AgentProcess& a, const std::string& socket, uint64_t vqp,
                     const v1::RegionInfo& dst, uint64_t size, RingClient* out) {
  out->size = size;
  out->fd = memfd_create("braid-bench", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (out->fd < 0 || ftruncate(out->fd, static_cast<off_t>(size)) != 0 ||
      fcntl(out->fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return false;
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, out->fd, 0);
  if (p == MAP_FAILED) return false;
  out->data = static_cast<uint8_t*>(p);
  testing::FillPattern(out->data, size, 1);
  auto client = session::SessionClient::Connect(socket, {1024, 1024, 1024});
  if (!client.ok()) {
    std::fprintf(stderr, "session: %s\n", client.status().ToString().c_str());
    return false;
  }
  out->client = std::move(client).value();
  auto region = out->client->RegisterFd(out->fd, 0, size, {&vqp, 1}, "bench");
  if (!region.ok()) {
    std::fprintf(stderr, "RegisterFd: %s\n", region.status().ToString().c_str());
    return false;
  }
  out->region = *region;
  grpc::ClientContext ctx;
  v1::BindRemoteRequest request;
  request.set_session_id(out->client->id());
  request.set_vqp_id(vqp);
  *request.mutable_remote() = testing::GrantOf(dst);
  v1::BindRemoteResponse response;
  const grpc::Status s = a.stub().BindRemote(&ctx, request, &response);
  if (!s.ok()) {
    std::fprintf(stderr, "BindRemote: %s\n", s.error_message().c_str());
    return false;
  }
  out->handle = response.handle();
  return true;
}

// Waits for one notification on `r`'s session, reaping (and checking) completions meanwhile; when
// both rings are empty it spins 50 us, as the SDK's ring reader does, giving its core away between
// looks (on a small machine the agent's engine needs it: on 2 cores, spinning without yielding
// made the one-way p50 about 8 times longer than sleeping at once), then sleeps on the client's
// doorbell. False after 5 s or a failure.
inline bool AwaitNotification(RingClient& r, session::NotifyEntry* out) {
  session::CompletionEntry done[16];
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const uint32_t c = r.client->Reap(done);
    for (uint32_t i = 0; i < c; ++i) {
      if (done[i].status != 0) return false;
    }
    if (r.client->ReapNotifications({out, 1}) == 1) {
      return out->kind == static_cast<uint8_t>(session::NotifyKind::kNotification);
    }
    const auto waited = std::chrono::steady_clock::now() - t0;
    if (waited > std::chrono::seconds(5)) return false;
    if (waited < std::chrono::microseconds(50)) {
      sched_yield();
      continue;
    }
    r.client->Wait(1);
  }
}

// Subscribes `r`'s session to `vqp`'s notifications.
inline bool WatchRing(RingClient& r, uint64_t vqp) {
  const session::SubmitEntry watch = session::SessionClient::Watch(vqp, 1);
  if (r.client->Submit({&watch, 1}) != 1) return false;
  session::CompletionEntry done{};
  for (int i = 0; i < 5000 && r.client->Reap({&done, 1}) == 0; ++i) r.client->Wait(1);
  return done.user_data == 1 && done.status == 0;
}

// The two sides of a ping-pong over the VQP pair `vqp_a` (agent A, session socket `socket_a`) /
// `vqp_b` (agent B, `socket_b`): a client of A writing into `b_memory` (B's region granted to
// `vqp_b`) and a client of B writing back into A's client's memory, both subscribed to their
// VQP's notifications. Each client registers `size` bytes.
inline bool OpenRingPair(testing::AgentProcess& a, testing::AgentProcess& b,
                         const std::string& socket_a, const std::string& socket_b, uint64_t vqp_a,
                         uint64_t vqp_b, const v1::RegionInfo& b_memory, uint64_t size,
                         RingClient* ra, RingClient* rb) {
  if (!OpenRing(a, socket_a, vqp_a, b_memory, size, ra)) return false;
  v1::RegionInfo a_memory;
  a_memory.set_region_id(ra->region);
  return OpenRing(b, socket_b, vqp_b, testing::WithGrant(a.stub(), a_memory, vqp_a), size, rb) &&
         WatchRing(*ra, vqp_a) && WatchRing(*rb, vqp_b);
}

// 8-byte WRITE_WITH_IMM ping-pong between two clients, each on its own agent's session rings: A
// writes into B's region, B's client hears the notification and writes back into A's, A's hears
// it. One-way latency (half of each round trip as A sees it) in microseconds: p50 and p99;
// {-1, -1} when a round failed.
inline std::pair<double, double> RingPingPong(RingClient& a, uint64_t vqp_a, RingClient& b,
                                              uint64_t vqp_b, int rounds) {
  auto submit = [](RingClient& r, uint64_t vqp, uint32_t imm) {
    session::SubmitEntry e{};
    e.user_data = imm;
    e.vqp_id = vqp;
    e.local_region = static_cast<uint32_t>(r.region);
    e.remote_region = r.handle;
    e.length = 8;
    e.imm = imm;
    e.op = static_cast<uint8_t>(session::RingOp::kWriteWithImm);
    while (r.client->Submit({&e, 1}) == 0) {
    }
  };
  std::atomic<bool> ok{true};
  std::thread pong([&] {
    session::NotifyEntry n{};
    for (int i = 0; i < rounds && ok; ++i) {
      if (!AwaitNotification(b, &n) || n.imm != static_cast<uint32_t>(i)) {
        ok = false;
        return;
      }
      submit(b, vqp_b, n.imm);
    }
  });
  std::vector<double> us;
  session::NotifyEntry n{};
  for (int i = 0; i < rounds && ok; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    submit(a, vqp_a, static_cast<uint32_t>(i));
    if (!AwaitNotification(a, &n) || n.imm != static_cast<uint32_t>(i)) {
      ok = false;
      break;
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
        2);
  }
  pong.join();
  if (!ok || us.empty()) return {-1, -1};
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[us.size() * 99 / 100]};
}

}  // namespace braid::bench

#endif  // BRAID_BENCH_RING_CLIENT_H_
