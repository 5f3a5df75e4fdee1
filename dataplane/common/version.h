// kVersion: Braid's version, the CMake project's (the one place it is written): braidd and
// braidctl print it (--version), GetInfo answers it, the braid_build_info metric carries it.
#ifndef BRAID_DATAPLANE_COMMON_VERSION_H_
#define BRAID_DATAPLANE_COMMON_VERSION_H_

#ifndef BRAID_VERSION
#error "BRAID_VERSION is defined by braid_common's CMake target (the project's version)"
#endif

namespace braid::common {

inline constexpr const char* kVersion = BRAID_VERSION;

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_VERSION_H_
