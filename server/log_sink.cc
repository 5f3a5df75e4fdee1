#include "server/log_sink.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "dataplane/common/quote.h"

namespace braid::server {

namespace {

bool IsControl(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

}  // namespace

void EscapingSink::log(const spdlog::details::log_msg& msg) {
  const std::string_view payload(msg.payload.data(), msg.payload.size());
  if (std::none_of(payload.begin(), payload.end(), IsControl)) {
    inner_->log(msg);
    return;
  }
  const std::string escaped = common::EscapeControl(payload);
  spdlog::details::log_msg copy(msg);
  copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
  inner_->log(copy);
}

void EscapingSink::Install() {
  std::vector<spdlog::sink_ptr>& sinks = spdlog::default_logger()->sinks();
  for (spdlog::sink_ptr& s : sinks) s = std::make_shared<EscapingSink>(s);
}

std::string LogValue(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace braid::server
