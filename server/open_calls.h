// OpenCalls: how many unary calls the service is in (each handler holds a Token while it runs).
//
// Shutdown waits on this count and on the streams still registered with the StreamRelay, not on
// gRPC's own shutdown: gRPC's waits for every client connection to close, and a client that is
// idly connected (no call open, nobody reading its socket) never closes it, so the wait always
// ran to its deadline. (A server interceptor could count every call, but it runs on every
// message of every stream: the one-operation-per-message Transfer rate of bench/agent_bench.cc
// was 0.114-0.124 Mops/s with one against 0.127-0.133 without, two runs each.)
//
// Threading: Enter and count from any thread; a Token may outlive the OpenCalls that made it.
#ifndef BRAID_SERVER_OPEN_CALLS_H_
#define BRAID_SERVER_OPEN_CALLS_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace braid::server {

class OpenCalls {
 public:
  // Counts one call for as long as it lives.
  class Token {
   public:
    explicit Token(std::shared_ptr<std::atomic<int64_t>> count) : count_(std::move(count)) {
      count_->fetch_add(1, std::memory_order_acq_rel);
    }
    ~Token() {
      if (count_) count_->fetch_sub(1, std::memory_order_acq_rel);
    }
    Token(Token&&) = default;
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;
    Token& operator=(Token&&) = delete;

   private:
    std::shared_ptr<std::atomic<int64_t>> count_;
  };

  Token Enter() const { return Token(count_); }
  int64_t count() const { return count_->load(std::memory_order_acquire); }

 private:
  std::shared_ptr<std::atomic<int64_t>> count_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace braid::server

#endif  // BRAID_SERVER_OPEN_CALLS_H_
