// Counts heap allocations made through operator new in this test binary (alloc_counter.cc
// replaces the global operator new/delete).
#ifndef BRAID_TESTS_UNIT_VQP_ALLOC_COUNTER_H_
#define BRAID_TESTS_UNIT_VQP_ALLOC_COUNTER_H_

#include <cstdint>

namespace braid::testing {
uint64_t HeapAllocations();
}  // namespace braid::testing

#endif  // BRAID_TESTS_UNIT_VQP_ALLOC_COUNTER_H_
