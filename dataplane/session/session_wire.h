// The session socket's messages (doc/local_data_path.md, "The session socket"): how a local client
// opens its session and registers its own memory with the agent. A SOCK_SEQPACKET Unix socket, one
// fixed-size message per request and per reply, descriptors riding along with SCM_RIGHTS:
//  - kOpenSession: the three ring sizes; the reply carries the segment and the two doorbells (in
//    that order);
//  - kRegisterFd: the request carries the file whose range is registered; the reply, the region id.
// One session per connection: when the connection closes (the client exited or was killed), the
// agent ends the session and deregisters the connection's regions once nothing of them is in
// flight. Control of everything else (VQPs, grants, binding peer regions) stays on gRPC.
// Threading: plain functions; a socket is used by one thread at a time.
#ifndef BRAID_DATAPLANE_SESSION_SESSION_WIRE_H_
#define BRAID_DATAPLANE_SESSION_SESSION_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::session {

inline constexpr uint32_t kWireMagic = 0x53455342;  // "BSES"
inline constexpr uint16_t kWireVersion = 2;
inline constexpr size_t kMaxWireGrants = 16;
inline constexpr size_t kMaxWireFds = 3;

enum class WireOp : uint16_t { kOpenSession = 1, kRegisterFd = 2 };

struct WireRequest {
  uint32_t magic = kWireMagic;
  uint16_t version = kWireVersion;
  uint16_t op = 0;          // WireOp
  uint32_t sq_entries = 0;  // kOpenSession: ring sizes (powers of two)
  uint32_t cq_entries = 0;
  uint64_t fd_offset = 0;  // kRegisterFd: the range of the file sent along (any byte offset)
  uint64_t length = 0;
  uint32_t num_grants = 0;  // VQPs (the caller's) granted access at registration
  uint32_t nq_entries = 0;  // kOpenSession: the notification ring's size (a power of two)
  uint64_t grant_vqps[kMaxWireGrants] = {};
  char label[64] = {};  // NUL-terminated
};

struct WireReply {
  uint32_t magic = kWireMagic;
  uint16_t version = kWireVersion;
  uint16_t op = 0;    // the request's
  uint32_t code = 0;  // common::StatusCode; 0: done
  uint32_t reserved = 0;
  uint64_t id = 0;         // the session or the region
  char message[240] = {};  // why not (NUL-terminated), when code != 0
};

// Sends `size` bytes as one message with `fds` attached. kIoError: the peer is gone.
common::Status SendMessage(int sock, const void* data, size_t size, std::span<const int> fds);
// Receives one message of exactly `size` bytes and up to kMaxWireFds descriptors (taken over by
// the caller, close-on-exec). kIoError: the peer closed; kInvalidArgument: a message of
// another size or truncated descriptors (whatever arrived is closed).
common::Status ReceiveMessage(int sock, void* data, size_t size, std::vector<int>* fds);
// A client's request (with `fd_out` attached when >= 0) and the agent's reply, whose descriptors
// go to `fds`. A refusal comes back as its status (the agent's code and message), also when the
// agent answered and closed before the request could be sent.
common::Result<WireReply> Exchange(int sock, const WireRequest& request, int fd_out,
                                   std::vector<int>* fds);

}  // namespace braid::session

#endif  // BRAID_DATAPLANE_SESSION_SESSION_WIRE_H_
