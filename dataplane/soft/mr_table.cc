#include "dataplane/soft/mr_table.h"

namespace braid::soft {

namespace {
constexpr uint32_t kTagMask = (1u << MrTable::kTagBits) - 1;
}  // namespace

uint32_t MrTable::Tag(uint32_t avoid1, uint32_t avoid2) {
  for (;;) {
    const uint32_t tag = static_cast<uint32_t>(rng_()) & kTagMask;
    if (tag != (avoid1 & kTagMask) && tag != (avoid2 & kTagMask)) return tag;
  }
}

const MrEntry* MrTable::Add(uint64_t addr, uint64_t length, unsigned int access, uint32_t pd_id) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    if (entries_.size() > kMaxEntries) return nullptr;
    index = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  }
  MrEntry& e = entries_[index];
  // New tags unlike the slot's last ones: its stale keys never match again.
  const uint32_t ltag = Tag(e.lkey, e.rkey);
  const uint32_t rtag = Tag(e.rkey, ltag);
  e = MrEntry{addr, length, access, pd_id, index << kTagBits | ltag, index << kTagBits | rtag,
              true};
  return &e;
}

void MrTable::Remove(uint32_t lkey) {
  const MrEntry* e = Slot(lkey);
  if (e == nullptr || !e->valid || e->lkey != lkey) return;
  entries_[lkey >> kTagBits].valid = false;
  free_.push_back(lkey >> kTagBits);
}

const MrEntry* MrTable::Slot(uint32_t key) const {
  const uint32_t index = key >> kTagBits;
  if (index == 0 || index >= entries_.size()) return nullptr;
  return &entries_[index];
}

const MrEntry* MrTable::Check(const MrEntry* e, uint32_t pd_id, uint64_t addr, uint64_t length,
                              unsigned int required_access) const {
  if (e->pd_id != pd_id) return nullptr;
  if ((e->access & required_access) != required_access) return nullptr;
  if (addr < e->addr || length > e->length || addr - e->addr > e->length - length) return nullptr;
  return e;
}

const MrEntry* MrTable::CheckLocal(uint32_t lkey, uint32_t pd_id, uint64_t addr, uint64_t length,
                                   unsigned int required_access) const {
  const MrEntry* e = Slot(lkey);
  if (e == nullptr || !e->valid || e->lkey != lkey) return nullptr;
  return Check(e, pd_id, addr, length, required_access);
}

const MrEntry* MrTable::CheckRemote(uint32_t rkey, uint32_t pd_id, uint64_t addr, uint64_t length,
                                    unsigned int required_access) const {
  const MrEntry* e = Slot(rkey);
  if (e == nullptr || !e->valid || e->rkey != rkey) return nullptr;
  return Check(e, pd_id, addr, length, required_access);
}

}  // namespace braid::soft
