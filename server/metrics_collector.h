// MetricsCollector: the engine's counters as Prometheus metric families (the braid_* series of
// DESIGN.md), built at scrape time from one Engine::Snapshot().
//
// Names use base units (_bytes, _seconds, _total). Per-QP series (braid_qp_outstanding_wrs) only
// when `per_qp` is set: their cardinality grows with the number of QPs.
// Threading: Collect() runs on the exporter's threads; the engine and watchdog are thread-safe.
#ifndef BRAID_SERVER_METRICS_COLLECTOR_H_
#define BRAID_SERVER_METRICS_COLLECTOR_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <mutex>
#include <vector>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/stall_watchdog.h"
#include "server/audit_log.h"
#include "server/lease_table.h"
#include "server/reclaimer.h"

namespace braid::server {

class MetricsCollector final : public prometheus::Collectable {
 public:
  MetricsCollector(engine::Engine& engine, const engine::StallWatchdog& watchdog,
                   const AuditLog& audit, const LeaseTable& leases, const Reclaimer& reclaimer,
                   bool per_qp)
      : engine_(engine),
        watchdog_(watchdog),
        audit_(audit),
        leases_(leases),
        reclaimer_(reclaimer),
        per_qp_(per_qp) {}

  std::vector<prometheus::MetricFamily> Collect() const override;
  // Forgets the snapshot kept for scrapes the engine does not answer: after VQPs went it
  // describes objects that are gone, and at 1,000 VQPs it holds megabytes. Any thread.
  void DropCache();

 private:
  std::vector<prometheus::MetricFamily> Build() const;

  engine::Engine& engine_;
  const engine::StallWatchdog& watchdog_;
  const AuditLog& audit_;
  const LeaseTable& leases_;
  const Reclaimer& reclaimer_;
  const bool per_qp_;
  mutable std::mutex mu_;
  mutable engine::EngineSnapshot last_;  // served while the engine does not answer
};

}  // namespace braid::server

#endif  // BRAID_SERVER_METRICS_COLLECTOR_H_
