// SessionListener: the agent's session socket (dataplane/session/session_wire.h), next to its gRPC
// Unix socket (that path + ".session"). A local client connects, is identified by its uid
// (SO_PEERCRED, through the Authenticator, as on the gRPC Unix socket), and opens its session:
// the engine's segment and doorbells go back with SCM_RIGHTS. It may then register its own
// memory by descriptor (RegisterFd). The connection is the session: when it closes (the client
// exited or was killed), the session ends (what it had in flight completes into nothing) and its
// regions go to the Reclaimer (deregistered as soon as nothing of them is in flight). A connection
// is admitted against its uid's cap (server/connection_cap.h) and against the engine's descriptor
// budget (the reserve stays free for the control plane); a refused one is answered with why,
// counted and logged as denied, and closed. Threading: Start/Stop from the owning thread; one
// thread serves every connection in between (requests are few: one per session and one per
// registration; the data path is the rings). The engine, the authenticator and the reclaimer must
// outlive Stop.
#ifndef BRAID_SERVER_SESSION_LISTENER_H_
#define BRAID_SERVER_SESSION_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/common/unique_fd.h"
#include "dataplane/engine/engine.h"
#include "server/audit_log.h"
#include "server/authenticator.h"
#include "server/connection_cap.h"
#include "server/reclaimer.h"

namespace braid::server {

class SessionListener {
 public:
  // At most `per_uid` connections of each uid at once.
  SessionListener(engine::Engine& engine, Authenticator& auth, AuditLog& audit,
                  Reclaimer& reclaimer, uint32_t per_uid)
      : engine_(engine),
        auth_(auth),
        audit_(audit),
        reclaimer_(reclaimer),
        cap_(per_uid, "session socket") {}
  ~SessionListener() { Stop(); }
  SessionListener(const SessionListener&) = delete;
  SessionListener& operator=(const SessionListener&) = delete;

  // Listens on `path` (a stale socket file there is replaced; created mode 0660).
  common::Status Start(const std::string& path);
  void Stop();
  // Connections being served now (any thread).
  size_t connections() const { return connections_.load(std::memory_order_relaxed); }

 private:
  struct Connection {
    common::UniqueFd fd;
    Caller caller;
    uint64_t session = 0;
    std::vector<uint64_t> regions;  // registered through this connection
  };
  void Loop();
  void Accept();
  // Serves one request; false: the connection is done (closed, or it broke the protocol).
  bool Serve(Connection& c);
  void End(Connection& c);

  engine::Engine& engine_;
  Authenticator& auth_;
  AuditLog& audit_;
  Reclaimer& reclaimer_;
  ConnectionCap cap_;  // the thread's
  std::string path_;
  common::UniqueFd listen_fd_;
  common::UniqueFd stop_fd_;  // eventfd: wakes the thread to stop
  std::thread thread_;
  std::vector<std::unique_ptr<Connection>> conns_;  // the thread's
  std::atomic<size_t> connections_{0};
};

}  // namespace braid::server

#endif  // BRAID_SERVER_SESSION_LISTENER_H_
