// UnixListener: the agent's Unix socket, accepted here rather than by gRPC so each caller's uid is
// known: the connecting process's credentials (SO_PEERCRED) are recorded with the Authenticator
// under the peer name gRPC gives the connection, then the connection is handed to the server.
// The socket file is created mode 0660 and removed on Stop. A uid holding its cap of connections
// open (server/connection_cap.h) has the next one closed at once, counted and logged as denied.
// Threading: Start/Stop from the owning thread; one accept thread in between.
#ifndef BRAID_SERVER_UNIX_LISTENER_H_
#define BRAID_SERVER_UNIX_LISTENER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "dataplane/common/result.h"
#include "server/audit_log.h"
#include "server/authenticator.h"
#include "server/connection_cap.h"

namespace braid::server {

class UnixListener {
 public:
  UnixListener() = default;
  ~UnixListener() { Stop(); }
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Listens on `path` (an earlier socket file there is replaced) and serves what it accepts
  // through `server`, at most `per_uid` connections of each uid at once. `server`, `auth` and
  // `audit` must outlive Stop.
  common::Status Start(const std::string& path, grpc::Server* server, Authenticator* auth,
                       AuditLog* audit, uint32_t per_uid);
  void Stop();

 private:
  void AcceptLoop();

  std::string path_;
  grpc::Server* server_ = nullptr;
  Authenticator* auth_ = nullptr;
  AuditLog* audit_ = nullptr;
  std::unique_ptr<ConnectionCap> cap_;  // the accept thread's
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the accept thread to stop
  std::thread thread_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_UNIX_LISTENER_H_
