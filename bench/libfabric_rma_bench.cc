// braid_libfabric_rma_bench: libfabric's `tcp` provider doing RMA between two processes on
// loopback: the reference that braid_tcp_bench --rma-compare is measured against (issue 17).
//
// Same shape as braid_tcp_bench: the parent (127.0.0.1) posts, a forked child (127.0.0.2) owns
// the target buffer and drives its provider's progress by reading its completion queue in a loop,
// as the soft NIC's child drives its fabric. One FI_EP_MSG endpoint (the analogue of one RC QP),
// 16 operations in flight, each operation at the next slot of a working set of --working-set
// bytes (64 MiB) in both buffers, wrapping around. Prints the three figures the comparison uses:
// 1 MiB WRITE and READ bandwidth and the 4 KiB WRITE operation rate, with the same labels as
// braid_tcp_bench --rma-compare (bench/libfabric_compare.sh pairs them up).
#include <fcntl.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/forked_child.h"

namespace {

using namespace braid;
using Clock = std::chrono::steady_clock;

constexpr const char* kService = "18790";
constexpr int kDepth = 16;
constexpr size_t kBuffer = 64ull << 20;

struct Info {
  uint64_t addr;
  uint64_t key;
};

bool Check(int rc, const char* what) {
  if (rc == 0) return true;
  std::fprintf(stderr, "libfabric_rma_bench: %s: %s\n", what, fi_strerror(-rc));
  return false;
}

fi_info* Hints() {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG | FI_RMA;
  hints->mode = FI_CONTEXT;
  hints->fabric_attr->prov_name = strdup("tcp");
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  return hints;
}

// One connected endpoint with its completion queue and a registered buffer.
struct Side {
  fi_info* info = nullptr;
  fid_fabric* fabric = nullptr;
  fid_eq* eq = nullptr;
  fid_pep* pep = nullptr;
  fid_domain* domain = nullptr;
  fid_ep* ep = nullptr;
  fid_cq* cq = nullptr;
  fid_mr* mr = nullptr;
  std::vector<uint8_t> buffer = std::vector<uint8_t>(kBuffer, 1);
  bool virt_addr = false;

  ~Side() {
    if (mr) fi_close(&mr->fid);
    if (ep) fi_close(&ep->fid);
    if (cq) fi_close(&cq->fid);
    if (pep) fi_close(&pep->fid);
    if (domain) fi_close(&domain->fid);
    if (eq) fi_close(&eq->fid);
    if (fabric) fi_close(&fabric->fid);
    if (info) fi_freeinfo(info);
  }

