#include "server/agent_config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <limits>

#include "dataplane/common/quote.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/vqp/business_card.h"
#include "server/listen_address.h"
#include "server/metrics_endpoint.h"

namespace braid::server {

using common::Status;

namespace {

template <typename T>
Status Read(const YAML::Node& node, const char* key, T& out) {
  const YAML::Node v = node[key];
  if (!v) return Status::Ok();
  try {
    out = v.as<T>();
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(std::string("config key '") + key + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace

Status BadRole(const std::string& key, const std::string& value) {
  return Status::InvalidArgument("config key '" + key + "' must be peer, client, operator or " +
                                 "admin, not " + common::Quote(value));
}

std::optional<ClientAuth> ParseClientAuth(const std::string& value) {
  if (value == "require") return ClientAuth::kRequire;
  if (value == "optional") return ClientAuth::kOptional;
  if (value == "none") return ClientAuth::kNone;
  return std::nullopt;
}

Status LoadConfigFile(const std::string& path, AgentConfig& c) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("config file " + path + ": " + e.what());
  }
  if (!root.IsMap()) return Status::InvalidArgument("config file " + path + ": not a mapping");
  BRAID_RETURN_IF_ERROR(Read(root, "agent_id", c.agent_id));
  BRAID_RETURN_IF_ERROR(Read(root, "provider", c.provider));
  BRAID_RETURN_IF_ERROR(Read(root, "region_dir", c.region_dir));
  BRAID_RETURN_IF_ERROR(Read(root, "max_region_bytes", c.max_region_bytes));
  BRAID_RETURN_IF_ERROR(Read(root, "max_regions", c.max_regions));
  BRAID_RETURN_IF_ERROR(Read(root, "max_regions_per_caller", c.max_regions_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "max_vqps_per_caller", c.max_vqps_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "max_leases_per_caller", c.max_leases_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "max_transfers", c.max_transfers));
  BRAID_RETURN_IF_ERROR(Read(root, "max_transfers_per_caller", c.max_transfers_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "max_session_bytes_per_caller", c.max_session_bytes_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "log_level", c.log_level));
  BRAID_RETURN_IF_ERROR(Read(root, "transfer_window", c.transfer_window));
  BRAID_RETURN_IF_ERROR(Read(root, "transfer_window_per_caller", c.transfer_window_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "watch_backlog_per_caller", c.watch_backlog_per_caller));
  BRAID_RETURN_IF_ERROR(Read(root, "default_timeout_ms", c.default_timeout_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "watchdog_ms", c.watchdog_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "recovery_budget_ms", c.recovery_budget_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "qp_cooldown_ms", c.qp_cooldown_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "max_cq_entries", c.max_cq_entries));
  BRAID_RETURN_IF_ERROR(Read(root, "fd_reserve", c.fd_reserve));
  BRAID_RETURN_IF_ERROR(Read(root, "unix_connections_per_uid", c.unix_connections_per_uid));
  BRAID_RETURN_IF_ERROR(Read(root, "engine_yield", c.engine_yield));
  BRAID_RETURN_IF_ERROR(Read(root, "engine_spin_us", c.engine_spin_us));
  BRAID_RETURN_IF_ERROR(Read(root, "client_keepalive_ms", c.client_keepalive_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "client_keepalive_timeout_ms", c.client_keepalive_timeout_ms));
  BRAID_RETURN_IF_ERROR(Read(root, "lease_grace_ms", c.lease_grace_ms));
  if (const YAML::Node f = root["fault_injection"]) {
    BRAID_RETURN_IF_ERROR(Read(f, "enabled", c.fault_injection));
  }
  if (const YAML::Node soft = root["soft"]) {
    BRAID_RETURN_IF_ERROR(Read(soft, "port", c.soft_port));
    if (const YAML::Node nics = soft["nics"]) {
      if (!nics.IsSequence()) return Status::InvalidArgument("config key 'soft.nics': not a list");
      c.soft_nics.clear();
      for (const YAML::Node& n : nics) {
        soft::SoftNicConfig nic;
        BRAID_RETURN_IF_ERROR(Read(n, "name", nic.name));
        BRAID_RETURN_IF_ERROR(Read(n, "ip", nic.ipv4));
        c.soft_nics.push_back(nic);
      }
    }
  }
  if (const YAML::Node ib = root["ibverbs"]) {
    BRAID_RETURN_IF_ERROR(Read(ib, "gid_index", c.ibverbs_gid_index));
  }
  if (const YAML::Node listen = root["listen"]) {
    BRAID_RETURN_IF_ERROR(Read(listen, "unix", c.unix_socket));
    BRAID_RETURN_IF_ERROR(Read(listen, "tcp", c.tcp_listen));
  }
  if (const YAML::Node tls = root["tls"]) {
    BRAID_RETURN_IF_ERROR(Read(tls, "cert", c.auth.tls.cert));
    BRAID_RETURN_IF_ERROR(Read(tls, "key", c.auth.tls.key));
    BRAID_RETURN_IF_ERROR(Read(tls, "ca", c.auth.tls.ca));
    BRAID_RETURN_IF_ERROR(Read(tls, "reload_seconds", c.auth.tls.reload_seconds));
    std::string client_auth;
    BRAID_RETURN_IF_ERROR(Read(tls, "client_auth", client_auth));
    if (!client_auth.empty()) {
      auto parsed = ParseClientAuth(client_auth);
      if (!parsed) {
        return Status::InvalidArgument(
            "config key 'tls.client_auth' must be require, optional "
            "or none, not " +
            common::Quote(client_auth));
      }
      c.auth.tls.client_auth = *parsed;
    }
  }
  BRAID_RETURN_IF_ERROR(Read(root, "plaintext", c.auth.plaintext));
  if (const YAML::Node auth = root["auth"]) {
    BRAID_RETURN_IF_ERROR(Read(auth, "tokens_file", c.auth.tokens_file));
    std::string anonymous;
    BRAID_RETURN_IF_ERROR(Read(auth, "anonymous_role", anonymous));
    if (!anonymous.empty()) {
      c.auth.anonymous_role = ParseRole(anonymous);
      if (!c.auth.anonymous_role) return BadRole("auth.anonymous_role", anonymous);
    }
    if (const YAML::Node ids = auth["identities"]) {
      if (!ids.IsSequence()) {
        return Status::InvalidArgument("config key 'auth.identities': not a list");
      }
      for (const YAML::Node& n : ids) {
        IdentityBinding b;
        std::string role;
        BRAID_RETURN_IF_ERROR(Read(n, "id", b.id));
        BRAID_RETURN_IF_ERROR(Read(n, "role", role));
        auto parsed = ParseRole(role);
        if (!parsed) return BadRole("auth.identities[].role", role);
        b.role = *parsed;
        c.auth.identities.push_back(std::move(b));
      }
    }
  }
  if (const YAML::Node m = root["metrics"]) {
    BRAID_RETURN_IF_ERROR(Read(m, "listen", c.metrics_listen));
    BRAID_RETURN_IF_ERROR(Read(m, "per_qp", c.metrics_per_qp));
  }
  return Status::Ok();
}

void AgentConfig::ApplyDefaults() {
  if (agent_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    agent_id = host;
  }
  if (soft_nics.empty()) soft_nics.push_back({"soft0", "127.0.0.1"});
}

Status AgentConfig::Validate() const {
  if (provider != "auto" && provider != "soft" && provider != "ibverbs") {
    return Status::InvalidArgument("provider must be auto, soft or ibverbs, not '" + provider +
                                   "'");
  }
  // The agent id names its region files and lock: a plain file-name fragment.
  if (agent_id.empty() || agent_id.size() > 128 ||
      !std::all_of(agent_id.begin(), agent_id.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
      })) {
    return Status::InvalidArgument("agent_id " + common::Quote(agent_id) +
                                   " must be 1 to 128 letters, digits, '-', '_' or '.'");
  }
  for (const auto& nic : soft_nics) {
    if (nic.name.empty()) return Status::InvalidArgument("a soft NIC has no name");
    if (nic.name.size() > vqp::kMaxDeviceNameBytes) {  // it travels in every business card
      return Status::InvalidArgument("soft NIC name " + common::Quote(nic.name) + " has " +
                                     std::to_string(nic.name.size()) + " bytes; at most " +
                                     std::to_string(vqp::kMaxDeviceNameBytes));
    }
    if (!verbs::Gid::ParseIpv4(nic.ipv4)) {
      return Status::InvalidArgument("soft NIC " + nic.name + ": '" + nic.ipv4 +
                                     "' is not an IPv4 address");
    }
  }
  for (size_t i = 0; i < soft_nics.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (soft_nics[j].name == soft_nics[i].name ||
          verbs::Gid::ParseIpv4(soft_nics[j].ipv4) == verbs::Gid::ParseIpv4(soft_nics[i].ipv4)) {
        return Status::InvalidArgument("soft NICs " + soft_nics[j].name + "=" + soft_nics[j].ipv4 +
                                       " and " + soft_nics[i].name + "=" + soft_nics[i].ipv4 +
                                       " share a name or an address; each needs its own of both");
      }
    }
  }
  // Every soft NIC listens on this port and its peers call it there: 0 would be a port no peer
  // knows.
  if (soft_port == 0) return Status::InvalidArgument("soft.port must be 1 to 65535, not 0");
  if (unix_socket.empty() && tcp_listen.empty()) {
    return Status::InvalidArgument("no listener: set listen.unix or listen.tcp");
  }
  if (!tcp_listen.empty() && !ListenAddress::Parse(tcp_listen)) {
    return Status::InvalidArgument("listen.tcp " + common::Quote(tcp_listen) +
                                   " is not host:port or [IPv6]:port, port 0 to 65535 (e.g. "
                                   "0.0.0.0:7600 for every IPv4 interface)");
  }
  BRAID_RETURN_IF_ERROR(auth.Validate(!tcp_listen.empty()));
  if (!metrics_listen.empty()) BRAID_RETURN_IF_ERROR(MetricsEndpoint::CheckAddress(metrics_listen));
  if (transfer_window == 0 || transfer_window > 65536) {
    return Status::InvalidArgument("transfer_window must be in [1, 65536]");
  }
  if (transfer_window_per_caller < transfer_window) {
    return Status::InvalidArgument(
        "transfer_window_per_caller must be at least transfer_window (one full stream)");
  }
  if (watch_backlog_per_caller < kWatcherCapacity) {
    return Status::InvalidArgument("watch_backlog_per_caller must be at least " +
                                   std::to_string(kWatcherCapacity) +
                                   " (one watcher's full backlog)");
  }
  if (max_cq_entries < 16384 || max_cq_entries > (1u << 24)) {
    return Status::InvalidArgument("max_cq_entries must be in [16384, 16777216]");
  }
  if (fd_reserve < 32) return Status::InvalidArgument("fd_reserve must be at least 32");
  if (max_regions == 0 || max_regions_per_caller == 0 || max_vqps_per_caller == 0 ||
      max_leases_per_caller == 0) {
    return Status::InvalidArgument(
        "max_regions, max_regions_per_caller, max_vqps_per_caller and max_leases_per_caller must "
        "be at least 1");
  }
  if (max_transfers < 1024 || max_transfers > (1u << 20)) {
    return Status::InvalidArgument("max_transfers must be in [1024, 1048576]");
  }
  if (max_session_bytes_per_caller < (1u << 20)) {
    return Status::InvalidArgument("max_session_bytes_per_caller must be at least 1048576");
  }
  if (max_transfers_per_caller == 0) {
    return Status::InvalidArgument("max_transfers_per_caller must be at least 1");
  }
  if (unix_connections_per_uid == 0) {
    return Status::InvalidArgument("unix_connections_per_uid must be at least 1");
  }
  if (watchdog_ms < 100) return Status::InvalidArgument("watchdog_ms must be >= 100");
  if (client_keepalive_ms < 100 || client_keepalive_timeout_ms < 100) {
    return Status::InvalidArgument(
        "client_keepalive_ms and client_keepalive_timeout_ms must be at least 100");
  }
  if (qp_cooldown_ms < 10 || qp_cooldown_ms > 5000) {
    return Status::InvalidArgument("qp_cooldown_ms must be in [10, 5000]");
  }
  if (log_level != "trace" && log_level != "debug" && log_level != "info" && log_level != "warn" &&
      log_level != "error") {
    return Status::InvalidArgument("log_level must be trace, debug, info, warn or error");
  }
  return Status::Ok();
}

std::string AgentConfig::ControlEndpoint() const {
  if (!tcp_listen.empty()) return tcp_listen;
  return "unix:" + unix_socket;
}

}  // namespace braid::server
