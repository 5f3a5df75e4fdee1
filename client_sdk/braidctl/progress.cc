#include "client_sdk/braidctl/progress.h"

#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace braid::ctl {

std::string HumanBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, kUnits[u]);
  return buf;
}

std::optional<uint64_t> ParseBytes(const std::string& text) {
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    return std::nullopt;  // no sign, no space, no "inf"
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const std::string unit = end;
  double mul = 0;
  if (unit.empty() || unit == "B") mul = 1;
  if (unit == "K" || unit == "k" || unit == "KiB") mul = 0x1p10;
  if (unit == "M" || unit == "m" || unit == "MiB") mul = 0x1p20;
  if (unit == "G" || unit == "g" || unit == "GiB") mul = 0x1p30;
  if (unit == "T" || unit == "t" || unit == "TiB") mul = 0x1p40;
  if (mul == 0 || !std::isfinite(v) || v * mul > 0x1p50) return std::nullopt;
  return static_cast<uint64_t>(v * mul);
}

Progress::Progress(std::string what, uint64_t total, bool enabled)
    : what_(std::move(what)),
      total_(total),
      enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void Progress::Update(uint64_t done) {
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1000);
  if (now - last_draw_ < interval) return;
  last_draw_ = now;
  Draw(done, false);
}

void Progress::Finish() { Draw(done_, true); }

void Progress::Draw(uint64_t done, bool last) {
  if (!enabled_) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  const double pct =
      total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
  char bar[26];
  const int filled = static_cast<int>(pct / 4);
  for (int i = 0; i < 25; ++i) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
  bar[25] = 0;
  std::fprintf(stderr, "%s%s [%s] %5.1f%% %s / %s  %.2f GB/s  ETA %ds%s", tty_ ? "\r" : "",
               what_.c_str(), bar, pct, HumanBytes(static_cast<double>(done)).c_str(),
               HumanBytes(static_cast<double>(total_)).c_str(), rate / 1e9,
               static_cast<int>(eta + 0.5), tty_ && !last ? "" : "\n");
  std::fflush(stderr);
}

}  // namespace braid::ctl
