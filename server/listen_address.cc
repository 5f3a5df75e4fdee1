#include "server/listen_address.h"

namespace braid::server {

std::optional<uint16_t> ListenAddress::ParsePort(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  uint32_t port = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return std::nullopt;
    port = port * 10 + static_cast<uint32_t>(ch - '0');
  }
  if (port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

std::optional<ListenAddress> ListenAddress::Parse(std::string_view text) {
  ListenAddress out;
  std::string_view host;
  size_t colon;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    colon = close + 1;
    out.ipv6 = true;
  } else {
    colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    if (host.find_first_of("[]:") != std::string_view::npos) return std::nullopt;
  }
  const std::optional<uint16_t> port = ParsePort(text.substr(colon + 1));
  if (host.empty() || !port) return std::nullopt;
  out.host = std::string(host);
  out.port = *port;
  return out;
}

}  // namespace braid::server
