// braid_tcp_bench: the soft provider over the TCP link between two processes on loopback.
//
// The parent (soft NIC 127.0.0.1) and a forked child (127.0.0.2) each drive their own TcpFabric
// from their own poll loop; they exchange QP numbers, PSNs and the child's buffer key over a pipe.
// Prints one figure per line: 1 MiB WRITE and READ bandwidth on 1 and 4 QPs (queue depth 16 per
// QP), the 4 KiB WRITE rate (depth 64), and the one-way latency of a zero-length WRITE_WITH_IMM
// ping-pong with busy polling. With an iperf3 figure (GB/s) as an argument, also each ratio to it.
// --write-only runs just the two 1 MiB WRITE figures and --skip-write all others (the script
// alternates WRITE rounds with iperf3 rounds); --seconds=S sets each figure's duration (3);
// --qp-window=BYTES overrides the TCP link's per-QP window (0: none), to compare.
// --poll=sleep makes both processes poll with verbs::CompletionWaiter (spin, then sleep on the
// CQ and progress fds) instead of spinning; --contention=N runs N trials of the 4 KiB rate and the
// ping-pong, each quiet and then next to one competing busy process, and prints each;
// --spin-us=N sets the waiter's spin (CompletionWaiterOptions::spin_ns).
// --rma-compare prints only the figures bench/libfabric_compare.sh sets next to libfabric's tcp
// provider (braid_libfabric_rma_bench): 1 MiB WRITE and READ and the 4 KiB WRITE rate on one QP,
// 16 in flight; --working-set=BYTES (64 MiB) is how much of both buffers the operations cycle
// through, slot after slot. --bulk-4qp prints only the 1 MiB WRITE and READ on 4 QPs (what
// braid_agent_bench --rounds sets next to the ring path, round after round).
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/busy_process.h"
#include "bench/forked_child.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/completion_waiter.h"
#include "tests/testutil/rc_connect.h"

