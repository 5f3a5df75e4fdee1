// Progress: a progress line for long operations — bytes done, percentage, rate, ETA — on stderr.
// On a terminal it redraws one line; otherwise it prints a line at most every `interval`.
// Byte counts as people write them and read them: HumanBytes and ParseBytes.
// Threading: one thread.
#ifndef BRAID_CLIENT_SDK_BRAIDCTL_PROGRESS_H_
#define BRAID_CLIENT_SDK_BRAIDCTL_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace braid::ctl {

std::string HumanBytes(double bytes);
// `text` as a byte count: a number (a fraction allowed: "1.5G") and an optional unit, K/k/KiB,
// M/m/MiB, G/g/GiB or T/t/TiB (powers of 1,024); nullopt if it is not one or is above 2^50
// (1 PiB). Whole bytes: a fraction of a byte is dropped.
std::optional<uint64_t> ParseBytes(const std::string& text);

class Progress {
 public:
  Progress(std::string what, uint64_t total, bool enabled);
  void Update(uint64_t done);
  void Finish();

 private:
  void Draw(uint64_t done, bool last);
  std::string what_;
  uint64_t total_;
  bool enabled_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  uint64_t done_ = 0;
};

}  // namespace braid::ctl

#endif  // BRAID_CLIENT_SDK_BRAIDCTL_PROGRESS_H_
