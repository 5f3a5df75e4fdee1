#include "server/metrics_endpoint.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>

#include "dataplane/common/unique_fd.h"

namespace braid::server {
namespace {

// The host a knock connects to for a listener on `address`.
std::string KnockHost(const std::string& address) {
  std::string host;
  if (!address.empty() && address.front() == '[') {
    host = address.substr(1, address.find(']') - 1);
  } else if (const size_t colon = address.rfind(':'); colon != std::string::npos) {
    host = address.substr(0, colon);
  }
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

}  // namespace

common::Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Listen(
    const std::string& address) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return common::Status::IoError("metrics exporter could not listen on " + address + ": " +
                                   e.what());
  }
  return std::make_unique<MetricsEndpoint>(KnockHost(address), std::move(exposer));
}

void MetricsEndpoint::Serve(const std::weak_ptr<prometheus::Collectable>& what) {
  exposer_->RegisterCollectable(what);
}

MetricsEndpoint::~MetricsEndpoint() {
  const std::vector<int> ports = exposer_->GetListeningPorts();
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    exposer_.reset();
    stopped.store(true, std::memory_order_release);
  });
  while (!stopped.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (int port : ports) Knock(port);
  }
  stopper.join();
}

void MetricsEndpoint::Knock(int port) const {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host_.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    common::UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    if (connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) break;
    if (errno != EINPROGRESS) continue;
    pollfd p{fd.get(), POLLOUT, 0};
    if (poll(&p, 1, 20) == 1) break;  // connected (or refused: the listener is gone)
  }
  freeaddrinfo(found);
}

}  // namespace braid::server
