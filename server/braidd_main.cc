// braidd: the Braid agent. Configuration from a YAML file (--config), then flags.
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

#include "dataplane/common/version.h"
#include "dataplane/engine/fd_budget.h"
#include "dataplane/verbs/memlock.h"
#include "server/agent.h"
#include "server/log_sink.h"

int main(int argc, char** argv) {
  using braid::server::AgentConfig;
  // A long-running agent allocates and frees large buffers (watch queues, VQP rings) as clients
  // come and go. A fixed mmap threshold keeps every allocation of 256 KiB or more in its own
  // mapping, returned to the system when freed, instead of glibc raising the threshold after the
  // first free and keeping such buffers in its heaps (RSS that never comes down).
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  CLI::App app{"braidd: the Braid multipath RDMA data-plane agent"};
  app.set_version_flag("--version", std::string("braidd ") + braid::common::kVersion);
  std::string config_path;
  AgentConfig flags;
  std::vector<std::string> nics;
  app.add_option("-c,--config", config_path, "YAML config file");
  auto* agent_id = app.add_option("--agent-id", flags.agent_id, "agent id (default: host name)");
  auto* provider = app.add_option("--provider", flags.provider, "auto | soft | ibverbs");
  auto* soft_nic = app.add_option(
      "--soft-nic", nics,
      "soft NIC as name=ipv4, or name=interface:IFNAME for that interface's IPv4 address "
      "(repeatable)");
  auto* soft_port = app.add_option("--soft-port", flags.soft_port, "soft NICs' TCP port");
  auto* unix_socket = app.add_option("--grpc-unix", flags.unix_socket, "Unix socket path");
  auto* tcp = app.add_option("--grpc-tcp", flags.tcp_listen, "gRPC TCP listen address");
  auto* advertise = app.add_option("--advertise", flags.advertise,
                                   "host:port peers dial for this agent (default: --grpc-tcp, "
                                   "with the host name for a wildcard host)");
  auto* metrics = app.add_option("--metrics", flags.metrics_listen, "Prometheus exporter address");
  auto* region_dir = app.add_option("--region-dir", flags.region_dir, "shared-memory directory");
  auto* log_level = app.add_option("--log-level", flags.log_level, "trace|debug|info|warn|error");
  // The numeric settings: each flag overrides its config key.
  struct Number {
    const char* flag;
    std::variant<uint32_t AgentConfig::*, uint64_t AgentConfig::*> field;
    const char* help;
  };
  static constexpr Number kNumbers[] = {
      {"--transfer-window", &AgentConfig::transfer_window,
       "operations in flight per Transfer stream"},
      {"--watchdog-ms", &AgentConfig::watchdog_ms, "stall watchdog threshold"},
      {"--recovery-budget-ms", &AgentConfig::recovery_budget_ms,
       "failed recovery time after which a VQP with no healthy data QP fails"},
      {"--qp-cooldown-ms", &AgentConfig::qp_cooldown_ms,
       "first cooldown of a data QP that stalls or keeps dying (doubles with each strike)"},
      {"--max-cq-entries", &AgentConfig::max_cq_entries,
       "per device, completion entries VQPs may reserve in all"},
      {"--fd-reserve", &AgentConfig::fd_reserve,
       "file descriptors kept free for the control plane"},
      {"--memory-reserve", &AgentConfig::memory_reserve,
       "bytes of the agent's memory limit that region files and session rings may not take"},
      {"--max-regions", &AgentConfig::max_regions, "regions registered at once, in all"},
      {"--max-regions-per-caller", &AgentConfig::max_regions_per_caller,
       "regions one caller may have registered at once"},
      {"--max-region-bytes-per-caller", &AgentConfig::max_region_bytes_per_caller,
       "bytes of region files one caller may hold at once"},
      {"--max-leases-per-caller", &AgentConfig::max_leases_per_caller,
       "leases (Hold calls) one caller may have open at once"},
      {"--max-vqps-per-caller", &AgentConfig::max_vqps_per_caller,
       "VQPs one caller may have at once"},
      {"--transfer-window-per-caller", &AgentConfig::transfer_window_per_caller,
       "the windows of one caller's Transfer streams together"},
      {"--watch-backlog-per-caller", &AgentConfig::watch_backlog_per_caller,
       "notifications one caller's watchers may have waiting together"},
      {"--max-transfers", &AgentConfig::max_transfers,
       "transfers accepted and not yet finished, in all"},
      {"--max-transfers-per-caller", &AgentConfig::max_transfers_per_caller,
       "transfers accepted and not yet finished on one caller's VQPs"},
      {"--unix-connections-per-uid", &AgentConfig::unix_connections_per_uid,
       "connections one uid may hold open on each Unix socket"},
      {"--engine-spin-us", &AgentConfig::engine_spin_us,
       "with work in flight, how long the data-plane thread busy-polls without progress before "
       "it sleeps (0: until done)"},
      {"--max-session-bytes-per-caller", &AgentConfig::max_session_bytes_per_caller,
       "bytes of rings one caller's open sessions may hold together"},
      {"--client-keepalive-ms", &AgentConfig::client_keepalive_ms,
       "how often the agent pings a client connection with a call open"},
      {"--client-keepalive-timeout-ms", &AgentConfig::client_keepalive_timeout_ms,
       "how long a ping may go unanswered before the connection (and its leases) ends"},
      {"--lease-grace-ms", &AgentConfig::lease_grace_ms,
       "how long a lease outlives its Hold call, for its client to resume it (0: not at all)"},
      {"--shutdown-drain-ms", &AgentConfig::shutdown_drain_ms,
       "on SIGTERM, how long transfers in flight may take to finish before the agent stops "
       "(0: no drain)"},
  };
  std::vector<CLI::Option*> numbers;
  for (const Number& n : kNumbers) {
    numbers.push_back(std::visit(
        [&](auto field) { return app.add_option(n.flag, flags.*field, n.help); }, n.field));
  }
  auto* engine_yield = app.add_option("--engine-yield", flags.engine_yield,
                                      "the data-plane thread gives its core away between busy-poll "
                                      "turns that find nothing (true|false)");
  std::string client_auth, anonymous_role;
  std::vector<std::string> identities;
  auto* tls_cert = app.add_option("--tls-cert", flags.auth.tls.cert, "PEM certificate chain");
  auto* tls_key = app.add_option("--tls-key", flags.auth.tls.key, "PEM private key");
  auto* tls_ca = app.add_option("--tls-ca", flags.auth.tls.ca, "PEM CA bundle for callers' certs");
  auto* tls_client = app.add_option("--tls-client-auth", client_auth, "require | optional | none");
  auto* tls_reload = app.add_option("--tls-reload-seconds", flags.auth.tls.reload_seconds,
                                    "how often certificate files are checked for changes");
  auto* plaintext = app.add_flag("--plaintext", flags.auth.plaintext,
                                 "serve TCP without TLS (a warning is logged)");
  auto* tokens = app.add_option("--tokens-file", flags.auth.tokens_file,
                                "bearer tokens: lines '<identity> <token>'");
  auto* anonymous = app.add_option("--anonymous-role", anonymous_role,
                                   "role of callers with no identity (default: refused)");
  bool check_config = false;
  app.add_flag("--check-config", check_config, "read and validate the config, then exit");
  app.add_option("--identity", identities,
                 "identity=role (repeatable; roles: peer, client, operator, "
                 "admin)");
  auto* faults = app.add_flag("--enable-fault-injection", flags.fault_injection,
                              "allow InjectFault (tests only)");
  CLI11_PARSE(app, argc, argv);

  AgentConfig config;
  if (!config_path.empty()) {
    auto s = braid::server::LoadConfigFile(config_path, config);
    if (!s.ok()) {
      std::fprintf(stderr, "braidd: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  if (*agent_id) config.agent_id = flags.agent_id;
  if (*provider) config.provider = flags.provider;
  if (*soft_port) config.soft_port = flags.soft_port;
  if (*unix_socket) config.unix_socket = flags.unix_socket;
  if (*tcp) config.tcp_listen = flags.tcp_listen;
  if (*advertise) config.advertise = flags.advertise;
  if (*metrics) config.metrics_listen = flags.metrics_listen;
  if (*region_dir) config.region_dir = flags.region_dir;
  if (*log_level) config.log_level = flags.log_level;
  for (size_t i = 0; i < numbers.size(); ++i) {
    if (*numbers[i])
      std::visit([&](auto field) { config.*field = flags.*field; }, kNumbers[i].field);
  }
  if (*engine_yield) config.engine_yield = flags.engine_yield;
  if (*faults) config.fault_injection = true;
  if (*tls_cert) config.auth.tls.cert = flags.auth.tls.cert;
  if (*tls_key) config.auth.tls.key = flags.auth.tls.key;
  if (*tls_ca) config.auth.tls.ca = flags.auth.tls.ca;
  if (*tls_reload) config.auth.tls.reload_seconds = flags.auth.tls.reload_seconds;
  if (*plaintext) config.auth.plaintext = true;
  if (*tokens) config.auth.tokens_file = flags.auth.tokens_file;
  if (*tls_client) {
    auto parsed = braid::server::ParseClientAuth(client_auth);
    if (!parsed) {
      std::fprintf(stderr, "braidd: --tls-client-auth wants require, optional or none\n");
      return 2;
    }
    config.auth.tls.client_auth = *parsed;
  }
  if (*anonymous) {
    config.auth.anonymous_role = braid::server::ParseRole(anonymous_role);
    if (!config.auth.anonymous_role) {
      std::fprintf(stderr, "braidd: --anonymous-role wants peer, client, operator or admin\n");
      return 2;
    }
  }
  for (const std::string& b : identities) {
    const auto eq = b.rfind('=');
    auto role = eq == std::string::npos ? std::nullopt : braid::server::ParseRole(b.substr(eq + 1));
    if (!role) {
      std::fprintf(stderr, "braidd: --identity wants identity=role, got '%.100s'\n", b.c_str());
      return 2;
    }
    config.auth.identities.push_back({b.substr(0, eq), *role});
  }
  if (*soft_nic) {
    config.soft_nics.clear();
    for (const std::string& n : nics) {
      braid::common::Result<braid::soft::SoftNicConfig> nic = braid::soft::ParseSoftNic(n);
      if (!nic.ok()) {
        std::fprintf(stderr, "braidd: --soft-nic: %s\n",
                     std::string(nic.status().message()).c_str());
        return 2;
      }
      config.soft_nics.push_back(std::move(nic).value());
    }
  }
  // Checked before the log is set up: a log_level it refuses (spdlog reads "loud" as "off") left
  // the refusal unlogged and the agent exiting without a word.
  config.ApplyDefaults();
  if (const auto s = config.Validate(); !s.ok()) {
    std::fprintf(stderr, "braidd: %s\n", s.ToString().c_str());
    return 2;
  }
  if (check_config) {
    // What start-up would find on this host: a soft provider's interfaces and their addresses.
    if (config.provider == "soft") {
      if (const auto nics = braid::soft::ResolveSoftNics(config.soft_nics); !nics.ok()) {
        std::fprintf(stderr, "braidd: %s\n", nics.status().ToString().c_str());
        return 2;
      }
    }
    std::printf("braidd: the config is valid\n");
    return 0;
  }
  braid::server::EscapingSink::Install();  // before the pattern: it reaches the sinks through us
  spdlog::set_pattern("ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l %v");
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Soft NICs hold a descriptor per QP: take every descriptor the hard limit allows (the engine
  // keeps a reserve of them for the control plane).
  auto limits = braid::engine::FdBudget::RaiseSoftLimit();
  if (!limits.ok()) {
    spdlog::warn("msg=\"could not raise the fd limit\" error=\"{}\"", limits.status().ToString());
  } else if (limits->first.soft != limits->second.soft) {
    spdlog::info("fd_limit={} was={} msg=\"raised the fd soft limit to the hard limit\"",
                 limits->second.soft, limits->first.soft);
  }
  // Registering memory with an HCA pins it, counted against RLIMIT_MEMLOCK unless the agent has
  // CAP_IPC_LOCK: take what the hard limit allows, and say what that is.
  if (auto before = braid::verbs::RaiseMemlockSoftLimit(); !before.ok()) {
    spdlog::warn("msg=\"could not raise the locked-memory limit\" error=\"{}\"",
                 before.status().ToString());
  } else if (config.provider != "soft") {
    const braid::verbs::MemlockLimit now = braid::verbs::ReadMemlock();
    if (now.bounded()) {
      spdlog::warn(
          "memlock_limit={} was={} ipc_lock=false msg=\"the agent may pin at most {} bytes for "
          "registered memory (RLIMIT_MEMLOCK) and lacks CAP_IPC_LOCK: registrations past it fail "
          "on an HCA; raise the limit (LimitMEMLOCK=infinity, the container's memlock ulimit) or "
          "grant CAP_IPC_LOCK\"",
          braid::verbs::MemlockBytes(now.soft), braid::verbs::MemlockBytes(before->soft),
          braid::verbs::MemlockBytes(now.soft));
    } else {
      spdlog::info("memlock_limit={} ipc_lock={}", braid::verbs::MemlockBytes(now.soft),
                   now.ipc_lock);
    }
  }
  auto agent = braid::server::Agent::Start(config);
  if (!agent.ok()) {
    spdlog::error("msg=\"agent failed to start\" error=\"{}\"", agent.status().ToString());
    return 1;
  }
  int sig = 0;
  // SIGHUP (what `systemctl reload` or a habit sends) used to kill the agent on the spot, every
  // VQP with it. Nothing needs it: the files that can change are re-read when they do.
  while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
    spdlog::info(
        "agent={} signal={} msg=\"SIGHUP changes nothing: TLS certificate files and the tokens "
        "file "
        "are re-read when they change; SIGTERM stops the agent\"",
        (*agent)->config().agent_id, sig);
  }
  spdlog::info("agent={} signal={} msg=\"shutting down\"", (*agent)->config().agent_id, sig);
  // Transfers in flight may finish first; a second SIGTERM or SIGINT cuts that short.
  (*agent)->Drain(std::chrono::milliseconds((*agent)->config().shutdown_drain_ms),
                  [&set](std::chrono::milliseconds step) {
                    const timespec wait{0, static_cast<long>(step.count()) * 1000000L};
                    const int got = sigtimedwait(&set, nullptr, &wait);
                    return got == SIGTERM || got == SIGINT;
                  });
  (*agent)->Shutdown();
  return 0;
}
