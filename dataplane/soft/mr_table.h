// MrTable: the memory-region keys of one soft device, with the checks an HCA makes.
//
// Keys: lkey = index << 8 | generation, rkey = lkey | 0x80. An lkey is never a valid rkey and a
// stale key (region deregistered, slot reused) never matches. Lookups are O(1) (flat table).
// Threading: owned by the device's thread.
#ifndef BRAID_DATAPLANE_SOFT_MR_TABLE_H_
#define BRAID_DATAPLANE_SOFT_MR_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace braid::soft {

struct MrEntry {
  uint64_t addr = 0;
  uint64_t length = 0;
  unsigned int access = 0;
  uint32_t pd_id = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  bool valid = false;
};

class MrTable {
 public:
  // Returns the entry (with its keys) of a new region.
  const MrEntry& Add(uint64_t addr, uint64_t length, unsigned int access, uint32_t pd_id);
  void Remove(uint32_t lkey);

  // The region `lkey` names if it belongs to `pd_id`, covers [addr, addr+length) and grants
  // `required_access` (0 = local read); nullptr otherwise.
  const MrEntry* CheckLocal(uint32_t lkey, uint32_t pd_id, uint64_t addr, uint64_t length,
                            unsigned int required_access) const;
  // Same for a remote key.
  const MrEntry* CheckRemote(uint32_t rkey, uint32_t pd_id, uint64_t addr, uint64_t length,
                             unsigned int required_access) const;

 private:
  const MrEntry* Check(const MrEntry* e, uint32_t pd_id, uint64_t addr, uint64_t length,
                       unsigned int required_access) const;
  MrEntry* Slot(uint32_t key);
  const MrEntry* Slot(uint32_t key) const;

  std::vector<MrEntry> entries_{1};  // index 0 is never used: key 0 is always invalid
  std::vector<uint32_t> free_;
  std::vector<uint8_t> generation_{0};
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_MR_TABLE_H_
