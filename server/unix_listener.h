// UnixListener: the agent's Unix socket, accepted here rather than by gRPC so each caller's uid is
// known: the connecting process's credentials (SO_PEERCRED) are recorded with the Authenticator
// under the peer name gRPC gives the connection, then the connection is handed to the server.
// The socket file is created mode 0660 and removed on Stop.
// Threading: Start/Stop from the owning thread; one accept thread in between.
#ifndef BRAID_SERVER_UNIX_LISTENER_H_
#define BRAID_SERVER_UNIX_LISTENER_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <thread>

#include "dataplane/common/result.h"
#include "server/authenticator.h"

namespace braid::server {

class UnixListener {
 public:
  UnixListener() = default;
  ~UnixListener() { Stop(); }
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Listens on `path` (an earlier socket file there is replaced) and serves what it accepts
  // through `server`. Both must outlive Stop.
  common::Status Start(const std::string& path, grpc::Server* server, Authenticator* auth);
  void Stop();

 private:
  void AcceptLoop();

  std::string path_;
  grpc::Server* server_ = nullptr;
  Authenticator* auth_ = nullptr;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the accept thread to stop
  std::thread thread_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_UNIX_LISTENER_H_
