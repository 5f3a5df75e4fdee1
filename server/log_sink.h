// EscapingSink: braidd's log output keeps one line per record, whatever a record holds.
//
// Log lines are logfmt (key=value, values with spaces in double quotes), one per line. Some values
// come from clients: the control endpoint a ConnectVqp request names (in the connected event's
// cause), a refused request's message. A newline in one of them wrote a second line the client
// chose, a forged record in the audit trail. This sink, wrapped around each of the logger's sinks
// at start, writes control characters as escapes (\n, \r, \t, \xNN); LogValue escapes what would
// end a quoted value early.
//
// Threading: as the wrapped sink (spdlog serialises a logger's calls to its sinks).
#ifndef BRAID_SERVER_LOG_SINK_H_
#define BRAID_SERVER_LOG_SINK_H_

#include <spdlog/sinks/sink.h>

#include <memory>
#include <string>
#include <string_view>

namespace braid::server {

class EscapingSink final : public spdlog::sinks::sink {
 public:
  explicit EscapingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}
  void log(const spdlog::details::log_msg& msg) override;
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

  // Wraps every sink of the default logger.
  static void Install();

 private:
  spdlog::sink_ptr inner_;
};

// `text` as the inside of a double-quoted logfmt value: backslashes and double quotes escaped.
std::string LogValue(std::string_view text);

}  // namespace braid::server

#endif  // BRAID_SERVER_LOG_SINK_H_
