// Quote: client input as it may appear in a status message — quoted, at most kMaxQuoted
// characters, the rest counted, never echoed whole (a message carrying a client's 8,000-character
// name would overflow gRPC's metadata limit and turn a NOT_FOUND into RESOURCE_EXHAUSTED).
#ifndef BRAID_DATAPLANE_COMMON_QUOTE_H_
#define BRAID_DATAPLANE_COMMON_QUOTE_H_

#include <string>
#include <string_view>

namespace braid::common {

inline constexpr size_t kMaxQuoted = 100;

inline std::string Quote(std::string_view input) {
  if (input.size() <= kMaxQuoted) return "'" + std::string(input) + "'";
  return "'" + std::string(input.substr(0, kMaxQuoted)) + "…' (" +
         std::to_string(input.size() - kMaxQuoted) + " more characters)";
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_QUOTE_H_
