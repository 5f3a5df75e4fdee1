// ConnectionCap: how many connections one local caller (a uid) may hold open on one of the
// agent's Unix sockets. Without it, one process opening connections and sending nothing fills the
// agent's descriptor table, and every other caller, the control plane and health probes included,
// finds the agent deaf until that process goes.
//
// A connection is counted from Admit until its descriptor is closed, by whoever closes it (the
// gRPC server closes the connections it was handed without telling anyone): a held descriptor is
// known by its socket's inode, and one whose number now names another file, or nothing, is
// forgotten. Only the uid at its cap is looked at again, so Admit costs one fstat per connection
// that uid holds, and nothing more while it is below.
// Threading: one thread (the listener's accept loop).
#ifndef BRAID_SERVER_CONNECTION_CAP_H_
#define BRAID_SERVER_CONNECTION_CAP_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::server {

class ConnectionCap {
 public:
  // `per_uid`: connections one uid may hold; `socket_name` names the socket in refusals.
  ConnectionCap(uint32_t per_uid, std::string socket_name)
      : per_uid_(per_uid), socket_name_(std::move(socket_name)) {}

  // Counts the connection `fd` (just accepted) for `uid`, or refuses it (kNoResource saying how
  // many that uid holds and what to do) when the uid holds `per_uid` connections still open.
  common::Status Admit(int fd, uid_t uid);

 private:
  struct Held {
    int fd;
    dev_t dev;
    ino_t ino;
  };
  // Forgets the connections of `uid` whose descriptors were closed since.
  void Prune(std::vector<Held>& held) const;

  const uint32_t per_uid_;
  const std::string socket_name_;
  std::unordered_map<uid_t, std::vector<Held>> by_uid_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_CONNECTION_CAP_H_
