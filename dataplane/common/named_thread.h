// NamedThread: starts a std::thread that names itself first, so top -H, perf, gdb and the churn
// tests (which count a process's threads by name) can tell Braid's threads apart.
// Threading: call from any thread; `fn` runs on the new one. Names keep their first 15
// characters (the kernel's limit).
#ifndef BRAID_DATAPLANE_COMMON_NAMED_THREAD_H_
#define BRAID_DATAPLANE_COMMON_NAMED_THREAD_H_

#include <pthread.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>

namespace braid::common {

template <typename F>
std::thread NamedThread(std::string name, F&& fn) {
  name.resize(std::min<size_t>(name.size(), 15));
  return std::thread([name = std::move(name), fn = std::forward<F>(fn)]() mutable {
    pthread_setname_np(pthread_self(), name.c_str());
    fn();
  });
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_NAMED_THREAD_H_
