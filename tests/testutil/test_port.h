// Ports for tests that listen on loopback: derived from the process id, so two test runs on one
// machine do not collide. `slot` separates the listeners of one process (< 16).
#ifndef BRAID_TESTS_TESTUTIL_TEST_PORT_H_
#define BRAID_TESTS_TESTUTIL_TEST_PORT_H_

#include <unistd.h>

#include <cstdint>

namespace braid::testing {

inline uint16_t TestPort(int slot) {
  return static_cast<uint16_t>(20000 + (static_cast<uint32_t>(getpid()) % 2500) * 16 + slot);
}

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_TEST_PORT_H_
