// Quote: client input as it may appear in a status message — quoted, at most kMaxQuoted
// characters, the rest counted, never echoed whole (a message carrying a client's 8,000-character
// name would overflow gRPC's metadata limit and turn a NOT_FOUND into RESOURCE_EXHAUSTED).
// EscapeControl: client input where it is printed, a line at a time (the agent's log, braidctl's
// output), with its control characters as escapes.
#ifndef BRAID_DATAPLANE_COMMON_QUOTE_H_
#define BRAID_DATAPLANE_COMMON_QUOTE_H_

#include <cstdio>
#include <string>
#include <string_view>

namespace braid::common {

inline constexpr size_t kMaxQuoted = 100;

inline std::string Quote(std::string_view input) {
  if (input.size() <= kMaxQuoted) return "'" + std::string(input) + "'";
  return "'" + std::string(input.substr(0, kMaxQuoted)) + "…' (" +
         std::to_string(input.size() - kMaxQuoted) + " more characters)";
}

// `text` with control characters written as \n, \r, \t or \xNN: a newline in it cannot start a
// line of its own, nor an escape sequence drive the terminal it is printed on.
inline std::string EscapeControl(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", u);
      out += hex;
    }
  }
  return out;
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_QUOTE_H_
