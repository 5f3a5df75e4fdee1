// TestPki: a test CA and certificates (tests/agent/testdata/make_test_certs.sh) in a directory of
// its own, removed on destruction, for the security tests and the TLS bench: CAs ca1 and ca2;
// agent-a, agent-b (and agent-a-rotated, from ca2); client-a, client-b, operator, admin; mallory
// (an identity no agent knows), other-ca (from ca2), expired.
#ifndef BRAID_TESTS_AGENT_TEST_PKI_H_
#define BRAID_TESTS_AGENT_TEST_PKI_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

namespace braid::testing {

class TestPki {
 public:
  static std::unique_ptr<TestPki> Make();  // nullptr (and a test failure) if openssl failed
  TestPki() = default;                     // empty; Make() fills it
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  std::string Path(const std::string& file) const { return dir_ + "/" + file; }
  // TLS trusting `ca`, presenting `cert` ("": none), with `token` ("": none).
  std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca, const std::string& cert,
                                                const std::string& token = "") const;
  // braidd's flags for agent `name` (agent-a, agent-b): its certificate, served from a copy
  // (serving-<name>.crt/.key) a test may rotate, CA 1, and the test identities and their roles.
  std::vector<std::string> AgentArgs(const std::string& name, const std::string& client_auth,
                                     const std::string& tokens_file) const;

 private:
  std::string dir_;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_AGENT_TEST_PKI_H_