  bool Open(fi_info* fi) {
    fi_eq_attr eq_attr{};
    eq_attr.wait_obj = FI_WAIT_UNSPEC;
    return Check(fi_fabric(fi->fabric_attr, &fabric, nullptr), "fi_fabric") &&
           Check(fi_eq_open(fabric, &eq_attr, &eq, nullptr), "fi_eq_open");
  }
  // Makes the endpoint for `fi` (the child's: the connection request's info).
  bool MakeEndpoint(fi_info* fi) {
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_CONTEXT;
    cq_attr.size = 1024;
    cq_attr.wait_obj = FI_WAIT_NONE;
    virt_addr = (fi->domain_attr->mr_mode & FI_MR_VIRT_ADDR) != 0;
    if (!Check(fi_domain(fabric, fi, &domain, nullptr), "fi_domain") ||
        !Check(fi_endpoint(domain, fi, &ep, nullptr), "fi_endpoint") ||
        !Check(fi_cq_open(domain, &cq_attr, &cq, nullptr), "fi_cq_open") ||
        !Check(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind cq") ||
        !Check(fi_ep_bind(ep, &eq->fid, 0), "fi_ep_bind eq") ||
        !Check(fi_enable(ep), "fi_enable")) {
      return false;
    }
    return Check(
        fi_mr_reg(domain, buffer.data(), buffer.size(),
                  FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE, 0, 0, 0, &mr, nullptr),
        "fi_mr_reg");
  }
  bool WaitEvent(uint32_t want, fi_eq_cm_entry* entry) {
    uint32_t event = 0;
    const ssize_t n = fi_eq_sread(eq, &event, entry, sizeof(*entry), 10000, 0);
    if (n < 0 || event != want) {
      std::fprintf(stderr, "libfabric_rma_bench: waited for event %u, got %u (%zd)\n", want, event,
                   n);
      return false;
    }
    return true;
  }
  Info MyInfo() const {
    return {virt_addr ? reinterpret_cast<uint64_t>(buffer.data()) : 0, fi_mr_key(mr)};
  }
  // Reads completions; returns how many, or -1 on an error completion.
  int Poll(fi_cq_entry* entries, int max) {
    const ssize_t n = fi_cq_read(cq, entries, static_cast<size_t>(max));
    if (n >= 0) return static_cast<int>(n);
    if (n == -FI_EAGAIN) return 0;
    fi_cq_err_entry err{};
    fi_cq_readerr(cq, &err, 0);
    std::fprintf(stderr, "libfabric_rma_bench: completion error %s\n", fi_strerror(err.err));
    return -1;
  }
};

// The child: listens, accepts one connection, sends its buffer's address and key up the pipe,
// then reads its completion queue (which drives the provider's progress) until told to stop.
int RunChild(int rfd, int wfd) {
  Side s;
  fi_info* hints = Hints();
  const int rc = fi_getinfo(FI_VERSION(1, 17), "127.0.0.2", kService, FI_SOURCE, hints, &s.info);
  fi_freeinfo(hints);
  if (!Check(rc, "fi_getinfo (child)") || !s.Open(s.info)) return 1;
  if (!Check(fi_passive_ep(s.fabric, s.info, &s.pep, nullptr), "fi_passive_ep") ||
      !Check(fi_pep_bind(s.pep, &s.eq->fid, 0), "fi_pep_bind") ||
      !Check(fi_listen(s.pep), "fi_listen")) {
    return 1;
  }
  const char ready = 'r';
  if (write(wfd, &ready, 1) != 1) return 1;
  fi_eq_cm_entry entry{};
  if (!s.WaitEvent(FI_CONNREQ, &entry)) return 1;
  const bool made = s.MakeEndpoint(entry.info);
  const int accepted = made ? fi_accept(s.ep, nullptr, 0) : -FI_EINVAL;
  fi_freeinfo(entry.info);
  if (!made || !Check(accepted, "fi_accept") || !s.WaitEvent(FI_CONNECTED, &entry)) return 1;
  const Info mine = s.MyInfo();
  if (write(wfd, &mine, sizeof(mine)) != sizeof(mine)) return 1;
  fcntl(rfd, F_SETFL, O_NONBLOCK);
  fi_cq_entry wc[16];
  for (uint64_t spins = 0;; ++spins) {
    if (s.Poll(wc, 16) < 0) return 3;
    if (spins % 1024 == 0) {
      char c;
      if (read(rfd, &c, 1) == 1 || (spins % (1 << 20) == 0 && getppid() == 1)) return 0;
    }
  }
}

enum class Op { kWrite, kRead };

struct Result {
  double gbps = 0;
  double ops = 0;
};

// Keeps kDepth operations of `bytes` in flight for `seconds`, slot after slot of the working set.
Result Stream(Side& s, const Info& peer, Op op, size_t bytes, size_t working_set, double seconds) {
  const size_t slots = std::max<size_t>(1, working_set / bytes);
  uint64_t next = 0, done = 0, posted = 0;
  void* desc = fi_mr_desc(s.mr);
  fi_cq_entry wc[kDepth];
  auto post_one = [&]() -> bool {
    const uint64_t off = (next % slots) * bytes;
    void* local = s.buffer.data() + off;
    for (;;) {
      const ssize_t rc =
          op == Op::kWrite
              ? fi_write(s.ep, local, bytes, desc, 0, peer.addr + off, peer.key, nullptr)
              : fi_read(s.ep, local, bytes, desc, 0, peer.addr + off, peer.key, nullptr);
      if (rc == 0) break;
      if (rc != -FI_EAGAIN) return Check(static_cast<int>(rc), "post");
      const int n = s.Poll(wc, kDepth);  // the provider wants progress before it takes more
      if (n < 0) return false;
      done += static_cast<uint64_t>(n);
    }
    ++next;
    ++posted;
    return true;
  };
  for (int d = 0; d < kDepth; ++d) {
    if (!post_one()) std::exit(1);
  }
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  uint64_t counted = 0;
  while (Clock::now() < end) {
    const int n = s.Poll(wc, kDepth);
    if (n < 0) std::exit(1);
    done += static_cast<uint64_t>(n);
    while (posted - done < kDepth) {
      if (!post_one()) std::exit(1);
    }
    counted = done;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  while (done < posted) {  // let the queue empty before the next figure
    const int n = s.Poll(wc, kDepth);
    if (n < 0) std::exit(1);
    done += static_cast<uint64_t>(n);
  }
  return {static_cast<double>(counted) * static_cast<double>(bytes) / secs / 1e9,
          static_cast<double>(counted) / secs};
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  size_t working_set = kBuffer;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.starts_with("--seconds=")) {
      seconds = std::atof(a.c_str() + 10);
    } else if (a.starts_with("--working-set=")) {
      working_set = std::strtoull(a.c_str() + 14, nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: braid_libfabric_rma_bench [--seconds=S] [--working-set=BYTES]\n");
      return 2;
    }
  }
  if (seconds <= 0) seconds = 3;
  if (working_set < 4096 || working_set > kBuffer) working_set = kBuffer;
  const std::optional<bench::ForkedChild> child = bench::ForkChild(RunChild);
  if (!child) return 1;
  int rc = 1;
  {
    Side s;
    Info peer{};
    char ready = 0;
    fi_info* hints = Hints();
    const bool listening = read(child->from_child, &ready, 1) == 1;
    const int got =
        listening ? fi_getinfo(FI_VERSION(1, 17), "127.0.0.2", kService, 0, hints, &s.info) : -1;
    fi_freeinfo(hints);
    fi_eq_cm_entry entry{};
    if (listening && Check(got, "fi_getinfo") && s.Open(s.info) && s.MakeEndpoint(s.info) &&
        Check(fi_connect(s.ep, s.info->dest_addr, nullptr, 0), "fi_connect") &&
        s.WaitEvent(FI_CONNECTED, &entry) &&
        read(child->from_child, &peer, sizeof(peer)) == sizeof(peer)) {
      std::printf("libfabric %u.%u, provider %s, working set %zu MiB, %d in flight\n",
                  FI_MAJOR(fi_version()), FI_MINOR(fi_version()), s.info->fabric_attr->prov_name,
                  working_set >> 20, kDepth);
      auto line = [](const char* what, double value, const char* unit) {
        std::printf("%-40s %10.3f %s\n", what, value, unit);
        std::fflush(stdout);
      };
      line("1 MiB RMA WRITE", Stream(s, peer, Op::kWrite, 1 << 20, working_set, seconds).gbps,
           "GB/s");
      line("1 MiB RMA READ", Stream(s, peer, Op::kRead, 1 << 20, working_set, seconds).gbps,
           "GB/s");
      line("4 KiB RMA WRITE rate",
           Stream(s, peer, Op::kWrite, 4096, working_set, seconds).ops / 1e6, "Mops/s");
      rc = 0;
    } else {
      std::fprintf(stderr, "libfabric_rma_bench: setup failed\n");
    }
    const char quit = 'q';
    if (write(child->to_child, &quit, 1) != 1) rc = 1;
  }
  if (!bench::JoinChild(*child, "libfabric_rma_bench")) rc = 1;
  return rc;
}
