// DrainRate: how fast one physical QP drains its send queue, learnt from its own completions.
//
// The scheduler balances fragments by outstanding bytes weighed by the time it takes each QP to
// move a byte (`ns_per_byte`), so each QP gets work in proportion to what its link carries and the
// queues of all QPs drain together: a virtual WR waits for its slowest fragment, and on links of
// unequal speed equal bytes are not equal time.
//
// Only time during which the QP had work outstanding counts: an idle QP's rate is unknown, not
// low. Completed bytes and busy time are accumulated until `kSampleBytes` (or `kSampleNs`); the
// estimate is time over bytes of the recent samples, each older sample weighing 3/4 of the next,
// so bursts and lulls average out as they do on the wire.
//
// An estimate is of the past and is kept across idle periods: a slow link that finishes its share
// early and waits for the others is still slow when the next work comes (forgetting it then would
// hand it a full share, and every virtual WR would wait on it). What can go wrong is pessimism: a
// wait across a stall (a paused link, a descheduled engine) would judge a QP far slower than its
// link, and a QP judged too slow for any work would never complete anything to correct it. So:
//  - two samples in a row more than kMaxSkew times faster than the estimate replace it (it was
//    taken across a stall; one such sample may be a burst after idling, and a burst completed in
//    no measurable time joins the next sample);
//  - the scheduler weighs nothing as more than kMaxSkew times slower than the fastest measured
//    rate (Weight), so a misjudged QP still gets some work, and with it the samples that mend it.
//
// Threading: the engine thread only (it lives inside VirtualQp). Allocates nothing; the caller
// passes the clock, so the class is deterministic under test.
#ifndef BRAID_DATAPLANE_VQP_DRAIN_RATE_H_
#define BRAID_DATAPLANE_VQP_DRAIN_RATE_H_

#include <algorithm>
#include <cstdint>

namespace braid::vqp {

class DrainRate {
 public:
  static constexpr uint64_t kSampleBytes = 1 << 20;
  static constexpr uint64_t kSampleNs = 2'000'000;
  static constexpr double kMaxSkew = 16;

  // The QP went from no outstanding WRs to one at `now_ns`.
  void OnBusy(uint64_t now_ns) { busy_since_ns_ = now_ns; }

  // One send WR of `bytes` completed successfully at `now_ns`.
  void OnComplete(uint64_t now_ns, uint64_t bytes) {
    if (now_ns > busy_since_ns_) busy_ns_ += now_ns - busy_since_ns_;
    busy_since_ns_ = now_ns;
    bytes_ += bytes;
    // A burst completed in no measurable time is no sample yet: it joins the next one.
    if ((bytes_ < kSampleBytes && busy_ns_ < kSampleNs) || bytes_ == 0 || busy_ns_ == 0) return;
    // Time over bytes of the recent samples, each older one weighing 3/4 of the next: bursts and
    // lulls average out as they do on the wire (an average of per-sample rates would not).
    // Two samples in a row kMaxSkew times faster than the estimate mean it was taken across a
    // stall: the second replaces it. (One such sample may be a burst a link allows after idling,
    // as a token bucket does; it is folded in like any other.)
    const bool much_faster =
        static_cast<double>(busy_ns_) * kMaxSkew < ns_per_byte_ * static_cast<double>(bytes_);
    fast_samples_ = much_faster ? fast_samples_ + 1 : 0;
    const double keep = fast_samples_ >= 2 ? 0 : 0.75;
    sum_ns_ = sum_ns_ * keep + static_cast<double>(busy_ns_);
    sum_bytes_ = sum_bytes_ * keep + static_cast<double>(bytes_);
    ns_per_byte_ = sum_ns_ / sum_bytes_;
    busy_ns_ = 0;
    bytes_ = 0;
  }

  // Drops the sample being gathered and starts the next at `now_ns`: the time so far was a stall
  // (the cooldown's business, not the link's rate).
  void Restart(uint64_t now_ns) {
    busy_since_ns_ = now_ns;
    busy_ns_ = 0;
    bytes_ = 0;
  }

  // Forgets everything (a QP reconnected after recovery may run over another path).
  void Reset() { *this = DrainRate(); }

  // Nanoseconds per byte; 0 while unknown (no sample yet).
  double ns_per_byte() const { return ns_per_byte_; }

  // The weight the scheduler uses, given the fastest measured rate `fastest` (> 0): unknown is
  // weighed as the fastest, and nothing as slower than kMaxSkew times it.
  double Weight(double fastest) const {
    return ns_per_byte_ == 0 ? fastest : std::min(ns_per_byte_, fastest * kMaxSkew);
  }

 private:
  uint64_t busy_since_ns_ = 0;
  uint64_t busy_ns_ = 0;
  uint64_t bytes_ = 0;
  uint32_t fast_samples_ = 0;  // consecutive samples kMaxSkew times faster than the estimate
  double sum_ns_ = 0;
  double sum_bytes_ = 0;
  double ns_per_byte_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_DRAIN_RATE_H_
