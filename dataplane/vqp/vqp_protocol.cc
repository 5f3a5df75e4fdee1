// The choice of a VQP's protocol, made once at creation.
#include "dataplane/vqp/vqp_protocol.h"

#include <algorithm>
#include <bit>

#include "dataplane/vqp/dqplb_protocol.h"
#include "dataplane/vqp/single_qp_protocol.h"
#include "dataplane/vqp/spray_protocol.h"

namespace braid::vqp {

std::unique_ptr<VqpProtocol> VqpProtocol::Make(VirtualQp& vqp, const VirtualQpConfig& config) {
  if (config.num_qps == 1) return std::make_unique<SingleQpProtocol>(vqp);
  if (config.scheme == Scheme::kSpray) return std::make_unique<SprayProtocol>(vqp);
  return std::make_unique<DqplbProtocol>(vqp, ReorderWindowSize(config));
}

// DQPLB sequence numbers may run ahead by everything the sender can have in flight; SPRAY notify
// numbers by the sender's outstanding virtual WRs.
uint32_t VqpProtocol::ReorderWindowSize(const VirtualQpConfig& config) {
  const uint64_t want =
      config.scheme == Scheme::kDqplb
          ? 2ull * config.num_qps * config.qp_capacity + 2ull * config.max_virtual_wrs
          : 2ull * config.max_virtual_wrs;
  return static_cast<uint32_t>(std::min<uint64_t>(std::bit_ceil(want), 1u << 23));
}

int VqpProtocol::SequenceBits(const VirtualQpConfig& config) {
  return config.scheme == Scheme::kDqplb ? 24 : 32;
}

}  // namespace braid::vqp
