// gRPC credentials from the agent's TLS config, for its listeners and for its calls to peer agents.
//
// Both watch the certificate files (gRPC's FileWatcherCertificateProvider): a certificate or CA
// bundle replaced on disk is used for new connections within tls.reload_seconds, with no restart.
// A server that verifies client certificates (tls.client_auth) refuses a handshake without one, or
// with one that does not chain to tls.ca or has expired; it verifies them itself (OpenSSL, against
// tls.ca as it is on disk now), so that each refusal is counted and logged in the AuditLog. A peer
// agent is called with this agent's own certificate (mutual TLS), and its server certificate must
// chain to tls.ca and name the host.
#ifndef BRAID_SERVER_TLS_CREDENTIALS_H_
#define BRAID_SERVER_TLS_CREDENTIALS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>

#include "dataplane/common/result.h"
#include "server/audit_log.h"
#include "server/auth_config.h"

namespace braid::server {

// TLS when the config has a certificate, plaintext otherwise (AuthConfig::Validate allowed that).
// `audit` (must outlive the credentials) counts the refused handshakes.
std::shared_ptr<grpc::ServerCredentials> ListenerCredentials(const AuthConfig& config,
                                                             AuditLog& audit);
// For RecoverQp calls to peer agents: mutual TLS with this agent's certificate, or plaintext.
std::shared_ptr<grpc::ChannelCredentials> PeerCredentials(const AuthConfig& config);
// The identity a certificate gives its holder, as the Authenticator reads it on the other side:
// its first URI SAN, else its first DNS SAN, else its common name. Read at start (a rotated
// certificate must keep the identity).
common::Result<std::string> CertificateIdentity(const std::string& pem_path);

}  // namespace braid::server

#endif  // BRAID_SERVER_TLS_CREDENTIALS_H_
