// Scenarios of the netns recovery driver that live outside its main file: operator drain, peer
// kill and restart, failure containment.
// Each prints what it measured and PASS/FAIL; returns the exit code.
#ifndef BRAID_TESTS_INTEGRATION_NETNS_SCENARIOS_H_
#define BRAID_TESTS_INTEGRATION_NETNS_SCENARIOS_H_

#include <memory>
#include <string>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/transfer_session.h"

namespace braid::netns {

// The i-th 1 MiB write of a stream cycling through 256 MiB of `src` into `dst`.
client::TransferOp Write(const client::Region& src, const client::Region& dst, uint64_t i,
                         double timeout_s);

int DrainScenario(client::AgentClient& a, uint64_t vqp, client::TransferSession& session,
                  const client::Region& src, const client::Region& dst);

int PeerKillScenario(std::shared_ptr<client::AgentClient> a, const std::string& b_addr,
                     std::unique_ptr<client::Connection>& conn,
                     std::unique_ptr<client::TransferSession>& session, const client::Region& src,
                     std::unique_ptr<client::Region>& dst, const std::string& kill_cmd,
                     const std::string& start_cmd);

// Every link down with write-with-imm messages in flight, then back; 1,000 messages after.
// `link_cmd K up|down` switches link K.
int ImmOutageScenario(std::shared_ptr<client::AgentClient> a,
                      std::shared_ptr<client::AgentClient> b, v1::Scheme scheme,
                      const client::Region& src, const client::Region& dst,
                      const std::string& link_cmd);

// Links going down and up with no traffic, and the peer started with every data link down.
// `link_cmd K up|down` switches link K; `kill_cmd` and `start_cmd` stop and start the peer.
int PortScenario(std::shared_ptr<client::AgentClient> a, const std::string& b_addr,
                 const std::string& link_cmd, const std::string& kill_cmd,
                 const std::string& start_cmd);

// Link 1 down/up every 200 ms for `seconds` under a stream of 1 MiB writes.
int FlapScenario(client::TransferSession& session, const client::Region& src,
                 const client::Region& dst, const std::string& link_cmd, double seconds);

}  // namespace braid::netns

#endif  // BRAID_TESTS_INTEGRATION_NETNS_SCENARIOS_H_
