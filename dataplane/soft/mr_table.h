// MrTable: the memory-region keys of one soft device, with the checks an HCA makes.
//
// Keys: index << kTagBits | tag. The index finds the entry (O(1), a flat table, as an HCA's mkey
// table); the tag is drawn at random for each key, lkey and rkey apart, and differs from the tag
// the slot had before. So an rkey is not predictable from the ones seen before it (an attacker
// guessing gets one chance in 4,096 per try, and each wrong try kills the QP it came on), an lkey
// is never a valid rkey, and a stale key (region deregistered, slot reused) never matches.
// Memory windows (type 2B, as ibv_alloc_mw(3) with IBV_MW_TYPE_2) share the key space. A window
// is allocated unbound; binding it (an IBV_WR_BIND_MW work request) through a QP gives it a range
// of a region registered with IBV_ACCESS_MW_BIND, remote access rights and its rkey: the
// allocated key with the low 8 bits (the consumer key) of the caller's choice. A bound window
// answers only requests that arrive on the QP it was bound through, in the same protection
// domain, while its region is registered; IBV_WR_LOCAL_INV on that QP, deallocation, or the QP's
// reset or destruction unbinds it.
// Threading: owned by the device's thread.
#ifndef BRAID_DATAPLANE_SOFT_MR_TABLE_H_
#define BRAID_DATAPLANE_SOFT_MR_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace braid::soft {

enum class KeyKind : uint8_t { kRegion, kWindow };

struct MrEntry {
  uint64_t addr = 0;
  uint64_t length = 0;
  unsigned int access = 0;
  uint32_t pd_id = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  bool valid = false;
  KeyKind kind = KeyKind::kRegion;
  uint32_t bound_qp = 0;     // a window: the QP it is bound through (0: unbound)
  uint32_t region_lkey = 0;  // a bound window: the region it is a range of
};

// What a window bind asks for (from an IBV_WR_BIND_MW work request).
struct WindowBind {
  uint32_t window_key = 0;  // any key the window had (its index finds it)
  uint32_t new_rkey = 0;    // the window's key once bound: only the low 8 bits may differ
  uint32_t region_lkey = 0;
  uint64_t addr = 0;
  uint64_t length = 0;
  unsigned int access = 0;  // IBV_ACCESS_REMOTE_{READ,WRITE,ATOMIC}
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
  // A new unbound window of `pd_id`; nullptr when the table is full.
  const MrEntry* AddWindow(uint32_t pd_id);
  // Removes the window any of whose keys is `key` (bound or not).
  void RemoveWindow(uint32_t key);
  // Binds a window through QP `qp_num` of `pd_id`; false (nothing changed) when the window or
  // region is not that PD's, the window is bound already, the region lacks IBV_ACCESS_MW_BIND or
  // (for remote write or atomic rights) local write, the range is outside the region, the access
  // asks for more than remote rights, or the new key changes more than the consumer key.
  bool BindWindow(const WindowBind& bind, uint32_t pd_id, uint32_t qp_num);
  // Unbinds the window bound with `rkey` through QP `qp_num`; false when there is no such window.
  bool InvalidateWindow(uint32_t rkey, uint32_t qp_num);
  // Unbinds every window bound through QP `qp_num` (the QP is reset or destroyed). Slow path.
  void UnbindWindowsOf(uint32_t qp_num);

  // The region `lkey` names if it belongs to `pd_id`, covers [addr, addr+length) and grants
  // `required_access` (0 = local read); nullptr otherwise.
  const MrEntry* CheckLocal(uint32_t lkey, uint32_t pd_id, uint64_t addr, uint64_t length,
                            unsigned int required_access) const;
  // Same for a remote key arriving on QP `qp_num`: a region's rkey, or the rkey of a window bound
  // through that QP over a region still registered.
  const MrEntry* CheckRemote(uint32_t rkey, uint32_t pd_id, uint32_t qp_num, uint64_t addr,
                             uint64_t length, unsigned int required_access) const;

 private:
  const MrEntry* Check(const MrEntry* e, uint32_t pd_id, uint64_t addr, uint64_t length,
                       unsigned int required_access) const;
  const MrEntry* Slot(uint32_t key) const;
  // The live region `lkey` names, or nullptr.
  const MrEntry* Region(uint32_t lkey) const;
  uint32_t NewIndex();  // 0 when the table is full
  // A tag for slot `index` unlike `avoid1` and `avoid2`.
  uint32_t Tag(uint32_t avoid1, uint32_t avoid2);

  std::vector<MrEntry> entries_{1};  // index 0 is never used: key 0 is always invalid
  std::vector<uint32_t> free_;
  std::mt19937 rng_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_MR_TABLE_H_
