#include "tests/agent/test_pki.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/agent/agent_harness.h"

namespace braid::testing {

std::unique_ptr<TestPki> TestPki::Make() {
  auto pki = std::make_unique<TestPki>();
  pki->dir_ = "/tmp/braid-pki-" + std::to_string(getpid()) + "-" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const CommandResult made =
      RunCommand("bash " BRAID_SOURCE_DIR "/tests/agent/testdata/make_test_certs.sh " + pki->dir_);
  if (made.exit_code != 0) {
    ADD_FAILURE() << "make_test_certs.sh: " << made.output;
    return nullptr;
  }
  for (const char* name : {"agent-a", "agent-b"}) {
    for (const char* ext : {".crt", ".key"}) {
      std::filesystem::copy_file(pki->Path(std::string(name) + ext),
                                 pki->Path(std::string("serving-") + name + ext));
    }
  }
  return pki;
}

TestPki::~TestPki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::shared_ptr<grpc::ChannelCredentials> TestPki::Tls(const std::string& ca,
                                                       const std::string& cert,
                                                       const std::string& token) const {
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = read(Path(ca + ".crt"));
  if (!cert.empty()) {
    o.pem_cert_chain = read(Path(cert + ".crt"));
    o.pem_private_key = read(Path(cert + ".key"));
  }
  auto creds = grpc::SslCredentials(o);
  if (!token.empty()) {
    creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(token));
  }
  return creds;
}

std::vector<std::string> TestPki::AgentArgs(const std::string& name, const std::string& client_auth,
                                            const std::string& tokens_file) const {
  std::vector<std::string> args = {"--tls-cert",
                                   Path("serving-" + name + ".crt"),
                                   "--tls-key",
                                   Path("serving-" + name + ".key"),
                                   "--tls-ca",
                                   Path("ca1.crt"),
                                   "--tls-client-auth",
                                   client_auth,
                                   "--tls-reload-seconds",
                                   "1"};
  if (!tokens_file.empty()) args.insert(args.end(), {"--tokens-file", tokens_file});
  for (const char* binding : {"spiffe://braid/client/a=client", "spiffe://braid/client/b=client",
                              "spiffe://braid/client/c=client", "spiffe://braid/operator=operator",
                              "spiffe://braid/admin=admin", "spiffe://braid/agent/a=peer",
                              "spiffe://braid/agent/b=peer"}) {
    args.push_back("--identity");
    args.push_back(binding);
  }
  return args;
}

}  // namespace braid::testing
