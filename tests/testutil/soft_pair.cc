#include "tests/testutil/soft_pair.h"

namespace braid::testing {

SoftPair::SoftPair(soft::Fabric* fabric, size_t bytes)
    : provider({{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, fabric}),
      buf0(bytes),
      buf1(bytes, 0) {
  // 1..199: never 0 (a byte not yet placed) nor a test's canary above 199.
  for (size_t i = 0; i < buf0.size(); ++i) buf0[i] = static_cast<uint8_t>(1 + i % 199);
}

common::Status SoftPair::Open(const RcOptions& rc, int cq_entries) {
  BRAID_ASSIGN_OR_RETURN(d0, provider.OpenDevice("soft0"));
  BRAID_ASSIGN_OR_RETURN(d1, provider.OpenDevice("soft1"));
  BRAID_ASSIGN_OR_RETURN(pd0, d0->AllocPd());
  BRAID_ASSIGN_OR_RETURN(pd1, d1->AllocPd());
  BRAID_ASSIGN_OR_RETURN(cq0, d0->CreateCq(cq_entries));
  BRAID_ASSIGN_OR_RETURN(cq1, d1->CreateCq(cq_entries));
  BRAID_ASSIGN_OR_RETURN(mr0, pd0->RegisterMemory(buf0.data(), buf0.size(), 0xF));
  BRAID_ASSIGN_OR_RETURN(mr1, pd1->RegisterMemory(buf1.data(), buf1.size(), 0xF));
  BRAID_ASSIGN_OR_RETURN(q0, pd0->CreateQp({cq0.get(), cq0.get(), {}, false}));
  BRAID_ASSIGN_OR_RETURN(q1, pd1->CreateQp({cq1.get(), cq1.get(), {}, false}));
  return ConnectRc(*q0, d0->info(), *q1, d1->info(), rc);
}

}  // namespace braid::testing
