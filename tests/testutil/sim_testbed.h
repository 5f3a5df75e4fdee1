// SimTestbed: soft NICs 127.0.0.(1..N) on one SimFabric, each with a PD, one CQ and a registered
// buffer; QP pairs connected in one call. The fake every upper-layer test and benchmark builds on.
#ifndef BRAID_TESTS_TESTUTIL_SIM_TESTBED_H_
#define BRAID_TESTS_TESTUTIL_SIM_TESTBED_H_

#include <memory>
#include <vector>

#include "dataplane/soft/sim_fabric.h"
#include "dataplane/soft/soft_provider.h"
#include "tests/testutil/rc_connect.h"

namespace braid::testing {

struct SimNic {
  std::unique_ptr<verbs::Device> device;
  std::unique_ptr<verbs::ProtectionDomain> pd;
  std::unique_ptr<verbs::Cq> cq;  // send and receive
  std::vector<uint64_t> storage;
  std::unique_ptr<verbs::MemoryRegion> mr;

  uint8_t* data() { return reinterpret_cast<uint8_t*>(storage.data()); }
  uint64_t addr(size_t offset = 0) { return reinterpret_cast<uint64_t>(data() + offset); }
  ibv_sge Sge(size_t offset, uint32_t length) { return {addr(offset), length, mr->lkey()}; }
};

struct SimQpPair {
  std::unique_ptr<verbs::Qp> a;
  std::unique_ptr<verbs::Qp> b;
};

class SimTestbed {
 public:
  // Aborts the test (via the returned status of ok()) if the NICs cannot be set up.
  SimTestbed(int num_nics, size_t buffer_bytes, soft::SimFabricOptions options = {},
             int cq_entries = 4096);
  ~SimTestbed();

  const common::Status& status() const { return status_; }
  soft::SimFabric& fabric() { return fabric_; }
  SimNic& nic(int index) { return *nics_[static_cast<size_t>(index)]; }
  int num_nics() const { return static_cast<int>(nics_.size()); }
  common::Result<SimQpPair> Connect(int a, int b, const verbs::QpCaps& caps = {},
                                    const RcOptions& options = {});

 private:
  soft::SimFabric fabric_;
  std::unique_ptr<soft::SoftProvider> provider_;
  std::vector<std::unique_ptr<SimNic>> nics_;
  common::Status status_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_SIM_TESTBED_H_
