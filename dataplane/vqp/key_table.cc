#include "dataplane/vqp/key_table.h"

#include <string>

namespace braid::vqp {

common::Result<uint32_t> KeyTable::Add(std::span<const uint32_t> keys) {
  if (keys.size() != num_devices_) {
    return common::Status::InvalidArgument("expected one key per device (" +
                                           std::to_string(num_devices_) + "), got " +
                                           std::to_string(keys.size()));
  }
  for (uint32_t h = 0; h < used_.size(); ++h) {
    if (used_[h]) continue;
    used_[h] = 1;
    complete_[h] = 1;
    for (uint32_t d = 0; d < num_devices_; ++d) {
      keys_[size_t{h} * num_devices_ + d] = keys[d];
      if (keys[d] == 0) complete_[h] = 0;
    }
    return h;
  }
  return common::Status::NoResource();
}

common::Status KeyTable::Remove(uint32_t handle) {
  if (handle >= used_.size() || !used_[handle]) {
    return common::Status::NotFound("no key entry " + std::to_string(handle));
  }
  used_[handle] = 0;
  complete_[handle] = 0;
  return common::Status::Ok();
}

}  // namespace braid::vqp
