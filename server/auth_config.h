// AuthConfig: how braidd secures its listeners and whom it lets do what (doc/security.md).
//
//   tls: { cert: /etc/braid/tls/tls.crt, key: /etc/braid/tls/tls.key, ca: /etc/braid/tls/ca.crt,
//          client_auth: require, reload_seconds: 10 }
//   plaintext: false            # TCP without TLS: only when set, with a warning
//   auth:
//     tokens_file: /etc/braid/tokens   # lines "<identity> <token>"; re-read when it changes
//     anonymous_role: ""               # role of a caller with no identity ("": refused)
//     identities:
//       - { id: "spiffe://braid/client/a", role: client }
//       - { id: "uid:0", role: admin }
//
// Roles, each including the one before it: client (its own VQPs, regions and streams), operator
// (every VQP and region, drain, events), admin (fault injection). peer (another agent) may only
// call RecoverQp. An identity the config does not name is refused.
#ifndef BRAID_SERVER_AUTH_CONFIG_H_
#define BRAID_SERVER_AUTH_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::server {

enum class Role : uint8_t { kPeer, kClient, kOperator, kAdmin };
const char* RoleName(Role role);
std::optional<Role> ParseRole(const std::string& name);

// Whether TLS asks for, and verifies, the caller's certificate.
enum class ClientAuth : uint8_t { kNone, kOptional, kRequire };
const char* ClientAuthName(ClientAuth mode);

struct TlsConfig {
  std::string cert;  // PEM certificate chain ("": no TLS)
  std::string key;   // PEM private key
  std::string ca;    // PEM CA bundle that client (and peer agent) certificates must chain to
  ClientAuth client_auth = ClientAuth::kRequire;
  uint32_t reload_seconds = 10;  // how often the files are checked for a new certificate
  bool enabled() const { return !cert.empty(); }
};

struct IdentityBinding {
  std::string id;  // URI or DNS SAN of a certificate, a token's identity, or "uid:<n>"
  Role role = Role::kClient;
};

struct AuthConfig {
  TlsConfig tls;
  bool plaintext = false;  // serve TCP without TLS (explicitly asked for)
  std::string tokens_file;
  std::optional<Role> anonymous_role;
  std::vector<IdentityBinding> identities;

  common::Status Validate(bool tcp_listener) const;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AUTH_CONFIG_H_
