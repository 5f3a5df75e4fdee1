// Connect(): what an orchestrator does to join two agents with a virtual QP — create a VQP on
// each, hand each the other's business card, connect both — and undo it all on any failure.
// The Connection destroys both VQPs when destroyed (unless Release()d).
// Threading: as AgentClient.
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_CONNECTION_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_CONNECTION_H_

#include <memory>

#include "braid/agent_client.h"

namespace braid::client {

class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  AgentClient& a() const { return *a_; }
  AgentClient& b() const { return *b_; }
  const std::shared_ptr<AgentClient>& a_client() const { return a_; }
  const std::shared_ptr<AgentClient>& b_client() const { return b_; }
  uint64_t vqp_a() const { return vqp_a_; }  // on agent a, connected to vqp_b on agent b
  uint64_t vqp_b() const { return vqp_b_; }
  // Keeps both VQPs when this object goes away.
  void Release() { released_ = true; }

  Connection(std::shared_ptr<AgentClient> a, std::shared_ptr<AgentClient> b, uint64_t vqp_a,
             uint64_t vqp_b)
      : a_(std::move(a)), b_(std::move(b)), vqp_a_(vqp_a), vqp_b_(vqp_b) {}

 private:
  std::shared_ptr<AgentClient> a_, b_;
  uint64_t vqp_a_, vqp_b_;
  bool released_ = false;
};

Result<std::unique_ptr<Connection>> Connect(std::shared_ptr<AgentClient> a,
                                            std::shared_ptr<AgentClient> b,
                                            const VqpOptions& options = {});

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_CONNECTION_H_
