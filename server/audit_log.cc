#include "server/audit_log.h"

#include <spdlog/spdlog.h>

#include "dataplane/common/quote.h"
#include "server/log_sink.h"

namespace braid::server {

void AuditLog::AuthFailed(const std::string& rpc, const char* reason, const std::string& peer,
                          const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  ++auth_failures_[reason];
  Log(fmt::format("agent={} audit=auth_failed rpc={} reason={} peer=\"{}\" msg=\"{}\"", agent_id_,
                  rpc, reason, LogValue(common::Quote(peer)), LogValue(message)));
}

void AuditLog::Denied(const std::string& rpc, const char* reason, const std::string& identity,
                      const std::string& peer, const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  ++denied_[{rpc, reason}];
  Log(fmt::format("agent={} audit=denied rpc={} reason={} identity=\"{}\" peer=\"{}\" msg=\"{}\"",
                  agent_id_, rpc, reason, LogValue(common::Quote(identity)),
                  LogValue(common::Quote(peer)), LogValue(message)));
}

void AuditLog::Log(const std::string& line) {
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ > std::chrono::seconds(10)) {
    window_start_ = now;
    lines_in_window_ = 0;
  }
  if (lines_in_window_ >= kLinesPerWindow) {
    ++left_out_;
    return;
  }
  ++lines_in_window_;
  if (left_out_ > 0) {
    spdlog::warn("{} left_out={}", line, left_out_);
    left_out_ = 0;
  } else {
    spdlog::warn("{}", line);
  }
}

std::map<std::string, uint64_t> AuditLog::auth_failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return auth_failures_;
}

std::map<std::pair<std::string, std::string>, uint64_t> AuditLog::denied() const {
  std::lock_guard<std::mutex> lock(mu_);
  return denied_;
}

}  // namespace braid::server
