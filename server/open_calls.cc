#include "server/open_calls.h"

#include <thread>

namespace braid::server {
namespace {

// Lives as long as its call: counted in when gRPC makes it, out when gRPC destroys it.
class CountedCall final : public grpc::experimental::Interceptor {
 public:
  explicit CountedCall(std::shared_ptr<std::atomic<int64_t>> count) : count_(std::move(count)) {
    count_->fetch_add(1, std::memory_order_acq_rel);
  }
  ~CountedCall() override { count_->fetch_sub(1, std::memory_order_acq_rel); }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  std::shared_ptr<std::atomic<int64_t>> count_;
};

class CountingFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingFactory(std::shared_ptr<std::atomic<int64_t>> count)
      : count_(std::move(count)) {}
  // gRPC takes ownership of what this returns and deletes it when the call ends.
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return std::make_unique<CountedCall>(count_).release();
  }

 private:
  std::shared_ptr<std::atomic<int64_t>> count_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> OpenCalls::Interceptor()
    const {
  return std::make_unique<CountingFactory>(count_);
}

bool OpenCalls::AwaitNone(std::chrono::milliseconds limit) const {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (count() > 0) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace braid::server
