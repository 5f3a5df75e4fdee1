#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>

namespace braid::server {

namespace {

std::shared_ptr<grpc::experimental::CertificateProviderInterface> Watcher(const TlsConfig& tls) {
  if (tls.ca.empty()) {
    return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(tls.key, tls.cert,
                                                                                tls.reload_seconds);
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

common::Result<std::string> CertificateIdentity(const std::string& pem_path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(pem_path.c_str(), "r"), &std::fclose);
  if (!file) return common::Status::FromErrno(errno, "open certificate " + pem_path);
  std::unique_ptr<X509, void (*)(X509*)> cert(PEM_read_X509(file.get(), nullptr, nullptr, nullptr),
                                              &X509_free);
  if (!cert) {
    return common::Status::InvalidArgument("certificate " + pem_path + " is not PEM X.509");
  }
  auto text = [](const ASN1_STRING* s) {
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<size_t>(ASN1_STRING_length(s)));
  };
  std::string uri, dns;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_URI && uri.empty()) uri = text(n->d.uniformResourceIdentifier);
    if (n->type == GEN_DNS && dns.empty()) dns = text(n->d.dNSName);
  }
  GENERAL_NAMES_free(names);
  if (!uri.empty()) return uri;
  if (!dns.empty()) return dns;
  X509_NAME* subject = X509_get_subject_name(cert.get());
  const int cn = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (cn < 0) return common::Status::InvalidArgument("certificate " + pem_path + " names nobody");
  return text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, cn)));
}

}  // namespace braid::server
