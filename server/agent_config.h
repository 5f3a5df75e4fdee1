// AgentConfig: everything braidd is told, from a YAML file and then flags (flags win).
//
// Example (doc/braidd.md lists every key):
//   agent_id: node-a
//   provider: soft            # auto | soft | ibverbs
//   soft: { port: 18515, nics: [ { name: soft0, ip: 127.0.1.1 }, { name: soft1, interface: eth1 } ]
//   } listen: { unix: /run/braid/braidd.sock, tcp: "0.0.0.0:7600" } metrics: { listen:
//   "0.0.0.0:9464", per_qp: false } region_dir: /dev/shm tls: { cert: ..., key: ..., ca: ... }    #
//   or plaintext: true (server/auth_config.h)
// Loading never aborts: a bad file or value is an InvalidArgument naming the key.
#ifndef BRAID_SERVER_AGENT_CONFIG_H_
#define BRAID_SERVER_AGENT_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/soft/soft_nic_config.h"
#include "server/auth_config.h"

namespace braid::server {

// Items a watch stream holds unread for its client before it ends the stream (RESOURCE_EXHAUSTED).
inline constexpr uint32_t kWatcherCapacity = 16384;

struct AgentConfig {
  std::string agent_id;                        // default: the host name
  std::string provider = "auto";               // auto | soft | ibverbs
  uint16_t soft_port = 18515;                  // the soft NICs' TCP port
  std::vector<soft::SoftNicConfig> soft_nics;  // default: soft0 on DefaultSoftNicAddress()
  int ibverbs_gid_index = -1;
  std::string unix_socket;                    // "" = no Unix listener
  std::string tcp_listen = "127.0.0.1:7600";  // "" = no TCP listener
  // listen.advertise: the host:port peers dial for this agent's control plane (QP recovery),
  // written into business cards. "": listen.tcp, with this host's name in place of a wildcard
  // host (0.0.0.0, [::]), which peers cannot dial.
  std::string advertise;
  std::string metrics_listen = "127.0.0.1:9464";  // "" = no exporter
  bool metrics_per_qp = false;
  std::string region_dir = "/dev/shm";
  uint64_t max_region_bytes = 64ull << 30;
  // Regions registered at once, in all and by one caller (identity): each is a mapping of the
  // agent's, of which a process has at most vm.max_map_count (EngineOptions).
  uint32_t max_regions = 16384;
  uint32_t max_regions_per_caller = 4096;
  // Bytes of region files (in region_dir) one caller may hold at once: their pages are taken at
  // registration, so without it one caller could fill the directory and leave others none.
  uint64_t max_region_bytes_per_caller = 64ull << 30;
  // VQPs one caller may have at once.
  uint32_t max_vqps_per_caller = 1024;
  // Leases (Hold calls) one caller may have open at once.
  uint32_t max_leases_per_caller = 1024;
  // Transfers accepted and not yet finished, in all and on one caller's VQPs.
  uint32_t max_transfers = 65536;
  uint32_t max_transfers_per_caller = 16384;
  // The shared segments (rings) of one caller's open sessions together.
  uint64_t max_session_bytes_per_caller = 256ull << 20;
  std::string log_level = "info";
  uint32_t transfer_window = 1024;
  // The windows of one caller's open Transfer streams together (CallerBudget).
  uint32_t transfer_window_per_caller = 65536;
  // The backlogs of one caller's WatchNotifications streams together (CallerBudget); at least one
  // watcher's (kWatcherCapacity).
  uint32_t watch_backlog_per_caller = 1u << 20;
  uint32_t default_timeout_ms = 30000;
  uint32_t watchdog_ms = 2000;
  // A VQP none of whose data QPs came back for this long of failed recovery attempts fails.
  uint32_t recovery_budget_ms = 60000;
  uint32_t qp_cooldown_ms = 100;
  bool fault_injection = false;
  // Per device, the completion entries VQPs may reserve in all (the CQ grows to it as needed).
  uint32_t max_cq_entries = 1u << 22;
  // File descriptors kept free for the control plane (gRPC connections, region files, health).
  uint32_t fd_reserve = 256;
  // Bytes of the agent's memory limit kept for its own work (EngineOptions::memory_reserve).
  uint64_t memory_reserve = 256ull << 20;
  // Connections one local caller (uid) may hold open on each Unix socket (gRPC, session); more
  // are refused, so one process cannot fill the agent's descriptor table.
  uint32_t unix_connections_per_uid = 256;
  // The engine gives its core away after each busy-poll turn that found nothing (EngineOptions).
  bool engine_yield = true;
  // The agent pings a client connection with a call open this often, and closes one that does not
  // answer within the timeout: a client whose host vanished loses its leases (Hold) within
  // about their sum.
  uint32_t client_keepalive_ms = 30000;
  uint32_t client_keepalive_timeout_ms = 10000;
  // How long a lease outlives its Hold call: within it, a client whose connection dropped takes
  // the lease over again (the SDKs do), keeping what it created. 0: the lease ends with the call.
  uint32_t lease_grace_ms = 0;
  // On SIGTERM, how long transfers in flight may take to finish (new ones are refused, health
  // answers NOT_SERVING) before the agent stops and fails what is left; 0: no drain. At most
  // 10 minutes. A second SIGTERM or SIGINT ends the drain.
  uint32_t shutdown_drain_ms = 5000;
  // With work in flight, how long the engine busy-polls without progress before it sleeps on its
  // fds (EngineOptions::in_flight_spin_us); 0: it spins until the work completes.
  uint32_t engine_spin_us = 100;
  AuthConfig auth;  // TLS, identities and roles (server/auth_config.h)

  // Fills what was left unset and defaults to something of this host: the agent id (the host
  // name) and the soft NIC (soft0 on DefaultSoftNicAddress()).
  void ApplyDefaults();
  // The address of the soft NIC when none is configured: the IPv4 address peers reach this agent
  // on (ControlEndpoint()'s host, when it is one; a DaemonSet's `--advertise $(POD_IP):PORT` makes
  // it each node's own), else 127.0.0.1 (this host only).
  std::string DefaultSoftNicAddress() const;
  common::Status Validate() const;
  // The endpoint peers reach this agent's control plane on (written into business cards):
  // `advertise`, else listen.tcp (a wildcard host replaced by the host name), else the Unix socket.
  std::string ControlEndpoint() const;
  // Whether ControlEndpoint() put the host name in place of listen.tcp's wildcard host.
  bool ControlEndpointFromHostName() const;
};

// "require" | "optional" | "none".
std::optional<ClientAuth> ParseClientAuth(const std::string& value);
// The refusal of an unknown role name under `key`.
common::Status BadRole(const std::string& key, const std::string& value);

// Reads `path` into `config` (keys absent from the file keep their value).
common::Status LoadConfigFile(const std::string& path, AgentConfig& config);

}  // namespace braid::server

#endif  // BRAID_SERVER_AGENT_CONFIG_H_
