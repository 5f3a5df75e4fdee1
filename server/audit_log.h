// AuditLog: every refused call, counted and logged.
//
// Two counters (exported as braid_auth_failures_total{reason} and
// braid_denied_requests_total{rpc,reason}): callers whose identity could not be established or is
// not configured, and known callers asking for what their role does not allow. Each refusal is one
// structured log line, at most kLinesPerWindow per 10 s; beyond that they are counted and the
// number left out is logged with the next line.
// Threading: any thread (a mutex; refusals are not on the data path).
#ifndef BRAID_SERVER_AUDIT_LOG_H_
#define BRAID_SERVER_AUDIT_LOG_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace braid::server {

class AuditLog {
 public:
  static constexpr int kLinesPerWindow = 20;
  // Every reason AuthFailed is given: the metric has a series for each from the start.
  static constexpr std::array<const char*, 6> kAuthFailureReasons = {
      "no_identity",           "bad_token",          "unknown_identity", "no_certificate",
      "untrusted_certificate", "expired_certificate"};

  explicit AuditLog(std::string agent_id) : agent_id_(std::move(agent_id)) {}

  // A caller whose identity failed (`reason`: one of kAuthFailureReasons).
  void AuthFailed(const std::string& rpc, const char* reason, const std::string& peer,
                  const std::string& message);
  // A known caller refused for its role.
  void Denied(const std::string& rpc, const char* reason, const std::string& identity,
              const std::string& peer, const std::string& message);

  std::map<std::string, uint64_t> auth_failures() const;
  std::map<std::pair<std::string, std::string>, uint64_t> denied() const;

 private:
  void Log(const std::string& line);

  const std::string agent_id_;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> auth_failures_;
  std::map<std::pair<std::string, std::string>, uint64_t> denied_;
  std::chrono::steady_clock::time_point window_start_{};
  int lines_in_window_ = 0;
  uint64_t left_out_ = 0;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_AUDIT_LOG_H_
