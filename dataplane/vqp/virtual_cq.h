// VirtualCq: one physical CQ per device, shared by the VQPs created on it, polled as one.
//
// Physical completions are routed by (device, qp_num) to the owning VQP, which turns them
// into virtual completions, in posting order per VQP and direction. Poll is bounded: it fills
// at most out.size() entries and polls each physical CQ at most once per call, into a reusable
// buffer. A physical poll error never loses what was already harvested: those are returned
// first and the error on the next call (every virtual WR completes once). The CQ checks that what
// is registered on it fits (a completion queue never overflows silently): a VQP that could overflow
// a physical CQ is refused at creation. A physical CQ grows (as ibv_resize_cq) when a VQP's
// reservation needs it, up to a per-device limit, and shrinks back as VQPs go: admission is bounded
// by that limit, not by the CQ's first size. Threading: the engine thread. Poll allocates nothing.
// Lifetime: outlives every VQP created on it (a VQP unregisters itself on destruction).
#ifndef BRAID_DATAPLANE_VQP_VIRTUAL_CQ_H_
#define BRAID_DATAPLANE_VQP_VIRTUAL_CQ_H_

#include <array>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "dataplane/verbs/provider.h"
#include "dataplane/vqp/vqp_types.h"

namespace braid::vqp {

class VirtualQp;

class VirtualCq {
 public:
  static constexpr int kPollBatch = 32;

  // One physical CQ of `entries_per_device` on each device (not owned; they outlive the CQ),
  // growing on demand up to `max_entries_per_device` (capped by each device's max_cqe; 0: never
  // grows).
  static common::Result<std::unique_ptr<VirtualCq>> Create(std::span<verbs::Device* const> devices,
                                                           int entries_per_device,
                                                           uint32_t max_entries_per_device = 0);
  struct CreateKey {
   private:
    CreateKey() = default;
    friend class VirtualCq;
  };
  VirtualCq(CreateKey, std::vector<verbs::Device*> devices)
      : devices_(std::move(devices)), table_(16), table_mask_(15) {}
  ~VirtualCq();
  VirtualCq(const VirtualCq&) = delete;
  VirtualCq& operator=(const VirtualCq&) = delete;

  common::Result<int> Poll(std::span<VirtualWc> out);

  int num_devices() const { return static_cast<int>(devices_.size()); }
  verbs::Device& device(int index) const { return *devices_[static_cast<size_t>(index)]; }
  verbs::Cq& physical_cq(int index) const { return *cqs_[static_cast<size_t>(index)]; }
  uint32_t reserved(int device) const { return reserved_[static_cast<size_t>(device)]; }
  // Completion entries of the device's physical CQ now.
  uint32_t capacity(int device) const {
    return static_cast<uint32_t>(cqs_[static_cast<size_t>(device)]->capacity());
  }
  // What VQPs on the device can reserve in all: the size the physical CQ may grow to.
  uint32_t limit(int device) const { return limits_[static_cast<size_t>(device)]; }
  uint64_t unrouted_completions() const { return unrouted_; }
  size_t registered_qps() const { return routes_.size(); }
  // Slots of the route table (a power of two, at most eight per registered QP once QPs go).
  size_t route_table_slots() const { return table_.size(); }

  // VirtualQp-internal.
  // Whether `entries` more fit (kNoResource, saying how much is free, when not).
  common::Status CheckRoom(int device, uint64_t entries) const;
  // Reserves room for a QP's completions (CheckRoom's answer when short).
  common::Status Reserve(int device, uint32_t entries);
  void Release(int device, uint32_t entries);
  void Register(int device, uint32_t qp_num, VirtualQp* vqp, uint16_t qp_index);
  void Unregister(int device, uint32_t qp_num);
  void AddReadyCapacity(size_t entries);  // slow path, at VQP creation
  void RemoveReadyCapacity(size_t entries);
  void Emit(const VirtualWc& wc) {
    if (ready_count_ == ready_size_) {
      EmitOverflow();
      return;
    }
    std::memcpy(&ready_[(ready_head_ + ready_count_) & ready_mask_], static_cast<const void*>(&wc),
                sizeof(wc));
    ++ready_count_;
  }
  // Polls every physical CQ once and routes what it finds (used when a VQP drains).
  void PollPhysical();

 private:
  struct Route {
    uint64_t key = 0;  // 0: empty (QP number 0 is never a connected RC QP)
    VirtualQp* vqp = nullptr;
    uint16_t qp_index = 0;
  };
  static uint64_t Key(int device, uint32_t qp_num) {
    return (uint64_t{static_cast<uint32_t>(device)} << 32) | qp_num;
  }
  int TakeReady(std::span<VirtualWc> out);
  void ResizeReady(size_t size);
  void EmitOverflow();
  // Routes: an open-addressing table rebuilt on (un)registration, probed on every completion.
  const Route* FindRoute(uint64_t key) const;
  void RebuildRoutes();

  std::vector<verbs::Device*> devices_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<uint32_t> reserved_;
  std::vector<uint32_t> initial_;  // each physical CQ's first size: it never shrinks below
  std::vector<uint32_t> limits_;
  std::vector<Route> routes_;  // registered routes (slow path)
  std::vector<Route> table_;   // power-of-two open-addressing table over routes_
  uint64_t table_mask_ = 0;
  std::array<ibv_wc, kPollBatch> batch_{};
  // A power-of-two ring that holds every virtual completion the registered VQPs could have
  // pending. Its slots are raw bytes (a VirtualWc, which has member initialisers, would be
  // written in full at allocation), so the pages held for the worst case cost memory only once a
  // burst reaches them; the ring restarts at slot 0 whenever it empties, so bursts reuse the
  // same first pages.
  struct ReadySlot {
    alignas(VirtualWc) unsigned char bytes[sizeof(VirtualWc)];
  };
  static_assert(std::is_trivially_copyable_v<VirtualWc>);
  std::unique_ptr<ReadySlot[]> ready_;
  size_t ready_size_ = 0;
  size_t ready_mask_ = 0;
  size_t ready_head_ = 0;
  size_t ready_count_ = 0;
  size_t ready_needed_ = 0;
  common::Status pending_error_;
  uint64_t unrouted_ = 0;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_VIRTUAL_CQ_H_
