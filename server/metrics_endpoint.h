// MetricsEndpoint: the Prometheus exporter's HTTP listener (prometheus-cpp's Exposer, which runs
// civetweb), with a stop that takes milliseconds.
//
// civetweb's listening thread looks at its stop flag only when its poll() returns: every two
// seconds, or when a connection arrives. Stopping therefore knocks on the listening port (connects
// and closes at once) until the exporter has stopped. A knock that lands just before the flag is
// set is accepted, reads end-of-file and ends: it costs a worker nothing.
//
// Threading: made, given collectables and destroyed from one thread; civetweb serves scrapes on
// threads of its own.
#ifndef BRAID_SERVER_METRICS_ENDPOINT_H_
#define BRAID_SERVER_METRICS_ENDPOINT_H_

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/common/result.h"

namespace braid::server {

class MetricsEndpoint {
 public:
  // civetweb serves one connection per worker, and a worker waits for a request until the request
  // timeout: an idle connection (a port scan, a health checker that connects and says nothing)
  // held a worker 30 s, and civetweb's default two workers let two of them keep every scrape out.
  // Scrapes take milliseconds, so a few seconds is plenty; Prometheus' default scrape timeout is
  // 10 s.
  static constexpr int kWorkers = 8;
  static constexpr int kRequestTimeoutMs = 3000;

  // Listens on `address` ("host:port" or a bare port, port 0 for any); InvalidArgument if
  // CheckAddress refuses it, IoError naming it if it cannot listen there.
  static common::Result<std::unique_ptr<MetricsEndpoint>> Listen(const std::string& address);

  // Whether the exporter can be given `address` at all, before anything listens (so a config
  // check finds what start-up would): one "host:port" or a bare port, host an IPv4 address or a
  // name, port 0 to 65535. IPv6 ("[::]:9464") only when the civetweb library has IPv6 support
  // (Debian 12's has not). Says what is wrong and what to give instead.
  static common::Status CheckAddress(const std::string& address);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Serves `what` on /metrics from now on (the endpoint keeps only a weak reference).
  void Serve(const std::weak_ptr<prometheus::Collectable>& what);

  // Use Listen().
  MetricsEndpoint(std::string host, std::unique_ptr<prometheus::Exposer> exposer)
      : host_(std::move(host)), exposer_(std::move(exposer)) {}

 private:
  // Connects to `port` on the listening host and closes at once.
  void Knock(int port) const;

  std::string host_;  // where a knock connects: the wildcard addresses become loopback
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace braid::server

#endif  // BRAID_SERVER_METRICS_ENDPOINT_H_
