// RandomBytes: fills a buffer from the kernel's generator (getrandom), for values that must not be
// guessed (link nonces, lease ids). Blocks only until the kernel's pool is first initialized;
// retries on EINTR. Threading: any thread.
#ifndef BRAID_DATAPLANE_COMMON_RANDOM_BYTES_H_
#define BRAID_DATAPLANE_COMMON_RANDOM_BYTES_H_

#include <sys/random.h>

#include <cstddef>

namespace braid::common {

inline void RandomBytes(void* out, size_t length) {
  auto* bytes = static_cast<unsigned char*>(out);
  size_t have = 0;
  while (have < length) {
    const ssize_t n = getrandom(bytes + have, length - have, 0);
    if (n > 0) have += static_cast<size_t>(n);  // else interrupted: again
  }
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_RANDOM_BYTES_H_
