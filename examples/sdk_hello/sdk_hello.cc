// The SDK in a few lines: connect two agents with a virtual QP, write 64 MiB from one to the
// other, check it arrived. Usage: sdk_hello AGENT_A AGENT_B   (e.g. 127.0.0.1:7601 127.0.0.1:7602)
#include <cstdio>
#include <cstring>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/transfer_session.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sdk_hello AGENT_A AGENT_B\n");
    return 2;
  }
  using namespace braid::client;
  auto a = AgentClient::Open(argv[1]);
  auto b = AgentClient::Open(argv[2]);
  if (!a.ok() || !b.ok()) return std::fprintf(stderr, "agents unreachable\n"), 1;
  auto conn = Connect(*a, *b, {.num_qps = 8});  // a VQP on each side, connected
  if (!conn.ok()) return std::fprintf(stderr, "connect failed\n"), 1;
  auto src = (*a)->RegisterMemory(64 << 20);                          // shared memory, mapped here
  auto dst = (*b)->RegisterMemory(64 << 20, "", {(*conn)->vqp_b()});  // reachable by a's VQP
  if (!src.ok() || !dst.ok()) return std::fprintf(stderr, "setup failed\n"), 1;
  std::memset((*src)->data(), 0x5a, (*src)->size());
  auto session = TransferSession::Open(*a, (*conn)->vqp_a());  // one Transfer stream
  if (!session.ok()) return 1;
  std::vector<std::future<TransferResult>> done;
  for (uint64_t off = 0; off < (*src)->size(); off += 1 << 20) {
    done.push_back((*session)->Submit({.local_region = (*src)->id(),
                                       .local_offset = off,
                                       .remote = *(*dst)->remote((*conn)->vqp_b()),
                                       .remote_offset = off,
                                       .length = 1 << 20}));
  }
  for (auto& f : done) {
    auto r = f.get();
    if (!r.status.ok()) return std::fprintf(stderr, "%s\n", r.status.ToString().c_str()), 1;
  }
  const bool same = std::memcmp((*src)->data(), (*dst)->data(), (*src)->size()) == 0;
  std::printf("sdk_hello: 64 MiB written through a %d-QP VQP: %s\n", 8,
              same ? "identical" : "DIFFERENT");
  return same ? 0 : 1;
}
