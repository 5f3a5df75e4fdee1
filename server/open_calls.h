// OpenCalls: how many gRPC calls a server has open, from the moment a call arrives until gRPC
// destroys it (its status sent or the call cancelled), for every service of the server.
//
// Shutdown waits on this count, not on gRPC's own shutdown: gRPC's waits for every client
// connection to close, and a client that is idly connected (no call open, nobody reading its
// socket) never closes it, so the wait always ran to its deadline.
//
// Threading: Interceptor() is given to the server builder once; the count is read from any
// thread. The counter is shared with the interceptors, so it outlives whichever goes last.
#ifndef BRAID_SERVER_OPEN_CALLS_H_
#define BRAID_SERVER_OPEN_CALLS_H_

#include <grpcpp/support/server_interceptor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace braid::server {

class OpenCalls {
 public:
  OpenCalls() : count_(std::make_shared<std::atomic<int64_t>>(0)) {}

  // The factory to hand to grpc::ServerBuilder::experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> Interceptor() const;

  int64_t count() const { return count_->load(std::memory_order_acquire); }

  // Waits until no call is open or `limit` has passed; true if none is open.
  bool AwaitNone(std::chrono::milliseconds limit) const;

 private:
  std::shared_ptr<std::atomic<int64_t>> count_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_OPEN_CALLS_H_
