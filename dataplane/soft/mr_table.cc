#include "dataplane/soft/mr_table.h"

namespace braid::soft {

const MrEntry& MrTable::Add(uint64_t addr, uint64_t length, unsigned int access, uint32_t pd_id) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
    generation_.push_back(0);
  }
  const uint8_t gen = static_cast<uint8_t>((generation_[index] + 1) & 0x7f);
  generation_[index] = gen;
  MrEntry& e = entries_[index];
  e = MrEntry{addr, length, access, pd_id, (index << 8) | gen, (index << 8) | gen | 0x80u, true};
  return e;
}

void MrTable::Remove(uint32_t lkey) {
  MrEntry* e = Slot(lkey);
  if (e == nullptr || e->lkey != lkey) return;
  e->valid = false;
  free_.push_back(lkey >> 8);
}

MrEntry* MrTable::Slot(uint32_t key) {
  const uint32_t index = key >> 8;
  if (index == 0 || index >= entries_.size()) return nullptr;
  return &entries_[index];
}

const MrEntry* MrTable::Slot(uint32_t key) const {
  return const_cast<MrTable*>(this)->Slot(key);
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
