// NullVqpBed: a VQP (and a peer VQP for its card) over NullProvider devices, keys registered.
// Sends complete the moment they are posted; receive arrivals are injected through the NullQps.
#ifndef BRAID_TESTS_TESTUTIL_NULL_VQP_BED_H_
#define BRAID_TESTS_TESTUTIL_NULL_VQP_BED_H_

#include <memory>
#include <vector>

#include "dataplane/vqp/virtual_qp.h"
#include "tests/testutil/null_provider.h"

namespace braid::testing {

class NullVqpBed {
 public:
  NullVqpBed(int devices, const vqp::VirtualQpConfig& config, int cq_entries = 1 << 16);
  ~NullVqpBed();

  const common::Status& status() const { return status_; }
  vqp::VirtualQp& vqp() { return *vqp_; }
  vqp::VirtualCq& cq() { return *cq_; }
  NullDevice& device(int i) { return *devices_[static_cast<size_t>(i)]; }
  // Physical QP `i` of the VQP (data QPs, then the message QP).
  NullQp& qp(int i);
  NullCq& physical_cq(int device) { return static_cast<NullCq&>(cq_->physical_cq(device)); }
  uint32_t local_keys() const { return local_keys_; }
  uint32_t remote_keys() const { return remote_keys_; }
  vqp::VirtualSendWr Write(uint64_t wr_id, uint64_t length, ibv_wr_opcode op = IBV_WR_RDMA_WRITE);
  uint8_t* buffer() { return buffer_.data(); }

 private:
  std::vector<std::unique_ptr<NullDevice>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::unique_ptr<vqp::VirtualCq> cq_;
  std::unique_ptr<vqp::VirtualCq> peer_cq_;
  std::unique_ptr<vqp::VirtualQp> vqp_;
  std::unique_ptr<vqp::VirtualQp> peer_;
  std::vector<uint8_t> buffer_;
  uint32_t local_keys_ = 0;
  uint32_t remote_keys_ = 0;
  common::Status status_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_NULL_VQP_BED_H_
