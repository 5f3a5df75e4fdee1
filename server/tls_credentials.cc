#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

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

// Verifies a client's certificate chain against the CA bundle (re-read when the file changes) and
// reports each refusal to the AuditLog: no_certificate (required but absent),
// expired_certificate, untrusted_certificate (does not chain to the CA, or is not yet valid).
class ClientCertificateVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  ClientCertificateVerifier(std::string ca_path, bool required, AuditLog& audit)
      : ca_path_(std::move(ca_path)), required_(required), audit_(audit) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)>, grpc::Status* sync_status) override {
    // The client's certificate, and what else it sent (on a server, OpenSSL's peer chain leaves
    // the certificate itself out): intermediates, maybe its CA, all untrusted.
    std::string pem(request->peer_cert().data(), request->peer_cert().size());
    if (!pem.empty() && !request->peer_cert_full_chain().empty()) {
      pem += "\n" + std::string(request->peer_cert_full_chain().data(),
                                request->peer_cert_full_chain().size());
    }
    *sync_status = Check(pem);
    return true;
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  using Store = std::unique_ptr<X509_STORE, void (*)(X509_STORE*)>;
  using Cert = std::unique_ptr<X509, void (*)(X509*)>;

  grpc::Status Refuse(const char* reason, const std::string& message) {
    audit_.AuthFailed("(TLS handshake)", reason, "tls", message);
    return {grpc::StatusCode::UNAUTHENTICATED, message};
  }

  grpc::Status Check(const std::string& chain_pem) {
    if (chain_pem.empty()) {
      if (!required_) return grpc::Status::OK;  // a token may identify it
      return Refuse("no_certificate", "a client certificate is required");
    }
    std::vector<Cert> chain;
    std::unique_ptr<BIO, int (*)(BIO*)> bio(
        BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())), &BIO_free);
    while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      chain.emplace_back(c, &X509_free);
    }
    ERR_clear_error();  // the loop ends on a "no start line" error
    if (chain.empty())
      return Refuse("untrusted_certificate", "the client certificate is unreadable");
    std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(
        sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_free(s); });
    for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
    std::lock_guard<std::mutex> lock(mu_);
    if (!LoadStore()) {
      return Refuse("untrusted_certificate", "the agent cannot read its CA bundle " + ca_path_);
    }
    std::unique_ptr<X509_STORE_CTX, void (*)(X509_STORE_CTX*)> ctx(X509_STORE_CTX_new(),
                                                                   &X509_STORE_CTX_free);
    if (X509_STORE_CTX_init(ctx.get(), store_.get(), chain[0].get(), untrusted.get()) != 1) {
      return Refuse("untrusted_certificate", "the client certificate could not be checked");
    }
    if (X509_verify_cert(ctx.get()) == 1) return grpc::Status::OK;
    const int err = X509_STORE_CTX_get_error(ctx.get());
    const std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_CERT_HAS_EXPIRED) {
      return Refuse("expired_certificate", "the client certificate has expired");
    }
    return Refuse("untrusted_certificate", "the client certificate is not trusted: " + why);
  }

  // The CA bundle as it is on disk (re-read when its modification time or size changed).
  bool LoadStore() {
    struct stat st {};
    if (stat(ca_path_.c_str(), &st) != 0) return store_ != nullptr;
    if (store_ != nullptr && st.st_mtim.tv_sec == ca_mtime_.tv_sec &&
        st.st_mtim.tv_nsec == ca_mtime_.tv_nsec && st.st_size == ca_size_) {
      return true;
    }
    Store fresh(X509_STORE_new(), &X509_STORE_free);
    if (X509_STORE_load_file(fresh.get(), ca_path_.c_str()) != 1) {
      ERR_clear_error();
      return store_ != nullptr;
    }
    store_ = std::move(fresh);
    ca_mtime_ = st.st_mtim;
    ca_size_ = st.st_size;
    return true;
  }

  const std::string ca_path_;
  const bool required_;
  AuditLog& audit_;
  std::mutex mu_;
  Store store_{nullptr, &X509_STORE_free};
  timespec ca_mtime_{};
  off_t ca_size_ = 0;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> ListenerCredentials(const AuthConfig& config,
                                                             AuditLog& audit) {
  if (!config.tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Watcher(config.tls));
  options.watch_identity_key_cert_pairs();
  if (!config.tls.ca.empty()) options.watch_root_certs();
  if (config.tls.client_auth == ClientAuth::kNone || config.tls.ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    // Asked for, and verified here rather than inside the handshake, so refusals are counted.
    options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
    options.set_certificate_verifier(
        grpc::experimental::ExternalCertificateVerifier::Create<ClientCertificateVerifier>(
            config.tls.ca, config.tls.client_auth == ClientAuth::kRequire, audit));
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
