#include "braid/connection.h"

namespace braid::client {

Connection::~Connection() {
  if (released_) return;
  (void)a_->DestroyVqp(vqp_a_);
  (void)b_->DestroyVqp(vqp_b_);
}

Result<std::unique_ptr<Connection>> Connect(std::shared_ptr<AgentClient> a,
                                            std::shared_ptr<AgentClient> b,
                                            const VqpOptions& options) {
  auto va = a->CreateVqp(options);
  if (!va.ok()) return va.status().WithContext("create VQP on " + a->target());
  auto vb = b->CreateVqp(options);
  if (!vb.ok()) {
    (void)a->DestroyVqp(va->vqp_id());
    return vb.status().WithContext("create VQP on " + b->target());
  }
  // From here the Connection owns both: any failure below destroys them.
  auto conn = std::make_unique<Connection>(a, b, va->vqp_id(), vb->vqp_id());
  auto ca = a->ConnectVqp(va->vqp_id(), vb->card());
  if (!ca.ok()) return ca.status().WithContext("connect VQP on " + a->target());
  auto cb = b->ConnectVqp(vb->vqp_id(), va->card());
  if (!cb.ok()) return cb.status().WithContext("connect VQP on " + b->target());
  return conn;
}

}  // namespace braid::client
