// KeyTable: memory keys per device in one flat array ("keys are per device"; one array load on the
// hot path).
//
// An entry holds one key per device (local lkeys per local device, or the peer's rkeys per remote
// device). Posting refers to an entry by handle; the key for the QP's device is one array load,
// never a map copy. A missing key (0) is an error returned at post time, never an exception.
// Threading: the owner's thread.
#ifndef BRAID_DATAPLANE_VQP_KEY_TABLE_H_
#define BRAID_DATAPLANE_VQP_KEY_TABLE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::vqp {

class KeyTable {
 public:
  KeyTable(uint32_t capacity, uint32_t num_devices)
      : num_devices_(num_devices),
        keys_(size_t{capacity} * num_devices),
        used_(capacity),
        complete_(capacity) {}

  // Adds an entry; `keys[d]` is the key for device d (0 = none). Returns its handle.
  common::Result<uint32_t> Add(std::span<const uint32_t> keys);
  common::Status Remove(uint32_t handle);
  // The key of `handle` for `device`; 0 when the handle or the key does not exist.
  uint32_t Get(uint32_t handle, uint32_t device) const {
    if (handle >= used_.size() || !used_[handle] || device >= num_devices_) return 0;
    return keys_[size_t{handle} * num_devices_ + device];
  }
  // True when `handle` exists and has a key for every device (checked once, at Add).
  bool Complete(uint32_t handle) const {
    return handle < complete_.size() && complete_[handle] != 0;
  }
  uint32_t num_devices() const { return num_devices_; }

 private:
  uint32_t num_devices_;
  std::vector<uint32_t> keys_;
  std::vector<uint8_t> used_;
  std::vector<uint8_t> complete_;
};

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_KEY_TABLE_H_
