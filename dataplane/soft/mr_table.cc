#include "dataplane/soft/mr_table.h"

#include <infiniband/verbs.h>

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

uint32_t MrTable::NewIndex() {
  if (!free_.empty()) {
    const uint32_t index = free_.back();
    free_.pop_back();
    return index;
  }
  if (entries_.size() > kMaxEntries) return 0;
  entries_.emplace_back();
  return static_cast<uint32_t>(entries_.size() - 1);
}

const MrEntry* MrTable::Add(uint64_t addr, uint64_t length, unsigned int access, uint32_t pd_id) {
  const uint32_t index = NewIndex();
  if (index == 0) return nullptr;
  MrEntry& e = entries_[index];
  // New tags unlike the slot's last ones: its stale keys never match again.
  const uint32_t ltag = Tag(e.lkey, e.rkey);
  const uint32_t rtag = Tag(e.rkey, ltag);
  e = MrEntry{addr, length, access, pd_id, index << kTagBits | ltag, index << kTagBits | rtag,
              true};
  return &e;
}

void MrTable::Remove(uint32_t lkey) {
  if (Region(lkey) == nullptr) return;
  entries_[lkey >> kTagBits].valid = false;
  free_.push_back(lkey >> kTagBits);
}

const MrEntry* MrTable::AddWindow(uint32_t pd_id) {
  const uint32_t index = NewIndex();
  if (index == 0) return nullptr;
  MrEntry& e = entries_[index];
  const uint32_t tag = Tag(e.lkey, e.rkey);
  e = MrEntry{};
  e.pd_id = pd_id;
  e.rkey = index << kTagBits | tag;  // no lkey: a window is never local memory
  e.valid = true;
  e.kind = KeyKind::kWindow;
  return &e;
}

void MrTable::RemoveWindow(uint32_t key) {
  const MrEntry* e = Slot(key);
  if (e == nullptr || !e->valid || e->kind != KeyKind::kWindow) return;
  entries_[key >> kTagBits].valid = false;
  entries_[key >> kTagBits].bound_qp = 0;
  free_.push_back(key >> kTagBits);
}

bool MrTable::BindWindow(const WindowBind& b, uint32_t pd_id, uint32_t qp_num) {
  const MrEntry* slot = Slot(b.window_key);
  if (slot == nullptr || !slot->valid || slot->kind != KeyKind::kWindow) return false;
  MrEntry& w = entries_[b.window_key >> kTagBits];
  if (w.pd_id != pd_id || w.bound_qp != 0 || (b.new_rkey >> 8) != (w.rkey >> 8)) return false;
  constexpr unsigned int kRemote =
      IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
  if ((b.access & ~kRemote) != 0) return false;  // zero-based windows are not supported
  const MrEntry* region = Region(b.region_lkey);
  if (region == nullptr || region->pd_id != pd_id || !(region->access & IBV_ACCESS_MW_BIND)) {
    return false;
  }
  if ((b.access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
      !(region->access & IBV_ACCESS_LOCAL_WRITE)) {
    return false;
  }
  if (b.addr < region->addr || b.length > region->length ||
      b.addr - region->addr > region->length - b.length) {
    return false;
  }
  w.addr = b.addr;
  w.length = b.length;
  w.access = b.access;
  w.rkey = b.new_rkey;
  w.region_lkey = b.region_lkey;
  w.bound_qp = qp_num;
  return true;
}

bool MrTable::InvalidateWindow(uint32_t rkey, uint32_t qp_num) {
  const MrEntry* slot = Slot(rkey);
  if (slot == nullptr || !slot->valid || slot->kind != KeyKind::kWindow || slot->rkey != rkey ||
      slot->bound_qp == 0 || slot->bound_qp != qp_num) {
    return false;
  }
  entries_[rkey >> kTagBits].bound_qp = 0;
  return true;
}

void MrTable::UnbindWindowsOf(uint32_t qp_num) {
  for (MrEntry& e : entries_) {
    if (e.kind == KeyKind::kWindow && e.bound_qp == qp_num) e.bound_qp = 0;
  }
}

const MrEntry* MrTable::Region(uint32_t lkey) const {
  const MrEntry* e = Slot(lkey);
  if (e == nullptr || !e->valid || e->kind != KeyKind::kRegion || e->lkey != lkey) return nullptr;
  return e;
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
  const MrEntry* e = Region(lkey);
  if (e == nullptr) return nullptr;
  return Check(e, pd_id, addr, length, required_access);
}

const MrEntry* MrTable::CheckRemote(uint32_t rkey, uint32_t pd_id, uint32_t qp_num, uint64_t addr,
                                    uint64_t length, unsigned int required_access) const {
  const MrEntry* e = Slot(rkey);
  if (e == nullptr || !e->valid || e->rkey != rkey) return nullptr;
  if (e->kind == KeyKind::kWindow &&
      (e->bound_qp == 0 || e->bound_qp != qp_num || Region(e->region_lkey) == nullptr)) {
    return nullptr;
  }
  return Check(e, pd_id, addr, length, required_access);
}

}  // namespace braid::soft
