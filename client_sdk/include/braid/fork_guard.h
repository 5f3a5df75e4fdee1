// ForkGuard: which process an SDK object belongs to, so that a child made by fork() cannot use
// (or wait on) what it inherited.
//
// gRPC channels and the SDK's threads belong to the process that opened them. A child made by
// fork() without exec inherits their memory but none of their threads, and shares their sockets
// and gRPC's epoll set with its parent: a call made there hangs the child or takes events the
// parent waits for (the parent's calls then time out), and a destructor there waits forever on a
// thread that does not exist. So each AgentClient records the process it was opened in (its
// sessions and streams ask it): in any other, their calls fail at once with kFailedPrecondition
// (Refusal) and their destructors free nothing that would wait on a thread or on gRPC (Abandon,
// ForgetWaiters: the child's copy is dead memory). A child may not open an AgentClient of its own
// either once its parent had one open (gRPC's process-wide state came along); it starts clean with
// exec (Python: multiprocessing's "spawn" or "forkserver" start method). Threading: any thread.
// Inherited() costs one relaxed atomic load (a pthread_atfork handler counts forks).
#ifndef BRAID_CLIENT_SDK_INCLUDE_BRAID_FORK_GUARD_H_
#define BRAID_CLIENT_SDK_INCLUDE_BRAID_FORK_GUARD_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "dataplane/common/status.h"

namespace braid::client {

class ForkGuard {
 public:
  ForkGuard();  // the object belongs to this process

  // True in a child made by fork() after the object was made.
  bool Inherited() const;
  // What an inherited object's calls return: kFailedPrecondition naming `what` and the fix.
  common::Status Refusal(std::string_view what) const;

  // AgentClient::Open: refuses in a process forked from one that had opened an AgentClient; else
  // notes that this process uses gRPC.
  static common::Status CheckOpen(std::string_view target);

  // Leaks `object` on purpose (an inherited thread handle or gRPC object, whose destructor would
  // wait on what the child does not have).
  template <typename T>
  static void Abandon(T&& object) {
    static_cast<void>(std::make_unique<std::decay_t<T>>(std::forward<T>(object)).release());
  }
  // Lets an inherited condition variable be destroyed: the parent's threads that waited on it
  // stay its waiters in the child, and its destructor would wait for them forever. A fresh one
  // takes its storage (the old one's lifetime ends without its destructor).
  static void ForgetWaiters(std::condition_variable& cv) { std::construct_at(&cv); }

 private:
  uint64_t generation_;
  int pid_;
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_INCLUDE_BRAID_FORK_GUARD_H_
