// Dispatcher: hands a Python session's completions to Python in batches, from one thread.
//
// TransferSession's threads push completions without the GIL; the dispatcher's thread takes the
// GIL once per batch and calls `deliver(list of (token, code, message, nbytes, wc_status))`
// (a thread that wants the GIL may wait for the interpreter's switch interval, 5 ms, so taking
// it once per completion would cap the rate). PyCallable is a Python callable that any thread
// may drop. Threading: Push from any thread; the destructor without the GIL.
#ifndef BRAID_CLIENT_SDK_PYTHON_DISPATCHER_H_
#define BRAID_CLIENT_SDK_PYTHON_DISPATCHER_H_

#include <pybind11/pybind11.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "braid/fork_guard.h"
#include "braid/transfer_session.h"
#include "dataplane/common/named_thread.h"

namespace braid::client {

namespace py = pybind11;

// A Python callable that may be dropped on any thread: it takes the GIL to let go of it.
class PyCallable {
 public:
  explicit PyCallable(py::function fn) : fn_(std::move(fn)) {}
  ~PyCallable() {
    py::gil_scoped_acquire gil;
    fn_.reset();
  }
  PyCallable(const PyCallable&) = delete;
  PyCallable& operator=(const PyCallable&) = delete;
  // Calls it with the GIL taken; an exception it raises is printed, not propagated into C++.
  template <typename... Args>
  void operator()(Args&&... args) const {
    py::gil_scoped_acquire gil;
    try {
      (*fn_)(std::forward<Args>(args)...);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("braid completion callback");
    }
  }

 private:
  std::optional<py::function> fn_;  // reset under the GIL
};

// Completions on their way to Python: TransferSession's threads push them (no GIL); the
// dispatcher thread calls `deliver(list of (token, code, message, nbytes, wc_status))` with each
// batch it finds, taking the GIL once per batch.
class Dispatcher {
 public:
  explicit Dispatcher(py::function deliver)
      : deliver_(std::move(deliver)),
        thread_(braid::common::NamedThread("braid-py-deliv", [this] { Run(); })) {}
  // Drains what is queued, then stops. Call without the GIL. In a child made by fork() the
  // thread stayed in the parent: nothing to wait for.
  ~Dispatcher() {
    if (fork_.Inherited()) {
      ForkGuard::Abandon(std::move(thread_));
      ForkGuard::ForgetWaiters(cv_);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  std::function<void(TransferResult)> For(uint64_t token) {
    return [this, token](TransferResult r) { Push(token, std::move(r)); };
  }

 private:
  struct Item {
    uint64_t token;
    TransferResult result;
  };
  void Push(uint64_t token, TransferResult r) {
    if (fork_.Inherited()) {  // a refusal in a child made by fork(): no dispatcher thread here
      std::vector<Item> one;
      one.push_back({token, std::move(r)});
      Deliver(one);
      return;
    }
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wake = queue_.empty();
      queue_.push_back({token, std::move(r)});
    }
    if (wake) cv_.notify_one();
  }
  void Run() {
    std::vector<Item> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        batch.swap(queue_);
      }
      Deliver(batch);
      batch.clear();
    }
  }
  // Hands `batch` to Python in one call (takes the GIL).
  void Deliver(const std::vector<Item>& batch) {
    py::gil_scoped_acquire gil;
    py::list items(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const TransferResult& r = batch[i].result;
      items[i] = py::make_tuple(batch[i].token, static_cast<int>(r.status.code()),
                                std::string(r.status.message()), r.bytes, r.wc_status);
    }
    deliver_(items);
  }

  PyCallable deliver_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> queue_;  // guarded by mu_
  bool stop_ = false;        // guarded by mu_
  std::thread thread_;
  ForkGuard fork_;
};

}  // namespace braid::client

#endif  // BRAID_CLIENT_SDK_PYTHON_DISPATCHER_H_
