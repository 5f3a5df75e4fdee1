// SoftCq: a completion queue of the soft provider.
//
// A ring of `capacity` ibv_wc (Resize replaces it). Poll first drives the fabric (so a poll loop
// alone makes progress), then returns the oldest entries. A completion that finds the ring full is
// never dropped silently: the CQ turns overflowed and, once drained, every Poll returns
// kCqOverflow. The wakeup fd is an eventfd signalled on the first completion after RequestNotify().
// Threading: the fabric's thread. Poll and Push allocate nothing.
#ifndef BRAID_DATAPLANE_SOFT_SOFT_CQ_H_
#define BRAID_DATAPLANE_SOFT_SOFT_CQ_H_

#include <cstdint>
#include <memory>

#include "dataplane/verbs/provider.h"

namespace braid::soft {

class Fabric;

// Values written into the fields the verbs spec leaves undefined on error completions.
// The opcode poison must stay inside ibv_wc_opcode's value range (0..255, the enum has no fixed
// underlying type) so that reading it is merely wrong, not undefined behaviour; 0xFF is no opcode.
inline constexpr uint32_t kPoisonOpcode = 0xFF;
inline constexpr uint32_t kPoisonByteLen = 0xDEADBEEF;
inline constexpr uint32_t kPoisonImm = 0xDEADBEEF;
inline constexpr unsigned int kPoisonWcFlags = 0xFFFFFFFF;

class SoftCq final : public verbs::Cq {
 public:
  SoftCq(Fabric* fabric, int capacity, uint32_t max_capacity, int event_fd);
  ~SoftCq() override;

  common::Result<int> Poll(std::span<ibv_wc> out) override;
  int capacity() const override { return static_cast<int>(size_); }
  int wakeup_fd() const override { return event_fd_; }
  common::Status RequestNotify() override;
  common::Status ConsumeWakeup() override;
  common::Status Resize(int entries) override;

  // Adds a completion (provider-internal). Returns false when it overflowed the CQ.
  bool Push(const ibv_wc& wc);
  // An error completion: only wr_id, status and qp_num are meaningful; the rest is poison.
  bool PushError(uint64_t wr_id, ibv_wc_status status, uint32_t qp_num);
  bool overflowed() const { return overflowed_; }
  int size() const { return static_cast<int>(count_); }

 private:
  Fabric* fabric_;
  uint32_t max_capacity_;
  // Allocated without initialisation (a grown CQ of millions of entries costs neither the time
  // to clear it nor memory for pages not yet used).
  std::unique_ptr<ibv_wc[]> ring_;
  uint64_t size_;
  uint64_t head_ = 0;
  uint64_t count_ = 0;
  bool overflowed_ = false;
  bool armed_ = false;
  int event_fd_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SOFT_CQ_H_
