// ForkedChild: the two-process shape of the loopback benchmarks. The parent forks a child that
// runs `run(read_fd, write_fd)` and exits with its result; a pipe each way carries the set-up
// (queue numbers, addresses, keys) and the parent's word to stop. Header-only and free of Braid's
// libraries, so the libfabric reference program uses it too.
// Threading: call from the main thread before starting any other thread (fork).
#ifndef BRAID_BENCH_FORKED_CHILD_H_
#define BRAID_BENCH_FORKED_CHILD_H_

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

namespace braid::bench {

struct ForkedChild {
  pid_t pid = -1;
  int to_child = -1;    // the parent writes here
  int from_child = -1;  // the parent reads here
};

// Forks; the child runs `run` with its ends of the pipes and exits with what it returns.
inline std::optional<ForkedChild> ForkChild(int (*run)(int read_fd, int write_fd)) {
  int p2c[2], c2p[2];
  if (pipe(p2c) != 0 || pipe(c2p) != 0) return std::nullopt;
  const pid_t pid = fork();
  if (pid < 0) return std::nullopt;
  if (pid == 0) {
    close(p2c[1]);
    close(c2p[0]);
    _exit(run(p2c[0], c2p[1]));
  }
  close(p2c[0]);
  close(c2p[1]);
  return ForkedChild{pid, p2c[1], c2p[0]};
}

// Waits for the child; false, saying so on stderr as `name`, unless it exited with 0.
inline bool JoinChild(const ForkedChild& child, const char* name) {
  int status = 0;
  waitpid(child.pid, &status, 0);
  close(child.to_child);
  close(child.from_child);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  std::fprintf(stderr, "%s: child exited with %d\n", name, WEXITSTATUS(status));
  return false;
}

}  // namespace braid::bench

#endif  // BRAID_BENCH_FORKED_CHILD_H_
