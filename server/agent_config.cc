#include "server/agent_config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/common/quote.h"
#include "dataplane/common/regular_file.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/vqp/business_card.h"
#include "server/listen_address.h"
#include "server/metrics_endpoint.h"

namespace braid::server {

using common::Status;

namespace {

// The edit distance between `a` and `b` (for "did you mean").
size_t Distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// One mapping of the config file ("" for the top, "soft", "auth.identities[]"): reads its keys,
// remembers which it knows, and refuses a key it does not (a misspelt key was ignored, and the
// agent ran on the default) and a value of the wrong shape (a scalar where a mapping belongs
// aborted the agent in yaml-cpp).
class Section {
 public:
  Section(YAML::Node node, std::string path) : node_(std::move(node)), path_(std::move(path)) {}

  Status Check() const {
    if (!node_ || node_.IsNull()) return Status::Ok();
    if (!node_.IsMap()) return Status::InvalidArgument("config key '" + path_ + "': not a mapping");
    return Status::Ok();
  }
  // The key's value into `out` if the key is there.
  template <typename T>
  Status Read(const char* key, T& out) {
    const YAML::Node v = Get(key);
    if (!v) return Status::Ok();
    try {
      out = v.as<T>();
    } catch (const YAML::Exception& e) {
      return Status::InvalidArgument("config key '" + Name(key) + "': " + e.what());
    }
    return Status::Ok();
  }
  // The mapping under `key` (empty if the key is not there).
  common::Result<Section> Map(const char* key) {
    Section out(Get(key), Name(key));
    BRAID_RETURN_IF_ERROR(out.Check());
    return out;
  }
  // The mappings listed under `key` (none if the key is not there).
  common::Result<std::vector<Section>> List(const char* key) {
    const YAML::Node v = Get(key);
    std::vector<Section> out;
    if (!v) return out;
    if (!v.IsSequence()) {
      return Status::InvalidArgument("config key '" + Name(key) + "': not a list");
    }
    for (const YAML::Node& item : v) {
      out.emplace_back(item, Name(key) + "[]");
      if (!item.IsMap()) {
        return Status::InvalidArgument("config key '" + Name(key) + "': an item is not a mapping");
      }
    }
    return out;
  }
  // Refuses the first key of this mapping that nothing read, naming the closest known one.
  Status NoUnknownKeys() const {
    if (!node_ || !node_.IsMap()) return Status::Ok();
    for (const auto& kv : node_) {
      const std::string key = kv.first.Scalar();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string hint;
      size_t best = 4;  // suggest only a near miss
      for (const std::string& k : known_) {
        if (const size_t d = Distance(key, k); d < best) {
          best = d;
          hint = " (did you mean '" + Name(k.c_str()) + "'?)";
        }
      }
      return Status::InvalidArgument("config key " + common::Quote(Name(key.c_str())) +
                                     " is not one braidd knows" + hint +
                                     "; doc/braidd.md lists them");
    }
    return Status::Ok();
  }