namespace {

using namespace braid;
using Clock = std::chrono::steady_clock;

constexpr int kQps = 4;
constexpr size_t kBuffer = 64ull << 20;
constexpr uint16_t kPort = 18700;

struct Info {
  uint32_t qpn[kQps];
  uint64_t addr;
  uint32_t rkey;
};

// --qp-window=BYTES (default: TcpFabricOptions's; 0 = no bound), for both processes.
std::optional<uint64_t> g_qp_window;
// --poll=sleep: both processes poll through a CompletionWaiter.
bool g_poll_sleep = false;
verbs::CompletionWaiterOptions g_waiter;  // --spin-us=N: its spin before sleeping
size_t g_working_set = kBuffer;           // --working-set=BYTES

soft::TcpFabricOptions FabricOptions() {
  soft::TcpFabricOptions options{.port = kPort};
  if (g_qp_window) options.qp_window_bytes = *g_qp_window;
  return options;
}

struct Side {
  explicit Side(const char* ip)
      : fabric(FabricOptions()), provider({{{"nic", ip}}, &fabric}), buffer(kBuffer, 1) {
    device = std::move(provider.OpenDevice("nic")).value();
    pd = std::move(device->AllocPd()).value();
    cq = std::move(device->CreateCq(8192)).value();
    mr = std::move(pd->RegisterMemory(buffer.data(), buffer.size(), 0xF)).value();
    for (int i = 0; i < kQps; ++i) {
      verbs::QpCaps caps;
      caps.max_send_wr = 1024;
      caps.max_recv_wr = 1024;
      qps.push_back(std::move(pd->CreateQp({cq.get(), cq.get(), caps, false})).value());
    }
    if (g_poll_sleep)
      waiter = std::move(verbs::CompletionWaiter::Create(*cq, *device, g_waiter)).value();
  }
  common::Result<int> Poll(std::span<ibv_wc> wc) {
    return waiter ? waiter->Poll(wc) : cq->Poll(wc);
  }
  ~Side() {
    waiter.reset();
    qps.clear();
    mr.reset();
    cq.reset();
    pd.reset();
    device.reset();
  }
  Info MyInfo() const {
    Info info{};
    for (int i = 0; i < kQps; ++i) info.qpn[i] = qps[static_cast<size_t>(i)]->qp_num();
    info.addr = reinterpret_cast<uint64_t>(buffer.data());
    info.rkey = mr->rkey();
    return info;
  }
  bool Connect(const Info& peer, const char* peer_ip, uint32_t my_psn, uint32_t peer_psn) {
    for (int i = 0; i < kQps; ++i) {
      verbs::Qp& q = *qps[static_cast<size_t>(i)];
      verbs::QpRtrParams rtr;
      rtr.remote = {*verbs::Gid::ParseIpv4(peer_ip), 0, peer.qpn[i], peer_psn};
      rtr.min_rnr_timer = 1;
      if (!q.ToInit({}).ok() || !q.ToRtr(rtr).ok() || !q.ToRts({.sq_psn = my_psn}).ok()) {
        return false;
      }
    }
    return true;
  }
  soft::TcpFabric fabric;
  soft::SoftProvider provider;
  std::vector<uint8_t> buffer;
  std::unique_ptr<verbs::Device> device;
  std::unique_ptr<verbs::ProtectionDomain> pd;
  std::unique_ptr<verbs::Cq> cq;
  std::unique_ptr<verbs::MemoryRegion> mr;
  std::vector<std::unique_ptr<verbs::Qp>> qps;
  std::unique_ptr<verbs::CompletionWaiter> waiter;  // --poll=sleep
};

bool PostRecv(verbs::Qp& q, uint64_t id) {
  ibv_recv_wr wr{};
  wr.wr_id = id;
  ibv_recv_wr* bad = nullptr;
  return q.PostRecv(&wr, &bad).ok();
}

bool Post(verbs::Qp& q, ibv_wr_opcode op, uint64_t local, uint32_t lkey, uint32_t len,
          uint64_t remote, uint32_t rkey, uint64_t id) {
  return testing::PostRdma(q, op, local, len, lkey, remote, rkey, id).ok();
}

// The child: answers every WRITE_WITH_IMM on QP 0 with one back; otherwise just makes progress.
int RunChild(int rfd, int wfd) {
  Side s("127.0.0.2");
  Info parent{};
  if (read(rfd, &parent, sizeof(parent)) != sizeof(parent)) return 1;
  const Info mine = s.MyInfo();
  if (write(wfd, &mine, sizeof(mine)) != sizeof(mine)) return 1;
  if (!s.Connect(parent, "127.0.0.1", 2000, 1000)) return 2;
  for (int i = 0; i < 256; ++i) PostRecv(*s.qps[0], 0);
  fcntl(rfd, F_SETFL, O_NONBLOCK);
  ibv_wc wc[32];
  for (uint64_t spins = 0;; ++spins) {
    auto n = s.Poll(wc);
    if (!n.ok()) return 3;
    for (int k = 0; k < *n; ++k) {
      if (wc[k].status != IBV_WC_SUCCESS) return 4;
      if (wc[k].opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
        PostRecv(*s.qps[0], 0);
        Post(*s.qps[0], IBV_WR_RDMA_WRITE_WITH_IMM, 0, 0, 0, 0, 0, 1);
      }
    }
    if (spins % 1024 == 0) {
      char c;
      if (read(rfd, &c, 1) == 1 || (spins % (1 << 20) == 0 && getppid() == 1)) return 0;
    }
  }
}

struct Result {
  double gbps = 0;
  double ops = 0;
};

// Keeps `depth` operations of `bytes` in flight on each of `qps` QPs for `seconds`.
Result Stream(Side& s, const Info& peer, int qps, ibv_wr_opcode op, uint32_t bytes, int depth,
              double seconds) {
  ibv_wc wc[64];
  uint64_t next = 0, done = 0, posted = 0;
  const size_t slots = std::max<size_t>(1, g_working_set / bytes);
  auto post_one = [&](int q) {
    const uint64_t off = (next++ % slots) * bytes;
    if (Post(*s.qps[static_cast<size_t>(q)], op, reinterpret_cast<uint64_t>(s.buffer.data()) + off,
             s.mr->lkey(), bytes, peer.addr + off, peer.rkey, static_cast<uint64_t>(q))) {
      ++posted;
    }
  };
  for (int q = 0; q < qps; ++q) {
    for (int d = 0; d < depth; ++d) post_one(q);
  }
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    auto n = s.Poll(wc);
    if (!n.ok()) break;
    for (int k = 0; k < *n; ++k) {
      if (wc[k].status != IBV_WC_SUCCESS) {
        std::fprintf(stderr, "tcp_bench: completion %s\n", ibv_wc_status_str(wc[k].status));
        std::exit(1);
      }
      ++done;
      post_one(static_cast<int>(wc[k].wr_id));
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  for (uint64_t drained = done; drained < posted;) {  // let the queue empty before the next test
    auto n = s.Poll(wc);
    if (n.ok()) drained += static_cast<uint64_t>(*n);
  }
  return {static_cast<double>(done) * bytes / secs / 1e9, static_cast<double>(done) / secs};
}

double PingPongOneWayUs(Side& s, int rounds) {
  ibv_wc wc[8];
  for (int i = 0; i < 64; ++i) PostRecv(*s.qps[0], 7);
  auto once = [&] {
    Post(*s.qps[0], IBV_WR_RDMA_WRITE_WITH_IMM, 0, 0, 0, 0, 0, 9);
    for (bool got = false; !got;) {
      auto n = s.Poll(wc);
      for (int k = 0; n.ok() && k < *n; ++k) {
        if (wc[k].opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
          got = true;
          PostRecv(*s.qps[0], 7);  // keep the pool full for the next pong
        }
      }
    }
  };
  for (int i = 0; i < 100; ++i) once();  // warm-up
  const auto start = Clock::now();
  for (int i = 0; i < rounds; ++i) once();
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  return us / rounds / 2;
}

// Each trial: the 4 KiB WRITE rate (depth 64) and the ping-pong, quiet and next to a busy process.
void Contention(Side& s, const Info& peer, int trials, double seconds) {
  std::printf("polling: %s\n", g_poll_sleep ? "spin, then sleep (CompletionWaiter)" : "spin");
  std::printf("%-6s %11s %11s %6s %11s %11s %6s\n", "trial", "4K Mops/s", "contended", "ratio",
              "1-way us", "contended", "ratio");
  double worst_rate = 1e9, worst_latency = 1e9;
  for (int t = 1; t <= trials; ++t) {
    const double quiet_rate = Stream(s, peer, 1, IBV_WR_RDMA_WRITE, 4096, 64, seconds).ops / 1e6;
    const double quiet_us = PingPongOneWayUs(s, 5000);
    double busy_rate = 0, busy_us = 0;
    {
      const bench::BusyProcess hog;
      busy_rate = Stream(s, peer, 1, IBV_WR_RDMA_WRITE, 4096, 64, seconds).ops / 1e6;
      busy_us = PingPongOneWayUs(s, 2000);
    }
    const double rate = busy_rate / quiet_rate, latency = quiet_us / busy_us;
    worst_rate = std::min(worst_rate, rate);
    worst_latency = std::min(worst_latency, latency);
    std::printf("%-6d %11.4f %11.4f %6.2f %11.1f %11.1f %6.2f\n", t, quiet_rate, busy_rate, rate,
                quiet_us, busy_us, latency);
    std::fflush(stdout);
  }
  std::printf("worst of %d trials: 4 KiB rate kept %.2f, latency kept %.2f (quiet/contended)\n",
              trials, worst_rate, worst_latency);
}

}  // namespace

int main(int argc, char** argv) {
  double iperf = 0;
  double seconds = 3;
  enum class Only { kAll, kWrite, kAllButWrite, kRmaCompare, kBulk4Qp, kNone } only = Only::kAll;
  int contention_trials = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--write-only") {
      only = Only::kWrite;
    } else if (a == "--skip-write") {
      only = Only::kAllButWrite;
    } else if (a == "--rma-compare") {
      only = Only::kRmaCompare;
    } else if (a == "--bulk-4qp") {
      only = Only::kBulk4Qp;
    } else if (a.starts_with("--working-set=")) {
      g_working_set = std::strtoull(a.c_str() + 14, nullptr, 10);
    } else if (a.starts_with("--seconds=")) {
      seconds = std::atof(a.c_str() + 10);
    } else if (a == "--poll=sleep" || a == "--poll=spin") {
      g_poll_sleep = a == "--poll=sleep";
    } else if (a == "--no-yield") {
      g_waiter.yield_while_spinning = false;
    } else if (a.starts_with("--spin-us=")) {
      g_waiter.spin_ns = std::strtoull(a.c_str() + 10, nullptr, 10) * 1000;
    } else if (a.starts_with("--contention=")) {
      contention_trials = std::atoi(a.c_str() + 13);
    } else if (a.starts_with("--qp-window=")) {
      g_qp_window = std::strtoull(a.c_str() + 12, nullptr, 10);
    } else if (!a.starts_with("--")) {
      iperf = std::atof(a.c_str());
    } else {
      std::fprintf(stderr,
                   "usage: braid_tcp_bench [--write-only|--skip-write|--rma-compare|--bulk-4qp] "
                   "[--seconds=S] "
                   "[--working-set=BYTES] "
                   "[--qp-window=BYTES] [--poll=spin|sleep] [--spin-us=N] [--contention=TRIALS] "
                   "[iperf3 GB/s]\n");
      return 2;
    }
  }
  if (seconds <= 0) seconds = 3;
  if (g_working_set < 4096 || g_working_set > kBuffer) g_working_set = kBuffer;
  const std::optional<bench::ForkedChild> child = bench::ForkChild(RunChild);
  if (!child) return 1;
  int rc = 0;
  {
    Side s("127.0.0.1");
    const Info mine = s.MyInfo();
    Info peer{};
    if (write(child->to_child, &mine, sizeof(mine)) != sizeof(mine) ||
        read(child->from_child, &peer, sizeof(peer)) != sizeof(peer) ||
        !s.Connect(peer, "127.0.0.2", 1000, 2000)) {
      std::fprintf(stderr, "tcp_bench: setup failed\n");
      rc = 1;
    } else {
      auto line = [&](const char* what, double value, const char* unit, bool ratio) {
        std::printf("%-46s %10.3f %-6s", what, value, unit);
        if (ratio && iperf > 0) std::printf("  ratio to iperf3 %.2f", value / iperf);
        std::printf("\n");
        std::fflush(stdout);
      };
      if (contention_trials > 0) {
        Contention(s, peer, contention_trials, seconds);
        only = Only::kNone;
      } else if (only == Only::kRmaCompare) {
        std::printf("braid soft TCP link, working set %zu MiB, 16 in flight\n",
                    g_working_set >> 20);
        auto rma = [&](const char* what, ibv_wr_opcode op, uint32_t bytes, bool rate) {
          const Result r = Stream(s, peer, 1, op, bytes, 16, seconds);
          std::printf("%-40s %10.3f %s\n", what, rate ? r.ops / 1e6 : r.gbps,
                      rate ? "Mops/s" : "GB/s");
          std::fflush(stdout);
        };
        rma("1 MiB RMA WRITE", IBV_WR_RDMA_WRITE, 1 << 20, false);
        rma("1 MiB RMA READ", IBV_WR_RDMA_READ, 1 << 20, false);
        rma("4 KiB RMA WRITE rate", IBV_WR_RDMA_WRITE, 4096, true);
        only = Only::kNone;
      }
      if (iperf > 0) line("iperf3, one stream, 1 MiB writes", iperf, "GB/s", false);
      // 1 MiB operations, 16 deep on each of `qps` QPs.
      auto bulk = [&](const char* what, int qps, ibv_wr_opcode op) {
        line(what, Stream(s, peer, qps, op, 1 << 20, 16, seconds).gbps, "GB/s", true);
      };
      if (only == Only::kAll || only == Only::kWrite) {
        bulk("1 soft QP, 1 MiB RDMA WRITE, depth 16", 1, IBV_WR_RDMA_WRITE);
        bulk("4 soft QPs, 1 MiB RDMA WRITE, depth 16 each", 4, IBV_WR_RDMA_WRITE);
      }
      if (only == Only::kBulk4Qp) {
        bulk("4 soft QPs, 1 MiB RDMA WRITE, depth 16 each", 4, IBV_WR_RDMA_WRITE);
        bulk("4 soft QPs, 1 MiB RDMA READ, depth 16 each", 4, IBV_WR_RDMA_READ);
      }
      if (only == Only::kAll || only == Only::kAllButWrite) {
        bulk("1 soft QP, 1 MiB RDMA READ, depth 16", 1, IBV_WR_RDMA_READ);
        bulk("4 soft QPs, 1 MiB RDMA READ, depth 16 each", 4, IBV_WR_RDMA_READ);
        const Result small = Stream(s, peer, 1, IBV_WR_RDMA_WRITE, 4096, 64, seconds);
        line("1 soft QP, 4 KiB RDMA WRITE, depth 64", small.gbps, "GB/s", true);
        line("1 soft QP, 4 KiB RDMA WRITE rate", small.ops / 1e6, "Mops/s", false);
        line("WRITE_WITH_IMM ping-pong, one-way latency", PingPongOneWayUs(s, 20000), "us", false);
      }
    }
    const char quit = 'q';
    if (write(child->to_child, &quit, 1) != 1) rc = 1;
  }
  if (!bench::JoinChild(*child, "tcp_bench")) rc = 1;
  return rc;
}
