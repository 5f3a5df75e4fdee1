#include "dataplane/verbs/qp_params.h"

namespace braid::verbs {

const char* QpStateName(QpState state) {
  switch (state) {
    case QpState::kReset:
      return "RESET";
    case QpState::kInit:
      return "INIT";
    case QpState::kRtr:
      return "RTR";
    case QpState::kRts:
      return "RTS";
    case QpState::kError:
      return "ERR";
  }
  return "?";
}

uint64_t RnrTimerNs(uint8_t code) {
  // Microseconds × 100 for codes 0..31 (IB spec table 45).
  static constexpr uint32_t kCentiMicros[32] = {
      65536, 1,    2,    3,    4,    6,     8,     12,    16,    24,   32,
      48,    64,   96,   128,  192,  256,   384,   512,   768,   1024, 1536,
      2048,  3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152};
  return uint64_t{kCentiMicros[code & 31]} * 10'000;  // ×0.01 ms → ns
}

}  // namespace braid::verbs
