// VqpTestbed: two "hosts" on one SimFabric, each with `nics` soft NICs, a VirtualCq, a VQP and one
// buffer registered on every NIC of its host; the two VQPs connected with each other.
// Host A has NICs 127.0.0.1..k, host B 127.0.0.(k+1)..2k.
#ifndef BRAID_TESTS_TESTUTIL_VQP_TESTBED_H_
#define BRAID_TESTS_TESTUTIL_VQP_TESTBED_H_

#include <memory>
#include <vector>

#include "dataplane/soft/sim_fabric.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/vqp/virtual_qp.h"

namespace braid::testing {

struct VqpHost {
  std::vector<std::unique_ptr<verbs::Device>> devices;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds;
  std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs;
  std::unique_ptr<vqp::VirtualCq> cq;
  std::unique_ptr<vqp::VirtualQp> vqp;
  uint8_t* buffer = nullptr;
  uint32_t local_keys = 0;   // the host's own buffer
  uint32_t remote_keys = 0;  // the peer's buffer

  uint64_t addr(uint64_t offset = 0) const { return reinterpret_cast<uint64_t>(buffer) + offset; }
};

class VqpTestbed {
 public:
  // `buffer_a` / `buffer_b` (not owned) are registered as each host's buffer of `buffer_bytes`.
  VqpTestbed(int nics, const vqp::VirtualQpConfig& config, uint8_t* buffer_a, uint8_t* buffer_b,
             size_t buffer_bytes, soft::SimFabricOptions fabric = {}, int cq_entries = 1 << 16);
  // The same with two zeroed buffers of `buffer_bytes` that the testbed owns.
  VqpTestbed(int nics, const vqp::VirtualQpConfig& config, size_t buffer_bytes,
             soft::SimFabricOptions fabric = {}, int cq_entries = 1 << 16);
  ~VqpTestbed();

  const common::Status& status() const { return status_; }
  // Host `host`'s buffer; Fill writes `length` seeded random bytes at `offset` into it.
  uint8_t* data(int host) { return hosts_[host].buffer; }
  void Fill(int host, size_t offset, size_t length, uint32_t seed);
  soft::SimFabric& fabric() { return fabric_; }
  VqpHost& a() { return hosts_[0]; }
  VqpHost& b() { return hosts_[1]; }
  VqpHost& host(int i) { return hosts_[static_cast<size_t>(i)]; }

  // A WR from `from` to the peer: local and remote offsets into the two buffers.
  vqp::VirtualSendWr Wr(int from, ibv_wr_opcode opcode, uint64_t local_offset, uint64_t length,
                        uint64_t remote_offset, uint64_t wr_id, uint32_t imm = 0);
  // Polls both hosts' CQs (each side's VQP only progresses when its CQ is polled, as under an
  // engine) until `host` has `count` completions or `max_rounds` rounds passed. The other host's
  // completions are kept for its next Poll.
  std::vector<vqp::VirtualWc> Poll(int host, size_t count, int max_rounds = 200000);
  // Polls both CQs `rounds` times; completions are appended per host.
  void PollBoth(int rounds, std::vector<vqp::VirtualWc>* a, std::vector<vqp::VirtualWc>* b);
  // The recovery dialogue for physical QP `index` on both sides, as the engines run it: begin the
  // reset, wait until both are ready, reset, exchange entries, reconnect, wait for both probes.
  // Completions that arrive meanwhile are kept for the next Poll.
  common::Status RecoverQp(int index);

 private:
  void Init(int nics, const vqp::VirtualQpConfig& config, uint8_t* buffer_a, uint8_t* buffer_b,
            size_t buffer_bytes, int cq_entries);
  common::Status Build(VqpHost& h, int first_nic, int nics, const vqp::VirtualQpConfig& config,
                       uint8_t* buffer, size_t bytes, int cq_entries);

  std::vector<uint8_t> owned_[2];  // the buffers, when the testbed owns them
  soft::SimFabric fabric_;
  std::unique_ptr<soft::SoftProvider> provider_;
  VqpHost hosts_[2];
  std::vector<vqp::VirtualWc> backlog_[2];
  common::Status status_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_VQP_TESTBED_H_
