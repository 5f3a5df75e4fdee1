// EventCollector: a WatchEvents subscriber for agent tests (a thread reads until destroyed).
#ifndef BRAID_TESTS_AGENT_EVENT_COLLECTOR_H_
#define BRAID_TESTS_AGENT_EVENT_COLLECTOR_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "braid/v1/agent.grpc.pb.h"

namespace braid::testing {

// Collects WatchEvents on a thread until destroyed.
class EventCollector {
 public:
  explicit EventCollector(v1::Agent::Stub& stub) {
    reader_ = stub.WatchEvents(&context_, {});
    v1::WatchEventsResponse first;
    subscribed_ = reader_->Read(&first) && first.subscribed();
    thread_ = std::thread([this] {
      v1::WatchEventsResponse r;
      while (reader_->Read(&r)) {
        std::lock_guard<std::mutex> lock(mu_);
        got_.push_back(r.event());
      }
    });
  }
  ~EventCollector() {
    context_.TryCancel();
    thread_.join();
  }
  bool subscribed() const { return subscribed_; }
  std::vector<v1::Event> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  // Waits until an event of `kind` (for `vqp`, 0 = any) arrived; true if it did.
  bool WaitFor(const std::string& kind, uint64_t vqp, int timeout_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      for (const auto& e : Snapshot()) {
        if (e.kind() == kind && (vqp == 0 || e.vqp_id() == vqp)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<v1::Event> got_;
  bool subscribed_ = false;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_AGENT_EVENT_COLLECTOR_H_
