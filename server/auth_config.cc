#include "server/auth_config.h"

#include <set>

#include "dataplane/common/quote.h"

namespace braid::server {

using common::Status;

const char* RoleName(Role role) {
  switch (role) {
    case Role::kPeer:
      return "peer";
    case Role::kClient:
      return "client";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

const char* ClientAuthName(ClientAuth mode) {
  switch (mode) {
    case ClientAuth::kNone:
      return "none";
    case ClientAuth::kOptional:
      return "optional";
    case ClientAuth::kRequire:
      return "require";
  }
  return "?";
}

std::optional<Role> ParseRole(const std::string& name) {
  for (Role r : {Role::kPeer, Role::kClient, Role::kOperator, Role::kAdmin}) {
    if (name == RoleName(r)) return r;
  }
  return std::nullopt;
}

Status AuthConfig::Validate(bool tcp_listener) const {
  if (tls.enabled() && tls.key.empty()) {
    return Status::InvalidArgument("tls.cert is set but tls.key is not: give both");
  }
  if (!tls.enabled() && !tls.key.empty()) {
    return Status::InvalidArgument("tls.key is set but tls.cert is not: give both");
  }
  if (tls.enabled() && tls.client_auth != ClientAuth::kNone && tls.ca.empty()) {
    return Status::InvalidArgument(
        "tls.client_auth verifies client certificates but tls.ca is not set: give the CA bundle, "
        "or set tls.client_auth: none");
  }
  if (tls.reload_seconds == 0) return Status::InvalidArgument("tls.reload_seconds must be >= 1");
  if (tcp_listener && !tls.enabled() && !plaintext) {
    return Status::InvalidArgument(
        "the TCP listener needs TLS: set tls.cert and tls.key (--tls-cert, --tls-key), or "
        "plaintext: true (--plaintext) to serve without it");
  }
  if (tls.enabled() && plaintext) {
    return Status::InvalidArgument("plaintext: true and tls.cert are both set: choose one");
  }
  std::set<std::string> seen;
  for (const IdentityBinding& b : identities) {
    if (b.id.empty()) return Status::InvalidArgument("auth.identities: an entry has no id");
    if (!seen.insert(b.id).second) {
      return Status::InvalidArgument("auth.identities names " + common::Quote(b.id) + " twice");
    }
  }
  return Status::Ok();
}

}  // namespace braid::server
