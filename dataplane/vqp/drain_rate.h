// DrainRate: how fast one physical QP drains its send queue, learnt from its own completions.
//
// Rule 15 balances fragments by outstanding bytes; on links of unequal speed equal bytes are not
// equal time, and a virtual WR waits for its slowest fragment. The scheduler therefore weighs a
// QP's outstanding bytes by the time it takes that QP to move a byte (`ns_per_byte`), so each QP
// gets work in proportion to what its link carries and the queues of all QPs drain together.
//
// Only time during which the QP had work outstanding counts: an idle QP's rate is unknown, not
// low. (A QP kept shallow measures partly its round trip, so it looks slower than its link; the
// forgetting below keeps that from turning into starvation.) Completed bytes and busy time are accumulated until `kSampleBytes` (or `kSampleNs`) and the
// sample is folded into an exponentially weighted average (weight 1/4), so one burst of
// completions (several arriving in the same poll) does not swing it.
//
// An estimate is of the past: one taken across a stall (a descheduled engine, a paused link) can be
// wildly pessimistic, and a QP judged too slow to be worth any work would never complete anything
// again to correct it. So a QP idle for kForgetNs while the estimate stands is weighed as unknown
// again (Stale): it gets its share and relearns. A link that is really slow is learnt again from
// its next sample.
//
// Threading: the engine thread only (it lives inside VirtualQp). Allocates nothing; the caller
// passes the clock, so the class is deterministic under test.
#ifndef BRAID_DATAPLANE_VQP_DRAIN_RATE_H_
#define BRAID_DATAPLANE_VQP_DRAIN_RATE_H_

#include <cstdint>

namespace braid::vqp {

class DrainRate {
 public:
  static constexpr uint64_t kSampleBytes = 1 << 20;
  static constexpr uint64_t kSampleNs = 2'000'000;
  static constexpr uint64_t kForgetNs = 10'000'000;

  // The QP went from no outstanding WRs to one at `now_ns`. After kForgetNs idle, the estimate is
  // forgotten: the next sample replaces it.
  void OnBusy(uint64_t now_ns) {
    if (Stale(now_ns)) Reset();
    busy_since_ns_ = now_ns;
  }

  // One send WR of `bytes` completed successfully at `now_ns`.
  void OnComplete(uint64_t now_ns, uint64_t bytes) {
    if (now_ns > busy_since_ns_) busy_ns_ += now_ns - busy_since_ns_;
    busy_since_ns_ = now_ns;
    bytes_ += bytes;
    if ((bytes_ < kSampleBytes && busy_ns_ < kSampleNs) || bytes_ == 0) return;
    const double sample = static_cast<double>(busy_ns_) / static_cast<double>(bytes_);
    ns_per_byte_ = ns_per_byte_ == 0 ? sample : ns_per_byte_ + (sample - ns_per_byte_) / 4;
    busy_ns_ = 0;
    bytes_ = 0;
  }

  // Forgets everything (a QP reconnected after recovery may run over another path).
  void Reset() { *this = DrainRate(); }

  // Nanoseconds per byte; 0 while unknown (no sample yet).
  double ns_per_byte() const { return ns_per_byte_; }

  // For a QP with nothing outstanding: it has been idle longer than kForgetNs at `now_ns`.
  bool Stale(uint64_t now_ns) const {
    return ns_per_byte_ > 0 && now_ns > busy_since_ns_ + kForgetNs;
  }

 private:
  uint64_t busy_since_ns_ = 0;
  uint64_t busy_ns_ = 0;
  uint64_t bytes_ = 0;
  double ns_per_byte_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_DRAIN_RATE_H_
