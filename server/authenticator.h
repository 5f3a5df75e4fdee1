// Authenticator: who is calling (an identity) and what it may do (its role), for every gRPC call.
//
// The identity is the first that applies:
//  1. the client certificate TLS verified against tls.ca: its first URI SAN (a SPIFFE ID, say),
//     else its first DNS SAN, else its common name;
//  2. a bearer token ("authorization: Bearer <token>") listed in the tokens file;
//  3. on the Unix socket, the connecting process's uid ("uid:<n>", from SO_PEERCRED);
//  4. none: the caller is anonymous, and has `anonymous_role` if the config gives one.
// The config maps identities to roles; one it does not name is refused (PERMISSION_DENIED), as is
// a caller with no identity and no anonymous role or a token nobody has (UNAUTHENTICATED).
// Each identity the config names has a fixed OwnerId (its position, from 1); anonymous callers
// share the one after the last.
// Threading: any gRPC thread. The tokens file is re-read, under a mutex, when it changes on disk,
// so a token taken out of it is refused from the next call on.
#ifndef BRAID_SERVER_AUTHENTICATOR_H_
#define BRAID_SERVER_AUTHENTICATOR_H_

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/common/status.h"
#include "dataplane/engine/engine_types.h"
#include "server/auth_config.h"

namespace braid::server {

struct Caller {
  std::string identity;  // "" for an anonymous caller
  Role role = Role::kClient;
  engine::OwnerId owner = engine::kAnyOwner;  // what it creates belongs to this owner
  int uid = -1;  // on the Unix socket, its uid (the owner of the region files it registers)
  // The owner its look-ups are limited to: its own as a client, any as an operator or admin.
  engine::OwnerId scope() const { return role >= Role::kOperator ? engine::kAnyOwner : owner; }
  std::string Describe() const { return identity.empty() ? "an anonymous caller" : identity; }
};

// Why a caller was refused, for the audit counters.
struct Refusal {
  grpc::Status status;
  const char* reason = "";  // no_identity | bad_token | unknown_identity
};

class Authenticator {
 public:
  explicit Authenticator(AuthConfig config);

  // The caller of `context`, or why it is refused.
  bool Identify(const grpc::ServerContextBase& context, Caller* caller, Refusal* refusal);
  // The caller behind a local socket peer's uid (SO_PEERCRED): its binding, else anonymous if the
  // config allows that (the session socket, which gRPC does not see).
  bool IdentifyLocal(uint32_t uid, Caller* caller, Refusal* refusal) const;
  // The identity an OwnerId stands for ("" for anonymous or unknown).
  std::string IdentityOf(engine::OwnerId owner) const;

  // Whether the tokens file can be read and every line is "<identity> <token>" (blank lines and
  // '#' comments aside): checked at start, so that a wrong path or a broken line is an error then
  // rather than every token refused later. The running agent re-reads the file when it changes and
  // skips a broken line.
  static common::Status CheckTokensFile(const std::string& path);

  // The Unix socket's acceptor records each connection's uid under the peer name gRPC reports for
  // it; Identify reads it back.
  void RecordUnixPeer(const std::string& peer, uint32_t uid);

 private:
  // The identity behind `token`, "" if none (tokens file re-read when it changed).
  bool TokenIdentity(const std::string& token, std::string* identity, Refusal* refusal);
  bool Bind(const std::string& identity, Caller* caller, Refusal* refusal) const;
  bool Anonymous(Caller* caller, Refusal* refusal) const;

  const AuthConfig config_;
  const engine::OwnerId anonymous_owner_;
  std::mutex mu_;
  struct timespec tokens_mtime_ = {};
  off_t tokens_size_ = -1;
  std::vector<std::pair<std::string, std::string>> tokens_;  // (token, identity); guarded by mu_
  std::map<std::string, uint32_t> unix_peers_;               // peer → uid; guarded by mu_
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AUTHENTICATOR_H_
