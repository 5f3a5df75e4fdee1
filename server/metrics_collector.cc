#include "server/metrics_collector.h"

#include <prometheus/client_metric.h>

#include <deque>
#include <iterator>
#include <limits>
#include <string>
#include <thread>
#include <utility>

#include "dataplane/common/version.h"
#include "server/process_stats.h"

namespace braid::server {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

class Families {
 public:
  MetricFamily& Family(const std::string& name, const std::string& help, MetricType type) {
    families_.push_back({name, help, type, {}});
    return families_.back();
  }
  static void Add(MetricFamily& f, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() {
    return {std::make_move_iterator(families_.begin()), std::make_move_iterator(families_.end())};
  }

 private:
  std::deque<MetricFamily> families_;  // references handed out stay valid as it grows
};

// The process_* series of every Prometheus client library's process collector.
void AddProcess(Families& out) {
  const ProcessStats p = ProcessStats::Read();
  Families::Add(out.Family("process_cpu_seconds_total",
                           "User and system CPU time spent, in seconds", MetricType::Counter),
                {}, p.cpu_seconds);
  Families::Add(out.Family("process_resident_memory_bytes", "Resident memory size, in bytes",
                           MetricType::Gauge),
                {}, static_cast<double>(p.resident_bytes));
  Families::Add(out.Family("process_virtual_memory_bytes", "Virtual memory size, in bytes",
                           MetricType::Gauge),
                {}, static_cast<double>(p.virtual_bytes));
  Families::Add(
      out.Family("process_start_time_seconds",
                 "Start time of the process since the Unix epoch, in seconds", MetricType::Gauge),
      {}, p.start_time_seconds);
  Families::Add(out.Family("process_threads", "Threads of the process (a scrape runs on one)",
                           MetricType::Gauge),
                {}, static_cast<double>(p.threads));
  Families::Add(out.Family("process_open_fds", "Open file descriptors", MetricType::Gauge), {},
                static_cast<double>(p.open_fds));
  Families::Add(out.Family("process_max_fds",
                           "The limit on open file descriptors (the soft one, which refuses)",
                           MetricType::Gauge),
                {}, static_cast<double>(p.max_fds));
}

const char* HealthLabel(size_t h) {
  static constexpr const char* kNames[] = {"healthy", "draining", "dead", "cooling"};
  return h < std::size(kNames) ? kNames[h] : "unknown";
}

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  // The exporter's (civetweb's) worker threads have small stacks; build the page on a thread with
  // a normal one. A scrape every few seconds makes the thread's cost irrelevant.
  std::vector<MetricFamily> out;
  std::thread([this, &out] { out = Build(); }).join();
  return out;
}

void MetricsCollector::DropCache() {
  std::lock_guard<std::mutex> lock(mu_);
  last_ = {};
}

std::vector<MetricFamily> MetricsCollector::Build() const {
  engine::EngineSnapshot s;
  bool fresh = false;
  {
    auto snap = engine_.Snapshot();
    std::lock_guard<std::mutex> lock(mu_);
    if (snap.ok()) {
      last_ = std::move(snap).value();
      fresh = true;
    }
    s = last_;
  }
  Families out;
  auto& up = out.Family("braid_engine_up",
                        "1 when the data-plane engine answered this scrape, 0 when it did not",
                        MetricType::Gauge);
  Families::Add(up, {}, fresh ? 1 : 0);
  Families::Add(
      out.Family("braid_build_info", "1, labelled with the agent's version, id and verbs provider",
                 MetricType::Gauge),
      {{"version", common::kVersion},
       {"agent_id", engine_.options().agent_id},
       {"provider", engine_.provider_name()}},
      1);
  Families::Add(out.Family("braid_transfers_refused",
                           "1 while new transfers are refused: the agent drains to stop (SIGTERM), "
                           "letting those in flight finish",
                           MetricType::Gauge),
                {}, s.transfers_refused ? 1 : 0);
  AddProcess(out);
  auto& stalled = out.Family("braid_engine_stalled",
                             "1 while the data-plane loop is stalled past the watchdog threshold",
                             MetricType::Gauge);
  Families::Add(stalled, {}, watchdog_.stalled() ? 1 : 0);
  auto& stalls = out.Family("braid_engine_loop_stalls_total",
                            "Episodes of the data-plane loop stalling past the watchdog threshold",
                            MetricType::Counter);
  Families::Add(stalls, {}, static_cast<double>(watchdog_.stalls()));
  auto& iterations = out.Family("braid_engine_loop_iterations_total",
                                "Turns of the data-plane loop", MetricType::Counter);
  Families::Add(iterations, {}, static_cast<double>(s.loop_iterations));
  auto& commands = out.Family("braid_engine_commands_total",
                              "Commands the data-plane loop ran (calls, transfer batches; a "
                              "list or snapshot runs one per batch of 128 VQPs or regions)",
                              MetricType::Counter);
  Families::Add(commands, {}, static_cast<double>(s.commands));
  auto& sleeps =
      out.Family("braid_engine_sleeps_total",
                 "Times the idle data-plane loop slept on its wakeup fds", MetricType::Counter);
  Families::Add(sleeps, {}, static_cast<double>(s.sleeps));
  auto& yields =
      out.Family("braid_engine_yields_total",
                 "Busy-poll turns of the data-plane loop that found nothing and gave the "
                 "core away",
                 MetricType::Counter);
  Families::Add(yields, {}, static_cast<double>(s.yields));
  auto& queue_full = out.Family(
      "braid_engine_command_queue_full_total",
      "Transfers that found the data-plane thread's command queue full (held until it had room)",
      MetricType::Counter);
  Families::Add(queue_full, {}, static_cast<double>(s.command_queue_full));

  for (const verbs::ProviderCounter& c : s.provider_counters) {
    auto& f = out.Family(std::string("braid_") + c.name + "_total", c.help, MetricType::Counter);
    Families::Add(f, {}, static_cast<double>(c.value));
  }

  auto& device_state =
      out.Family("braid_device_state",
                 "1 for the device's current state (healthy, drained, faulted)", MetricType::Gauge);
  auto& qps = out.Family("braid_physical_qps", "Physical QPs by device and health state",
                         MetricType::Gauge);
  auto& dead =
      out.Family("braid_dead_qps", "Physical QPs in the dead state, by device", MetricType::Gauge);
  auto& outstanding = out.Family("braid_outstanding_wrs", "Physical send WRs in flight, by device",
                                 MetricType::Gauge);
  auto& bytes = out.Family("braid_device_bytes_total",
                           "User bytes moved by the device's QPs (acknowledged), by operation",
                           MetricType::Counter);
  auto& frags = out.Family("braid_device_fragments_total",
                           "Fragments moved by the device's QPs (acknowledged), by operation",
                           MetricType::Counter);
  for (const engine::DeviceStatus& d : s.devices) {
    for (auto st : {engine::DeviceState::kHealthy, engine::DeviceState::kDrained,
                    engine::DeviceState::kFaulted}) {
      Families::Add(device_state, {{"device", d.name}, {"state", engine::DeviceStateName(st)}},
                    d.state == st ? 1 : 0);
    }
    for (size_t h = 0; h < d.qps_by_health.size(); ++h) {
      Families::Add(qps, {{"device", d.name}, {"state", HealthLabel(h)}}, d.qps_by_health[h]);
    }
    Families::Add(dead, {{"device", d.name}},
                  d.qps_by_health[static_cast<size_t>(vqp::QpHealth::kDead)]);
    Families::Add(outstanding, {{"device", d.name}}, d.outstanding_wrs);
    Families::Add(bytes, {{"device", d.name}, {"op", "write"}},
                  static_cast<double>(d.traffic.write_bytes));
    Families::Add(bytes, {{"device", d.name}, {"op", "read"}},
                  static_cast<double>(d.traffic.read_bytes));
    Families::Add(frags, {{"device", d.name}, {"op", "write"}},
                  static_cast<double>(d.traffic.write_fragments));
    Families::Add(frags, {{"device", d.name}, {"op", "read"}},
                  static_cast<double>(d.traffic.read_fragments));
  }

  auto& vqps =
      out.Family("braid_virtual_qps", "Virtual QPs on the agent, by state", MetricType::Gauge);
  std::array<uint32_t, engine::kNumVqpStates> by_state{};
  for (const auto& v : s.vqps) ++by_state[static_cast<size_t>(v.state)];
  for (int st = 0; st < engine::kNumVqpStates; ++st) {
    Families::Add(vqps, {{"state", engine::VqpStateName(static_cast<engine::VqpState>(st))}},
                  by_state[static_cast<size_t>(st)]);
  }
  auto& pending = out.Family("braid_pending_virtual_wrs",
                             "Virtual WRs posted and not yet completed, by VQP and direction",
                             MetricType::Gauge);
  auto& backlog = out.Family("braid_transfer_backlog", "Transfers waiting for room on the VQP",
                             MetricType::Gauge);
  MetricFamily* per_qp = nullptr;
  if (per_qp_) {
    per_qp = &out.Family("braid_qp_outstanding_wrs", "Send WRs in flight per physical QP",
                         MetricType::Gauge);
  }
  for (const auto& v : s.vqps) {
    const std::string id = std::to_string(v.id);
    Families::Add(pending, {{"vqp", id}, {"direction", "send"}}, v.pending_sends);
    Families::Add(pending, {{"vqp", id}, {"direction", "recv"}}, v.pending_recvs);
    Families::Add(backlog, {{"vqp", id}}, v.backlog);
    if (per_qp != nullptr) {
      for (const auto& q : v.qps) {
        Families::Add(*per_qp, {{"vqp", id}, {"qp", std::to_string(q.index)}, {"device", q.device}},
                      q.outstanding_wrs);
      }
    }
  }

  auto& completions =
      out.Family("braid_virtual_wr_completions_total",
                 "Virtual WRs completed, by operation and status", MetricType::Counter);
  for (int op = 0; op < engine::kNumTransferOps; ++op) {
    for (int outcome = 0; outcome < engine::kNumOutcomes; ++outcome) {
      const uint64_t n = s.completions[static_cast<size_t>(op)][static_cast<size_t>(outcome)];
      if (n == 0 && outcome != IBV_WC_SUCCESS) continue;  // success always, errors once seen
      Families::Add(completions,
                    {{"op", engine::TransferOpName(static_cast<engine::TransferOp>(op))},
                     {"status", engine::OutcomeName(outcome)}},
                    static_cast<double>(n));
    }
  }
  auto& latency = out.Family("braid_virtual_wr_latency_seconds",
                             "Virtual WR latency, from acceptance by the engine to completion",
                             MetricType::Histogram);
  {
    ClientMetric m;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < engine::kLatencyBounds.size(); ++b) {
      cumulative += s.latency_buckets[b];
      m.histogram.bucket.push_back({cumulative, engine::kLatencyBounds[b]});
    }
    cumulative += s.latency_buckets.back();
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = s.latency_sum_seconds;
    latency.metric.push_back(std::move(m));
  }
  auto& failovers =
      out.Family("braid_failovers_total", "Fragments re-posted on another QP after their QP died",
                 MetricType::Counter);
  Families::Add(failovers, {}, static_cast<double>(s.failovers));
  auto& deaths =
      out.Family("braid_qp_deaths_total", "Physical QPs that turned dead", MetricType::Counter);
  Families::Add(deaths, {}, static_cast<double>(s.qps_died));
  auto& recoveries =
      out.Family("braid_recoveries_total", "Dead-QP recoveries, by result", MetricType::Counter);
  Families::Add(recoveries, {{"result", "success"}}, static_cast<double>(s.recoveries_succeeded));
  Families::Add(recoveries, {{"result", "failure"}}, static_cast<double>(s.recoveries_failed));
  auto& notifications = out.Family("braid_notifications_total",
                                   "Write-with-immediate messages received", MetricType::Counter);
  Families::Add(notifications, {}, static_cast<double>(s.notifications));
  auto& inflight = out.Family("braid_transfers_in_flight",
                              "Transfers accepted and not yet completed", MetricType::Gauge);
  Families::Add(inflight, {}, static_cast<double>(s.transfers_in_flight));
  auto& registered =
      out.Family("braid_registered_bytes", "Bytes of registered memory", MetricType::Gauge);
  Families::Add(registered, {}, static_cast<double>(s.registered_bytes));
  if (s.region_dir_size_bytes > 0) {  // hugetlbfs without size= states none: no series
    auto& dir_size =
        out.Family("braid_region_dir_size_bytes", "Size of the file system of the region directory",
                   MetricType::Gauge);
    Families::Add(dir_size, {}, static_cast<double>(s.region_dir_size_bytes));
    auto& dir_free = out.Family("braid_region_dir_free_bytes",
                                "Bytes free in the file system of the region directory: what new "
                                "regions may still take (their pages are taken at registration)",
                                MetricType::Gauge);
    Families::Add(dir_free, {}, static_cast<double>(s.region_dir_free_bytes));
  }
  if (s.memory_limit_bytes > 0) {  // without a limit: no series
    auto& limit = out.Family("braid_memory_limit_bytes",
                             "The agent's memory limit (its cgroup's tightest), which the pages "
                             "of its region files and session rings count against",
                             MetricType::Gauge);
    Families::Add(limit, {}, static_cast<double>(s.memory_limit_bytes));
    auto& room = out.Family("braid_memory_room_bytes",
                            "Bytes new regions and session rings may still take under the "
                            "agent's memory limit, less what the agent keeps for itself",
                            MetricType::Gauge);
    Families::Add(room, {}, static_cast<double>(s.memory_room_bytes));
  }
  auto& regions = out.Family("braid_regions", "Registered memory regions", MetricType::Gauge);
  Families::Add(regions, {}, s.regions);
  auto& leases = out.Family("braid_leases", "Open leases (Hold calls)", MetricType::Gauge);
  Families::Add(leases, {}, static_cast<double>(leases_.open()));
  auto& reclaimed = out.Family("braid_reclaimed_total",
                               "VQPs destroyed and regions deregistered because the client that "
                               "held them went away (its Hold call or local session ended)",
                               MetricType::Counter);
  Families::Add(reclaimed, {{"kind", "vqp"}}, static_cast<double>(reclaimer_.vqps_reclaimed()));
  Families::Add(reclaimed, {{"kind", "region"}},
                static_cast<double>(reclaimer_.regions_reclaimed()));
  auto& reclaiming =
      out.Family("braid_reclaim_pending",
                 "VQPs and regions of gone clients not given back yet (regions wait for "
                 "their transfers in flight)",
                 MetricType::Gauge);
  Families::Add(reclaiming, {}, static_cast<double>(reclaimer_.pending()));
  // Refusals: always present, so a dashboard's rate() has a series from the start.
  auto& auth_failures = out.Family("braid_auth_failures_total",
                                   "Callers refused because their identity could not be "
                                   "established or has no role, by reason",
                                   MetricType::Counter);
  auto failures = audit_.auth_failures();
  for (const char* reason : AuditLog::kAuthFailureReasons) {
    Families::Add(auth_failures, {{"reason", reason}}, static_cast<double>(failures[reason]));
  }
  auto& denied =
      out.Family("braid_denied_requests_total",
                 "Calls refused to a known caller, by RPC and reason", MetricType::Counter);
  for (const auto& [key, n] : audit_.denied()) {
    Families::Add(denied, {{"rpc", key.first}, {"reason", key.second}}, static_cast<double>(n));
  }
  return out.Take();
}

}  // namespace braid::server
