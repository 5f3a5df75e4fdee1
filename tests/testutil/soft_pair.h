// SoftPair: two soft NICs on one fabric (soft0 at 127.0.0.1, soft1 at 127.0.0.2), each with a PD,
// a CQ and a buffer registered with every access, and an RC QP on each (q0 on soft0, q1 on soft1)
// connected with each other: the set-up of tests that drive the soft provider's verbs directly.
// buf0 starts as the pattern 1 + i % 199 (never 0), buf1 as zeros. Members are destroyed QPs first.
#ifndef BRAID_TESTS_TESTUTIL_SOFT_PAIR_H_
#define BRAID_TESTS_TESTUTIL_SOFT_PAIR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "tests/testutil/rc_connect.h"

namespace braid::testing {

struct SoftPair {
  // `fabric` (not owned) outlives the pair; each buffer holds `bytes`.
  SoftPair(soft::Fabric* fabric, size_t bytes);
  // Opens both NICs and connects q0 with q1 using `rc`.
  common::Status Open(const RcOptions& rc = {}, int cq_entries = 64);

  soft::SoftProvider provider;
  std::unique_ptr<verbs::Device> d0, d1;
  std::unique_ptr<verbs::ProtectionDomain> pd0, pd1;
  std::unique_ptr<verbs::Cq> cq0, cq1;
  std::vector<uint8_t> buf0, buf1;
  std::unique_ptr<verbs::MemoryRegion> mr0, mr1;
  std::unique_ptr<verbs::Qp> q0, q1;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_SOFT_PAIR_H_
