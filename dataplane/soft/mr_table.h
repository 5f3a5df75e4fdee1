// MrTable: the memory-region keys of one soft device, with the checks an HCA makes.
//
// Keys: index << kTagBits | tag. The index finds the entry (O(1), a flat table, as an HCA's mkey
// table); the tag is drawn at random for each key, lkey and rkey apart, and differs from the tag
// the slot had before. So an rkey is not predictable from the ones seen before it (an attacker
// guessing gets one chance in 4,096 per try, and each wrong try kills the QP it came on), an lkey
// is never a valid rkey, and a stale key (region deregistered, slot reused) never matches.
// Threading: owned by the device's thread.
#ifndef BRAID_DATAPLANE_SOFT_MR_TABLE_H_
#define BRAID_DATAPLANE_SOFT_MR_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <random>
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
  static constexpr int kTagBits = 12;
  static constexpr uint32_t kMaxEntries = (1u << (32 - kTagBits)) - 1;

  // `seed`: the tags' random source (a device seeds it from std::random_device).
  explicit MrTable(uint64_t seed) : rng_(seed) {}

  // Returns the entry (with its keys) of a new region; nullptr when the table is full.
  const MrEntry* Add(uint64_t addr, uint64_t length, unsigned int access, uint32_t pd_id);
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
  const MrEntry* Slot(uint32_t key) const;
  // A tag for slot `index` unlike `avoid1` and `avoid2`.
  uint32_t Tag(uint32_t avoid1, uint32_t avoid2);

  std::vector<MrEntry> entries_{1};  // index 0 is never used: key 0 is always invalid
  std::vector<uint32_t> free_;
  std::mt19937 rng_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_MR_TABLE_H_
