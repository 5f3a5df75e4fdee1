// braidctl: the Braid command line. Talks to agents through the client SDK.
//
//   braidctl [--agent ADDR] [--json] info | devices | list | destroy VQP | drain DEV | undrain DEV
//   braidctl --agent A connect --peer B [--qps 8] [--scheme spray|dqplb]
//   braidctl --agent A bench --peer B [--size 1M] [--total 1G] [--verify]
//   braidctl --agent A copy --peer B SRC DST
//
// bench and copy map the agents' regions, so they run on the agents' host (both agents local,
// as in the demo). Exit status: 0 success, 1 operation failed, 2 usage, 128 + N when signal N
// (SIGINT, SIGTERM) stopped a copy. A copy that fails or is stopped cuts DST to the bytes that
// arrived (a prefix of SRC), so it never passes for a whole copy by its size.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/transfer_session.h"
#include "client_sdk/braidctl/copy_pipeline.h"
#include "client_sdk/braidctl/progress.h"
#include "dataplane/common/quote.h"
#include "dataplane/common/version.h"
#include "proto/braid/v1/health_services.h"

namespace {

using braid::client::AgentClient;
using braid::client::Status;
namespace v1 = braid::v1;

constexpr uint64_t kMiB = 1 << 20;

struct Globals {
  std::string agent = "127.0.0.1:7600";
  bool json = false;
  bool quiet = false;
  uint32_t timeout_ms = 30000;
  std::string tls_ca, tls_cert, tls_key, token;  // for every agent it calls
};

int Fail(const std::string& what, const Status& status) {
  std::fprintf(stderr, "braidctl: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

// ", owner NAME" for what an identified caller made ("" for an anonymous one's).
std::string OwnerText(const std::string& owner) {
  return owner.empty() ? "" : ", owner " + braid::common::EscapeControl(owner);
}

// `m` as JSON: indented, or (`one_line`, for a stream's records: JSON Lines) on one line.
std::string Json(const google::protobuf::Message& m, bool one_line = false) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = !one_line;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return one_line ? out + "\n" : out;
}

// What a list command prints: `listed` as one JSON `Response` (`entries` is where its entries go)
// with --json, else a line each (`line`). 1 and why when the agent refused the list.
template <typename Response, typename Entry, typename Line>
int PrintListing(const Globals& g, const char* what,
                 const braid::common::Result<std::vector<Entry>>& listed,
                 google::protobuf::RepeatedPtrField<Entry>* (Response::*entries)(), Line line) {
  if (!listed.ok()) return Fail(what, listed.status());
  if (g.json) {
    Response all;
    (all.*entries)()->Add(listed->begin(), listed->end());
    std::printf("%s", Json(all).c_str());
    return 0;
  }
  for (const Entry& e : *listed) line(e);
  return 0;
}

// A client of `target`; with `hold`, what it creates lives only as long as this command (bench
// and copy: a braidctl interrupted or killed mid-run leaves no VQP or region behind).
std::shared_ptr<AgentClient> OpenOrDie(const Globals& g, const std::string& target, int* rc,
                                       bool hold = false) {
  auto c = AgentClient::Open(target, {.call_timeout = std::chrono::seconds(30),
                                      .connect_timeout = std::chrono::seconds(5),
                                      .tls_ca = g.tls_ca,
                                      .tls_cert = g.tls_cert,
                                      .tls_key = g.tls_key,
                                      .token = g.token,
                                      .hold = hold});
  if (!c.ok()) {
    *rc = Fail("connect to " + target, c.status());
    return nullptr;
  }
  return *c;
}

// A CLI11 check that an option is a whole number in decimal digits (CLI11 took "-1" for an
// unsigned option as 2^64 - 1).
CLI::Validator WholeNumber() {
  return CLI::Validator(
      [](const std::string& text) -> std::string {
        if (!text.empty() &&
            std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return "";
        }
        return "'" + text.substr(0, 100) + "' is not a whole number (0, 1, 2, ...)";
      },
      "N");
}

// A CLI11 check that an option is a byte count (ParseBytes) of at least `min` bytes.
CLI::Validator ByteCount(uint64_t min) {
  return CLI::Validator(
      [min](const std::string& text) -> std::string {
        const std::optional<uint64_t> n = braid::ctl::ParseBytes(text);
        if (!n) return "'" + text.substr(0, 100) + "' is not a byte count (e.g. 4K, 1M, 2.5G)";
        if (*n < min) return "'" + text.substr(0, 100) + "' is below " + std::to_string(min);
        return "";
      },
      "BYTES");
}

std::string DeviceStateWord(v1::DeviceState state) {
  return state == v1::DEVICE_STATE_HEALTHY   ? "healthy"
         : state == v1::DEVICE_STATE_DRAINED ? "drained"
         : state == v1::DEVICE_STATE_FAULTED ? "faulted"
                                             : "unknown";
}

// "healthy", "drained" or "faulted", and ", port down" when its link is, with what the device
// returns to once the link is back unless healthy ("drained once its link is back").
std::string DeviceStateText(const v1::Device& d) {
  const std::string state = DeviceStateWord(d.state());
  if (d.port_active()) return state;
  const v1::DeviceState back = d.state_when_port_up();
  return state + ", port down" +
         (back == v1::DEVICE_STATE_DRAINED || back == v1::DEVICE_STATE_FAULTED
              ? " (" + DeviceStateWord(back) + " once its link is back)"
              : "");
}

v1::Scheme SchemeOf(const std::string& s) {
  return s == "dqplb" ? v1::SCHEME_DQPLB : v1::SCHEME_SPRAY;
}

// Per-QP and per-device bytes of a VQP, as a small table (or JSON fields).
void PrintSpread(const v1::VirtualQpInfo& info, bool json) {
  std::map<std::string, uint64_t> per_device;
  uint64_t total = 0;
  for (const auto& q : info.qps()) {
    per_device[q.device()] += q.bytes_written() + q.bytes_read();
    total += q.bytes_written() + q.bytes_read();
  }
  if (json) return;
  std::printf("spread over %d physical QPs:\n", info.qps_size());
  for (const auto& q : info.qps()) {
    const uint64_t b = q.bytes_written() + q.bytes_read();
    std::printf("  QP %-2u %-6s qpn %-6u %-9s %10s  %5.1f%%\n", q.index(), q.device().c_str(),
                q.qp_num(), q.message_qp() ? "(message)" : "", braid::ctl::HumanBytes(b).c_str(),
                total ? 100.0 * static_cast<double>(b) / static_cast<double>(total) : 0.0);
  }
  for (const auto& [d, b] : per_device) {
    std::printf("  NIC %-6s %10s  %5.1f%%\n", d.c_str(), braid::ctl::HumanBytes(b).c_str(),
                total ? 100.0 * static_cast<double>(b) / static_cast<double>(total) : 0.0);
  }
}

// Moves `total` bytes in `size` operations from a's region to b's; returns seconds or an error.
struct MoveStats {
  double seconds = 0;
  uint64_t bytes = 0;
  Status status;
};

MoveStats Move(braid::client::TransferSession& session, const braid::client::Region& src,
               const v1::RemoteRegion& dst, uint64_t size, uint64_t total,
               braid::ctl::Progress* progress, uint32_t timeout_ms) {
  MoveStats m;
  const uint64_t slots = src.size() / size;
  std::deque<std::future<braid::client::TransferResult>> inflight;
  const auto t0 = std::chrono::steady_clock::now();
  auto reap = [&](bool all) {
    while (!inflight.empty() && (all || inflight.size() >= session.window())) {
      auto r = inflight.front().get();
      inflight.pop_front();
      if (!r.status.ok() && m.status.ok()) m.status = r.status;
      m.bytes += r.bytes;
      if (progress) progress->Update(m.bytes);
    }
  };
  for (uint64_t off = 0, i = 0; off < total && m.status.ok(); off += size, ++i) {
    braid::client::TransferOp op;
    op.op = v1::OP_WRITE;
    op.local_region = src.id();
    op.local_offset = (i % slots) * size;
    op.remote = dst;
    op.remote_offset = (i % slots) * size;
    op.length = std::min(size, total - off);
    op.timeout = std::chrono::milliseconds(timeout_ms);
    inflight.push_back(session.Submit(op));
    reap(false);
  }
  reap(true);
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

int Bench(const Globals& g, const std::string& peer, uint64_t size, uint64_t total, uint32_t qps,
          const std::string& scheme, bool verify) {
  int rc = 0;
  auto a = OpenOrDie(g, g.agent, &rc, /*hold=*/true);
  auto b = a ? OpenOrDie(g, peer, &rc, /*hold=*/true) : nullptr;
  if (!a || !b) return rc;
  auto conn = braid::client::Connect(a, b, {.scheme = SchemeOf(scheme), .num_qps = qps});
  if (!conn.ok()) return Fail("connect", conn.status());
  const uint64_t region = std::max(size, std::min<uint64_t>(total, 256 * kMiB));
  auto src = a->RegisterMemory(region, "bench-src");
  if (!src.ok()) return Fail("register on " + g.agent, src.status());
  auto dst = b->RegisterMemory(region, "bench-dst", {(*conn)->vqp_b()});
  if (!dst.ok()) return Fail("register on " + peer, dst.status());
  if (verify) {
    std::mt19937_64 rng(7);
    for (uint64_t i = 0; i + 8 <= region; i += 8) {
      const uint64_t w = rng();
      std::memcpy((*src)->data() + i, &w, 8);
    }
  }
  auto session = braid::client::TransferSession::Open(a, (*conn)->vqp_a());
  if (!session.ok()) return Fail("open transfer session", session.status());
  braid::ctl::Progress progress("bench", total, !g.quiet && !g.json);
  MoveStats m = Move(**session, **src, *(*dst)->remote((*conn)->vqp_b()), size, total, &progress,
                     g.timeout_ms);
  progress.Finish();
  if (!m.status.ok()) return Fail("bench", m.status);
  // The operations go round the region's whole `size` slots: an op size that does not divide it
  // leaves its tail unwritten (comparing it said DIFFERS of a correct transfer).
  const uint64_t written = std::min(region / size * size, total);
  bool identical = true;
  if (verify) identical = std::memcmp((*src)->data(), (*dst)->data(), written) == 0;
  auto info = a->GetVqp((*conn)->vqp_a());
  const double gbs = static_cast<double>(m.bytes) / m.seconds / 1e9;
  if (g.json) {
    std::printf(
        "{\"bytes\": %lu, \"seconds\": %.6f, \"gb_per_s\": %.3f, \"op_size\": %lu, "
        "\"qps\": %u, \"path\": \"%s\", \"verified\": %s}\n",
        static_cast<unsigned long>(m.bytes), m.seconds, gbs, static_cast<unsigned long>(size), qps,
        (*session)->path(), verify ? (identical ? "true" : "false") : "null");
  } else {
    std::printf("moved %s in %.3f s: %.3f GB/s (%s operations, %u-QP %s VQP, %s path)\n",
                braid::ctl::HumanBytes(static_cast<double>(m.bytes)).c_str(), m.seconds, gbs,
                braid::ctl::HumanBytes(static_cast<double>(size)).c_str(), qps, scheme.c_str(),
                (*session)->path());
    if (verify) {
      std::printf("verified: the %lu bytes written to the destination region %s the source\n",
                  static_cast<unsigned long>(written),
                  identical ? "are byte-for-byte identical to" : "DIFFER from");
    }
    if (info.ok()) PrintSpread(*info, false);
  }
  return identical ? 0 : 1;
}

std::string Hex(const unsigned char* d, unsigned n) {
  std::string s;
  char b[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(b, sizeof(b), "%02x", d[i]);
    s += b;
  }
  return s;
}

std::string Sha256File(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(8 * kMiB);
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) EVP_DigestUpdate(ctx, buf.data(), size_t(n));
  close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return Hex(md, len);
}

// Set by SIGINT or SIGTERM while a copy runs: the pipeline stops and the output is cut.
std::atomic<bool> g_stop{false};
volatile sig_atomic_t g_stop_signal = 0;

void StopCopy(int signo) {
  g_stop_signal = signo;
  g_stop.store(true);
}

// SIGINT and SIGTERM stop the copy (once: a second one kills as usual) while this lives.
class StopOnSignal {
 public:
  StopOnSignal() {
    struct sigaction sa {};
    sa.sa_handler = StopCopy;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopOnSignal() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

// The copy's output file. Opened only once both agents are connected and both regions registered,
// so a copy that cannot start leaves an existing file as it was and creates none. Overwritten in
// place, then cut to size: an existing file's pages are reused (allocating fresh tmpfs or
// page-cache pages costs more than the copy itself on some hosts). After a failure, Abandon cuts it
// to what arrived (a prefix of the source), so a partial copy never passes for a whole one by its
// size, and removes a file this copy created and wrote nothing into.
class CopyOutput {
 public:
  ~CopyOutput() {
    if (fd_ >= 0) close(fd_);
  }
  Status Open(const std::string& path, uint64_t size) {
    path_ = path;
    fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    created_ = fd_ >= 0;
    if (fd_ < 0 && errno == EEXIST) fd_ = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) return Status::FromErrno(errno, "open");
    struct stat st {};
    regular_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
    if (regular_ && ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return Status::FromErrno(errno, "ftruncate");
    }
    return Status::Ok();
  }
  int fd() const { return fd_; }
  bool regular() const { return regular_; }
  // What became of the file, for the error message.
  std::string Abandon(uint64_t bytes) {
    if (!regular_) return path_ + " holds the first " + std::to_string(bytes) + " bytes";
    if (created_ && bytes == 0 && unlink(path_.c_str()) == 0) {
      return path_ + " removed (nothing had arrived)";
    }
    if (bytes == 0 && ftruncate(fd_, 0) == 0) return path_ + " emptied (nothing had arrived)";
    if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
      return path_ + " could not be cut to the " + std::to_string(bytes) +
             " bytes copied: " + std::strerror(errno);
    }
    return path_ + " cut to the first " + std::to_string(bytes) + " bytes copied";
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool created_ = false;
  bool regular_ = false;
};

int Copy(const Globals& g, const std::string& peer, const std::string& src_path,
         const std::string& dst_path, uint32_t qps, const std::string& scheme) {
  const int in = open(src_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Fail("open " + src_path, Status::FromErrno(errno, "open"));
  struct stat st {};
  if (fstat(in, &st) != 0) return Fail("stat " + src_path, Status::FromErrno(errno, "fstat"));
  if (!S_ISREG(st.st_mode)) {  // a directory failed half-way, /dev/zero never ended
    return Fail("copy " + src_path,
                Status::InvalidArgument("not a regular file: copy moves files, whose size is "
                                        "known before the copy starts"));
  }
  // A file that says it is empty and is not (/proc, /sys): its size is made as it is read.
  if (char probe; st.st_size == 0 && pread(in, &probe, 1, 0) == 1) {
    return Fail("copy " + src_path,
                Status::InvalidArgument("its size reads as 0 but it has content (a /proc or /sys "
                                        "file): copy a regular file (cat it into one first)"));
  }
  // Onto itself (the same path, a link): a failure would cut the source to what arrived.
  struct stat dst_st {};
  if (stat(dst_path.c_str(), &dst_st) == 0 && dst_st.st_dev == st.st_dev &&
      dst_st.st_ino == st.st_ino) {
    return Fail("copy " + src_path,
                Status::InvalidArgument("it and " + dst_path +
                                        " are the same file: give another destination"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  int rc = 0;
  auto a = OpenOrDie(g, g.agent, &rc, /*hold=*/true);
  auto b = a ? OpenOrDie(g, peer, &rc, /*hold=*/true) : nullptr;
  if (!a || !b) return rc;
  auto conn =
      braid::client::Connect(a, b, {.scheme = SchemeOf(scheme), .num_qps = qps, .label = "copy"});
  if (!conn.ok()) return Fail("connect", conn.status());
  // Slots on each side, so file reads, transfers and file writes overlap (copy_pipeline.h).
  const auto staging = braid::ctl::CopyStaging::For(size);
  auto ra = a->RegisterMemory(staging.region_bytes(), "copy-src");
  if (!ra.ok()) return Fail("register on " + g.agent, ra.status());
  auto rb = b->RegisterMemory(staging.region_bytes(), "copy-dst", {(*conn)->vqp_b()});
  if (!rb.ok()) return Fail("register on " + peer, rb.status());
  auto session = braid::client::TransferSession::Open(a, (*conn)->vqp_a());
  if (!session.ok()) return Fail("open transfer session", session.status());
  CopyOutput out;
  if (Status s = out.Open(dst_path, size); !s.ok()) return Fail("create " + dst_path, s);
  braid::ctl::Progress progress("copy", size, !g.quiet && !g.json);
  const auto t0 = std::chrono::steady_clock::now();
  const braid::ctl::CopyPlan plan{.in_fd = in,
                                  .out_fd = out.fd(),
                                  .size = size,
                                  .slot_size = staging.slot_size,
                                  .op_size = staging.op_size,
                                  .timeout_ms = g.timeout_ms,
                                  .stop = &g_stop};
  braid::ctl::CopyOutcome copied;
  {
    const StopOnSignal stop_on_signal;
    copied = braid::ctl::RunCopyPipeline(plan, **session, **ra, **rb,
                                         *(*rb)->remote((*conn)->vqp_b()), &progress);
  }
  progress.Finish();
  if (!copied.status.ok()) {
    const std::string what = out.Abandon(copied.bytes);
    if (g_stop_signal != 0) {
      std::fprintf(stderr, "braidctl: copy of %s interrupted by %s; %s of %lu\n", src_path.c_str(),
                   strsignal(g_stop_signal), what.c_str(), static_cast<unsigned long>(size));
      return 128 + g_stop_signal;
    }
    return Fail("copy failed near offset " + std::to_string(copied.failed_at) + " (" + what + ")",
                copied.status);
  }
  close(in);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // A destination that is not a file (/dev/null as a sink) keeps nothing to compare.
  const bool compare = out.regular();
  const std::string hs = Sha256File(src_path), hd = compare ? Sha256File(dst_path) : "";
  const bool same = !hs.empty() && hs == hd;
  const char* verdict = !compare ? "not compared: the destination is not a regular file"
                        : same   ? "identical"
                                 : "MISMATCH";
  if (g.json) {
    std::printf(
        "{\"bytes\": %lu, \"seconds\": %.6f, \"path\": \"%s\", \"sha256_src\": \"%s\", "
        "\"sha256_dst\": \"%s\", \"identical\": %s}\n",
        static_cast<unsigned long>(size), seconds, (*session)->path(), hs.c_str(), hd.c_str(),
        !compare ? "null"
        : same   ? "true"
                 : "false");
  } else {
    std::printf("copied %s in %.3f s (%.3f GB/s, %s path)\nsha256 %s  %s\n",
                braid::ctl::HumanBytes(static_cast<double>(size)).c_str(), seconds,
                static_cast<double>(size) / seconds / 1e9, (*session)->path(), hs.c_str(),
                src_path.c_str());
    if (compare) std::printf("sha256 %s  %s\n", hd.c_str(), dst_path.c_str());
    std::printf("%s\n", verdict);
  }
  return !compare || same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"braidctl: drive Braid agents"};
  app.set_version_flag("--version", std::string("braidctl ") + braid::common::kVersion);
  app.require_subcommand(1);
  Globals g;
  app.add_option("-a,--agent", g.agent, "agent address (host:port or unix:/path)");
  app.add_flag("--json", g.json, "JSON output (events: one object per line)");
  app.add_flag("-q,--quiet", g.quiet, "no progress line");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline per transfer (0: the SDK's default, 30 s)")
      ->check(WholeNumber());
  app.add_option("--tls-ca", g.tls_ca, "CA bundle the agents' certificates must chain to (TLS)");
  app.add_option("--tls-cert", g.tls_cert, "this client's certificate (mutual TLS)");
  app.add_option("--tls-key", g.tls_key, "this client's private key (mutual TLS)");
  app.add_option("--token", g.token, "bearer token the agents know (sent only over TLS)");

  auto* info = app.add_subcommand("info", "agent id, provider, devices, uptime");
  auto* health = app.add_subcommand("health", "exit 0 if the agent is SERVING (probes)");
  bool liveness = false;
  health->add_flag("--liveness", liveness,
                   "only whether its data-plane thread turns (a liveness probe), not whether it "
                   "takes new work");
  auto* devices = app.add_subcommand("devices", "devices and their state");
  auto* list = app.add_subcommand("list", "virtual QPs");
  auto* regions = app.add_subcommand("regions", "registered memory regions");
  uint64_t vqp_id = 0, region_id = 0;
  auto* destroy = app.add_subcommand("destroy", "destroy a virtual QP");
  destroy->add_option("vqp", vqp_id)->required()->check(WholeNumber());
  auto* deregister = app.add_subcommand("deregister", "deregister a memory region");
  deregister->add_option("region", region_id)->required()->check(WholeNumber());
  std::string device;
  auto* drain = app.add_subcommand("drain", "drain a device (in-flight work finishes)");
  drain->add_option("device", device)->required();
  auto* undrain = app.add_subcommand("undrain", "return a drained device to service");
  undrain->add_option("device", device)->required();
  uint32_t event_count = 0, event_seconds = 0;
  auto* events = app.add_subcommand("events", "follow the agent's state changes (WatchEvents)");
  events->add_option("--count", event_count, "stop after this many events (0: never)")
      ->check(WholeNumber());
  events->add_option("--seconds", event_seconds, "stop after this many seconds (0: never)")
      ->check(WholeNumber());
  std::string peer, scheme = "spray", size = "1M", total = "1G", src, dst;
  uint32_t qps = 8;
  bool verify = false;
  auto* connect = app.add_subcommand("connect", "connect a VQP between --agent and --peer");
  auto* bench = app.add_subcommand("bench", "throughput from --agent to --peer");
  auto* copy = app.add_subcommand("copy", "copy a file through a VQP, sha256 verified");
  for (auto* c : {connect, bench, copy}) {
    c->add_option("--peer", peer, "the other agent")->required();
    c->add_option("--qps", qps, "data QPs")->check(WholeNumber());
    c->add_option("--scheme", scheme, "spray | dqplb")->check(CLI::IsMember({"spray", "dqplb"}));
  }
  bench->add_option("--size", size, "operation size (e.g. 1M)")->check(ByteCount(1));
  bench->add_option("--total", total, "bytes to move (e.g. 1G)")->check(ByteCount(0));
  bench->add_flag("--verify", verify, "fill the source and compare the destination");
  copy->add_option("src", src)->required();
  copy->add_option("dst", dst)->required();
  CLI11_PARSE(app, argc, argv);

  if (*bench) {
    return Bench(g, peer, *braid::ctl::ParseBytes(size), *braid::ctl::ParseBytes(total), qps,
                 scheme, verify);
  }
  if (*copy) return Copy(g, peer, src, dst, qps, scheme);
  int rc = 0;
  auto a = OpenOrDie(g, g.agent, &rc);
  if (!a) return rc;
  if (*health) {
    auto r = a->Serving(liveness ? v1::kLivenessService : v1::kReadinessService);
    if (!r.ok()) return Fail("health", r.status());
    std::printf("%s\n", *r ? "SERVING" : "NOT_SERVING");
    return *r ? 0 : 1;
  }
  if (*info) {
    auto r = a->GetInfo();
    if (!r.ok()) return Fail("info", r.status());
    if (g.json) {
      std::printf("%s", Json(*r).c_str());
    } else {
      std::printf("agent %s (braidd %s), provider %s, %u devices, %u VQPs, %u regions, up %lus\n",
                  r->agent_id().c_str(), r->version().c_str(), r->provider().c_str(), r->devices(),
                  r->virtual_qps(), r->regions(), static_cast<unsigned long>(r->uptime_seconds()));
      std::printf("you are %s (role %s)%s\n",
                  r->caller_identity().empty() ? "anonymous" : r->caller_identity().c_str(),
                  r->caller_role().c_str(),
                  r->plaintext() ? "; WARNING: the agent serves TCP without TLS" : "");
    }
    return 0;
  }
  if (*devices) {
    return PrintListing(
        g, "devices", a->ListDevices(), &v1::ListDevicesResponse::mutable_devices,
        [](const v1::Device& d) {
          std::printf("%-8s %-8s %-22s %-20s qps %-3u dead %-3u written %s read %s\n",
                      d.name().c_str(), d.provider().c_str(), d.gid().c_str(),
                      DeviceStateText(d).c_str(), d.qps(), d.dead_qps(),
                      braid::ctl::HumanBytes(static_cast<double>(d.bytes_written())).c_str(),
                      braid::ctl::HumanBytes(static_cast<double>(d.bytes_read())).c_str());
        });
  }
  if (*list) {
    return PrintListing(
        g, "list", a->ListVqps(), &v1::ListVirtualQpsResponse::mutable_vqps,
        [](const v1::VirtualQpInfo& v) {
          std::printf("vqp %-6lu %-12s %-6s %u QPs (%u healthy) %s pending %u failovers %lu%s\n",
                      static_cast<unsigned long>(v.vqp_id()),
                      braid::common::EscapeControl(v.label()).c_str(),
                      v.scheme() == v1::SCHEME_DQPLB ? "dqplb" : "spray", v.num_qps(),
                      v.healthy_data_qps(), v.connected() ? "connected" : "unconnected",
                      v.pending_sends(), static_cast<unsigned long>(v.failovers()),
                      OwnerText(v.owner()).c_str());
        });
  }
  if (*regions) {
    return PrintListing(g, "regions", a->ListRegions(), &v1::ListRegionsResponse::mutable_regions,
                        [](const v1::RegionInfo& r) {
                          std::printf(
                              "region %-6lu %-12s %10s granted to %d VQPs, %u transfers in "
                              "flight%s\n",
                              static_cast<unsigned long>(r.region_id()),
                              braid::common::EscapeControl(r.label()).c_str(),
                              braid::ctl::HumanBytes(static_cast<double>(r.length())).c_str(),
                              r.grants_size(), r.in_flight(), OwnerText(r.owner()).c_str());
                        });
  }
  if (*events) {
    grpc::ClientContext ctx;
    if (event_seconds > 0) {
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(event_seconds));
    }
    auto reader = a->stub().WatchEvents(&ctx, {});
    v1::WatchEventsResponse r;
    uint32_t seen = 0;
    while (reader->Read(&r)) {
      if (r.subscribed()) {  // from here on nothing is missed: say so (scripts may wait for it)
        std::fprintf(stderr, "braidctl events: subscribed\n");
        continue;
      }
      const v1::Event& e = r.event();
      if (g.json) {
        std::printf("%s", Json(e, /*one_line=*/true).c_str());
      } else {
        const std::time_t t = static_cast<std::time_t>(e.time_unix_ns() / 1000000000);
        char when[32];
        std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", std::gmtime(&t));
        std::printf("%s.%03luZ #%lu %-16s vqp %lu qp %d %s %s\n", when,
                    static_cast<unsigned long>(e.time_unix_ns() / 1000000 % 1000),
                    static_cast<unsigned long>(e.seq()), e.kind().c_str(),
                    static_cast<unsigned long>(e.vqp_id()), e.qp_index(), e.device().c_str(),
                    braid::common::EscapeControl(e.cause()).c_str());
      }
      std::fflush(stdout);
      if (event_count > 0 && ++seen >= event_count) {
        ctx.TryCancel();
        break;
      }
    }
    const grpc::Status s = reader->Finish();
    const bool ended_by_us = (event_count > 0 && seen >= event_count) ||
                             s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!s.ok() && !ended_by_us) {
      std::fprintf(stderr, "braidctl events: %s%s\n",
                   s.error_code() == grpc::StatusCode::UNAVAILABLE
                       ? "the agent ended the stream (it stopped or restarted, or the connection "
                         "broke): "
                       : "",
                   s.error_message().c_str());
      return 1;
    }
    return 0;
  }
  if (*destroy) {
    Status s = a->DestroyVqp(vqp_id);
    return s.ok() ? 0 : Fail("destroy", s);
  }
  if (*deregister) {
    Status s = a->DeregisterMemory(region_id);
    return s.ok() ? 0 : Fail("deregister", s);
  }
  if (*drain || *undrain) {
    auto r = *drain ? a->DrainDevice(device) : a->UndrainDevice(device);
    if (!r.ok()) return Fail(*drain ? "drain" : "undrain", r.status());
    std::printf(g.json ? "%s" : "%s\n",
                g.json ? Json(*r).c_str() : (device + ": " + DeviceStateText(*r)).c_str());
    return 0;
  }
  if (*connect) {
    auto b = OpenOrDie(g, peer, &rc);
    if (!b) return rc;
    auto conn = braid::client::Connect(a, b, {.scheme = SchemeOf(scheme), .num_qps = qps});
    if (!conn.ok()) return Fail("connect", conn.status());
    (*conn)->Release();  // the VQPs outlive this command
    if (g.json) {
      std::printf("{\"vqp_a\": %lu, \"vqp_b\": %lu}\n",
                  static_cast<unsigned long>((*conn)->vqp_a()),
                  static_cast<unsigned long>((*conn)->vqp_b()));
    } else {
      std::printf("connected: vqp %lu on %s <-> vqp %lu on %s\n",
                  static_cast<unsigned long>((*conn)->vqp_a()), g.agent.c_str(),
                  static_cast<unsigned long>((*conn)->vqp_b()), peer.c_str());
    }
    return 0;
  }
  return 2;
}
