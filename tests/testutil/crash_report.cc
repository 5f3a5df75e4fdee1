// A test binary that crashes names the test it crashed in. Under ctest (--gtest_brief=1) a
// SIGSEGV printed nothing but "Running main()", with no test name and no stack: a crash seen once
// in CI could not be traced. Linked into a test binary's sources, this records each test's name
// as it starts and, on SIGSEGV, SIGFPE, SIGILL or SIGABRT, writes that name and a raw stack to
// stderr (async-signal-safe calls only), then dies of the same signal as before.
// Not in sanitizer builds: their own handlers report better.
#include <execinfo.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>

namespace braid::testing {
namespace {

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)

char current_test[512] = "(no test started)";

void Write(const char* text) {
  const ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void OnCrash(int sig) {
  Write("\n*** test binary crashed (signal ");
  char digits[4] = {static_cast<char>('0' + sig / 10 % 10), static_cast<char>('0' + sig % 10), ')',
                    0};
  Write(digits);
  Write(" in ");
  Write(current_test);
  Write("; stack:\n");
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
  signal(sig, SIG_DFL);
  raise(sig);
}

class NameRecorder : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::snprintf(current_test, sizeof(current_test), "%s.%s", info.test_suite_name(), info.name());
  }
};

struct Install {
  Install() {
    void* warm[1];
    backtrace(warm, 1);  // loads libgcc now, not inside the handler
    // gtest owns its listeners.
    ::testing::UnitTest::GetInstance()->listeners().Append(
        std::make_unique<NameRecorder>().release());
    for (int sig : {SIGSEGV, SIGFPE, SIGILL, SIGABRT}) signal(sig, OnCrash);
  }
} install;

#endif

}  // namespace
}  // namespace braid::testing
