#include "server/metrics_endpoint.h"

#include <civetweb.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <thread>

#include "dataplane/common/quote.h"
#include "dataplane/common/unique_fd.h"
#include "server/listen_address.h"

namespace braid::server {
namespace {

// The host a knock connects to for a listener on `address` (one CheckAddress took): the wildcard
// addresses and a bare port become loopback.
std::string KnockHost(const std::string& address) {
  const std::optional<ListenAddress> parsed = ListenAddress::Parse(address);
  if (!parsed) return "127.0.0.1";
  if (parsed->IsWildcard()) return parsed->host == "::" ? "::1" : "127.0.0.1";
  return parsed->host;
}

// civetweb's feature bit for IPv6 listeners (mg_check_feature).
constexpr unsigned kCivetwebIpv6 = 8;

}  // namespace

common::Status MetricsEndpoint::CheckAddress(const std::string& address) {
  const std::string what = "metrics.listen " + common::Quote(address);
  if (address.find(',') != std::string::npos) {
    return common::Status::InvalidArgument(what + " lists several addresses; give one host:port");
  }
  if (ListenAddress::ParsePort(address)) return common::Status::Ok();  // every IPv4 interface
  const std::optional<ListenAddress> parsed = ListenAddress::Parse(address);
  if (!parsed) {
    return common::Status::InvalidArgument(
        what + " is not host:port (e.g. 0.0.0.0:9464 for every IPv4 interface, or 9464)");
  }
  if (parsed->ipv6 && mg_check_feature(kCivetwebIpv6) == 0) {
    return common::Status::InvalidArgument(
        what +
        " is an IPv6 address, and the civetweb library the exporter runs on was built "
        "without IPv6: give an IPv4 address (0.0.0.0:PORT listens on every IPv4 "
        "interface)");
  }
  return common::Status::Ok();
}

common::Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Listen(
    const std::string& address) {
  BRAID_RETURN_IF_ERROR(CheckAddress(address));
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", std::to_string(kWorkers), "request_timeout_ms",
        std::to_string(kRequestTimeoutMs)});
  } catch (const std::exception&) {  // civetweb says only that it has no context
    return common::Status::IoError("metrics exporter could not listen on " +
                                   common::Quote(address) +
                                   ": is the port in use, or the host not an address of this "
                                   "machine? Give a free port (or 0) on a local address");
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
