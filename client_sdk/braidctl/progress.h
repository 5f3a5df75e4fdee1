// Progress: a progress line for long operations — bytes done, percentage, rate, ETA — on stderr.
// On a terminal it redraws one line; otherwise it prints a line at most every `interval`.
// Threading: one thread.
#ifndef BRAID_CLIENT_SDK_BRAIDCTL_PROGRESS_H_
#define BRAID_CLIENT_SDK_BRAIDCTL_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace braid::ctl {

std::string HumanBytes(double bytes);

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
