// A competing busy process for the contention benchmarks: a forked child that spins until killed,
// as another tenant's busy poller would.
#ifndef BRAID_BENCH_BUSY_PROCESS_H_
#define BRAID_BENCH_BUSY_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

namespace braid::bench {

class BusyProcess {
 public:
  BusyProcess() : pid_(fork()) {
    if (pid_ == 0) {
      volatile uint64_t n = 0;
      for (;;) n = n + 1;
    }
  }
  ~BusyProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  BusyProcess(const BusyProcess&) = delete;
  BusyProcess& operator=(const BusyProcess&) = delete;

 private:
  const pid_t pid_;
};

}  // namespace braid::bench

#endif  // BRAID_BENCH_BUSY_PROCESS_H_
