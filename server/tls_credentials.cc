#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

namespace braid::server {

namespace {

std::shared_ptr<grpc::experimental::CertificateProviderInterface> Watcher(const TlsConfig& tls) {
  if (tls.ca.empty()) {
    return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.key, tls.cert, tls.reload_seconds);
  }
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key, tls.cert, tls.ca, tls.reload_seconds);
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ListenerCredentials(const AuthConfig& config) {
  if (!config.tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Watcher(config.tls));
  options.watch_identity_key_cert_pairs();
  if (!config.tls.ca.empty()) options.watch_root_certs();
  switch (config.tls.client_auth) {
    case ClientAuth::kNone:
      options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      break;
    case ClientAuth::kOptional:
      options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
    case ClientAuth::kRequire:
      options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> PeerCredentials(const AuthConfig& config) {
  if (!config.tls.enabled()) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Watcher(config.tls));
  options.watch_identity_key_cert_pairs();
  if (!config.tls.ca.empty()) options.watch_root_certs();
  return grpc::experimental::TlsCredentials(options);
}

}  // namespace braid::server