 private:
  // The value under `key` (undefined if absent), and `key` is known from now on.
  YAML::Node Get(const char* key) {
    known_.emplace_back(key);
    if (!node_ || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = node_;  // the const lookup adds no key
    return map[key];
  }
  std::string Name(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  YAML::Node node_;
  std::string path_;
  std::vector<std::string> known_;
};

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

namespace {

Status ReadConfig(const YAML::Node& file, AgentConfig& c) {
  if (!file.IsMap()) return Status::InvalidArgument("not a mapping");
  Section root(file, "");
  BRAID_RETURN_IF_ERROR(root.Read("agent_id", c.agent_id));
  BRAID_RETURN_IF_ERROR(root.Read("provider", c.provider));
  BRAID_RETURN_IF_ERROR(root.Read("region_dir", c.region_dir));
  BRAID_RETURN_IF_ERROR(root.Read("log_level", c.log_level));
  BRAID_RETURN_IF_ERROR(root.Read("max_region_bytes", c.max_region_bytes));
  BRAID_RETURN_IF_ERROR(root.Read("max_regions", c.max_regions));
  BRAID_RETURN_IF_ERROR(root.Read("max_regions_per_caller", c.max_regions_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("max_region_bytes_per_caller", c.max_region_bytes_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("max_vqps_per_caller", c.max_vqps_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("max_leases_per_caller", c.max_leases_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("max_transfers", c.max_transfers));
  BRAID_RETURN_IF_ERROR(root.Read("max_transfers_per_caller", c.max_transfers_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("max_session_bytes_per_caller", c.max_session_bytes_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("transfer_window", c.transfer_window));
  BRAID_RETURN_IF_ERROR(root.Read("transfer_window_per_caller", c.transfer_window_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("watch_backlog_per_caller", c.watch_backlog_per_caller));
  BRAID_RETURN_IF_ERROR(root.Read("default_timeout_ms", c.default_timeout_ms));
  BRAID_RETURN_IF_ERROR(root.Read("watchdog_ms", c.watchdog_ms));
  BRAID_RETURN_IF_ERROR(root.Read("recovery_budget_ms", c.recovery_budget_ms));
  BRAID_RETURN_IF_ERROR(root.Read("qp_cooldown_ms", c.qp_cooldown_ms));
  BRAID_RETURN_IF_ERROR(root.Read("max_cq_entries", c.max_cq_entries));
  BRAID_RETURN_IF_ERROR(root.Read("fd_reserve", c.fd_reserve));
  BRAID_RETURN_IF_ERROR(root.Read("memory_reserve", c.memory_reserve));
  BRAID_RETURN_IF_ERROR(root.Read("unix_connections_per_uid", c.unix_connections_per_uid));
  BRAID_RETURN_IF_ERROR(root.Read("engine_yield", c.engine_yield));
  BRAID_RETURN_IF_ERROR(root.Read("engine_spin_us", c.engine_spin_us));
  BRAID_RETURN_IF_ERROR(root.Read("client_keepalive_ms", c.client_keepalive_ms));
  BRAID_RETURN_IF_ERROR(root.Read("client_keepalive_timeout_ms", c.client_keepalive_timeout_ms));
  BRAID_RETURN_IF_ERROR(root.Read("lease_grace_ms", c.lease_grace_ms));
  BRAID_RETURN_IF_ERROR(root.Read("shutdown_drain_ms", c.shutdown_drain_ms));
  BRAID_RETURN_IF_ERROR(root.Read("plaintext", c.auth.plaintext));

  BRAID_ASSIGN_OR_RETURN(Section fault, root.Map("fault_injection"));
  BRAID_RETURN_IF_ERROR(fault.Read("enabled", c.fault_injection));
  BRAID_RETURN_IF_ERROR(fault.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section soft, root.Map("soft"));
  BRAID_RETURN_IF_ERROR(soft.Read("port", c.soft_port));
  BRAID_ASSIGN_OR_RETURN(std::vector<Section> nics, soft.List("nics"));
  if (!nics.empty()) c.soft_nics.clear();
  for (Section& n : nics) {
    soft::SoftNicConfig nic;
    BRAID_RETURN_IF_ERROR(n.Read("name", nic.name));
    BRAID_RETURN_IF_ERROR(n.Read("ip", nic.ipv4));
    BRAID_RETURN_IF_ERROR(n.Read("interface", nic.interface));
    BRAID_RETURN_IF_ERROR(n.NoUnknownKeys());
    c.soft_nics.push_back(nic);
  }
  BRAID_RETURN_IF_ERROR(soft.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section ib, root.Map("ibverbs"));
  BRAID_RETURN_IF_ERROR(ib.Read("gid_index", c.ibverbs_gid_index));
  BRAID_RETURN_IF_ERROR(ib.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section listen, root.Map("listen"));
  BRAID_RETURN_IF_ERROR(listen.Read("unix", c.unix_socket));
  BRAID_RETURN_IF_ERROR(listen.Read("tcp", c.tcp_listen));
  BRAID_RETURN_IF_ERROR(listen.Read("advertise", c.advertise));
  BRAID_RETURN_IF_ERROR(listen.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section tls, root.Map("tls"));
  BRAID_RETURN_IF_ERROR(tls.Read("cert", c.auth.tls.cert));
  BRAID_RETURN_IF_ERROR(tls.Read("key", c.auth.tls.key));
  BRAID_RETURN_IF_ERROR(tls.Read("ca", c.auth.tls.ca));
  BRAID_RETURN_IF_ERROR(tls.Read("reload_seconds", c.auth.tls.reload_seconds));
  std::string client_auth;
  BRAID_RETURN_IF_ERROR(tls.Read("client_auth", client_auth));
  if (!client_auth.empty()) {
    auto parsed = ParseClientAuth(client_auth);
    if (!parsed) {
      return Status::InvalidArgument(
          "config key 'tls.client_auth' must be require, optional or none, not " +
          common::Quote(client_auth));
    }
    c.auth.tls.client_auth = *parsed;
  }
  BRAID_RETURN_IF_ERROR(tls.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section auth, root.Map("auth"));
  BRAID_RETURN_IF_ERROR(auth.Read("tokens_file", c.auth.tokens_file));
  std::string anonymous;
  BRAID_RETURN_IF_ERROR(auth.Read("anonymous_role", anonymous));
  if (!anonymous.empty()) {
    c.auth.anonymous_role = ParseRole(anonymous);
    if (!c.auth.anonymous_role) return BadRole("auth.anonymous_role", anonymous);
  }
  BRAID_ASSIGN_OR_RETURN(std::vector<Section> ids, auth.List("identities"));
  for (Section& n : ids) {
    IdentityBinding b;
    std::string role;
    BRAID_RETURN_IF_ERROR(n.Read("id", b.id));
    BRAID_RETURN_IF_ERROR(n.Read("role", role));
    BRAID_RETURN_IF_ERROR(n.NoUnknownKeys());
    auto parsed = ParseRole(role);
    if (!parsed) return BadRole("auth.identities[].role", role);
    b.role = *parsed;
    c.auth.identities.push_back(std::move(b));
  }
  BRAID_RETURN_IF_ERROR(auth.NoUnknownKeys());

  BRAID_ASSIGN_OR_RETURN(Section metrics, root.Map("metrics"));
  BRAID_RETURN_IF_ERROR(metrics.Read("listen", c.metrics_listen));
  BRAID_RETURN_IF_ERROR(metrics.Read("per_qp", c.metrics_per_qp));
  BRAID_RETURN_IF_ERROR(metrics.NoUnknownKeys());
  return root.NoUnknownKeys();
}

}  // namespace

Status LoadConfigFile(const std::string& path, AgentConfig& c) {
  // A directory is refused before yaml-cpp reads it (it throws from inside its stream, and leaks
  // that stream's buffer).
  BRAID_RETURN_IF_ERROR(common::CheckRegularFile(path, "config file " + common::Quote(path)));
  // yaml-cpp reports bad YAML and a wrong shape by throwing; the agent says why and exits rather
  // than aborting.
  try {
    return ReadConfig(YAML::LoadFile(path), c);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("config file " + common::Quote(path) + ": " + e.what());
  }
}

void AgentConfig::ApplyDefaults() {
  if (agent_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    agent_id = host;
  }
  if (soft_nics.empty()) soft_nics.push_back({"soft0", DefaultSoftNicAddress(), ""});
}

std::string AgentConfig::DefaultSoftNicAddress() const {
  const std::optional<ListenAddress> a = ListenAddress::Parse(ControlEndpoint());
  if (a && !a->ipv6 && !a->IsWildcard() && verbs::Gid::ParseIpv4(a->host)) return a->host;
  return "127.0.0.1";
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
    if (nic.name.size() > vqp::kMaxDeviceNameBytes) {  // it travels in every business card
      return Status::InvalidArgument("soft NIC name " + common::Quote(nic.name) + " has " +
                                     std::to_string(nic.name.size()) + " bytes; at most " +
                                     std::to_string(vqp::kMaxDeviceNameBytes));
    }
  }
  BRAID_RETURN_IF_ERROR(soft::CheckSoftNics(soft_nics));
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
  if (!advertise.empty()) {
    const std::optional<ListenAddress> a = ListenAddress::Parse(advertise);
    if (!a || a->port == 0 || a->IsWildcard()) {
      return Status::InvalidArgument(
          "listen.advertise " + common::Quote(advertise) +
          " is not an address peers can dial: give the host:port they reach this agent's "
          "listen.tcp on (e.g. 10.0.0.5:7600), a host that is not a wildcard and a port 1 to "
          "65535");
    }
  } else if (!tcp_listen.empty() && ListenAddress::Parse(tcp_listen)->port == 0) {
    return Status::InvalidArgument("listen.tcp " + common::Quote(tcp_listen) +
                                   " takes any free port, which peers cannot know to call back "
                                   "on: give its port, or set listen.advertise");
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
  if (max_region_bytes_per_caller < 4096) {
    return Status::InvalidArgument("max_region_bytes_per_caller must be at least 4096");
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
  if (shutdown_drain_ms > 600000) {
    return Status::InvalidArgument("shutdown_drain_ms must be at most 600000 (10 minutes)");
  }
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
  if (!advertise.empty()) return advertise;
  if (tcp_listen.empty()) return "unix:" + unix_socket;
  if (!ControlEndpointFromHostName()) return tcp_listen;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + ":" + std::to_string(ListenAddress::Parse(tcp_listen)->port);
}

bool AgentConfig::ControlEndpointFromHostName() const {
  if (!advertise.empty() || tcp_listen.empty()) return false;
  const std::optional<ListenAddress> a = ListenAddress::Parse(tcp_listen);
  return a && a->IsWildcard();
}

}  // namespace braid::server
