// EngineOptions: how an Engine is set up (engine.h), fixed at Start.
// Plain values; the provider is not owned and must outlive the engine.
#ifndef BRAID_DATAPLANE_ENGINE_ENGINE_OPTIONS_H_
#define BRAID_DATAPLANE_ENGINE_ENGINE_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/verbs/provider.h"

namespace braid::engine {

struct EngineOptions {
  verbs::Provider* provider = nullptr;  // REQUIRED, not owned
  std::vector<std::string> devices;     // devices to open; empty: every device listed
  std::string agent_id = "braid";
  std::string control_endpoint;  // written into every business card
  // This agent's identity as its peers authenticate it (its certificate's SAN; "" without TLS),
  // written into every business card.
  std::string agent_identity;
  std::string region_dir = "/dev/shm";
  uint64_t max_region_bytes = 64ull << 30;
  // Regions registered at once, in all and by one owner. Each is a mapping of the agent's, and a
  // process has at most vm.max_map_count (65,530) of them, VQP rings and large allocations
  // included: without a bound, one caller registering small regions takes them all.
  uint32_t max_regions = 16384;
  uint32_t max_regions_per_owner = 4096;
  // Bytes of region files (the agent's, in region_dir; not a client's own memory) one owner may
  // hold at once: their pages are taken at registration.
  uint64_t max_region_bytes_per_owner = 64ull << 30;
  // VQPs one owner may have at once (the agent-wide bounds are the descriptor budget and the
  // completion entries, which one owner could otherwise take whole).
  uint32_t max_vqps_per_owner = 1024;
  int cq_entries = 16384;  // per device, at start
  // Per device, what the CQ may grow to as VQPs reserve room (capped by the device's max_cqe).
  uint32_t max_cq_entries = 1u << 22;
  // File descriptors kept free for the control plane: a VQP that would eat into them is refused.
  uint32_t fd_reserve = 256;
  // Bytes of the agent's memory limit (its cgroup's) kept for its own work: region files and
  // session rings, whose pages count against the limit, are refused past the rest (MemoryRoom).
  uint64_t memory_reserve = 256ull << 20;
  size_t command_queue = 4096;
  // Transfers accepted and not yet released (in flight, waiting in a backlog, or past their
  // deadline and awaiting their WC), all owners together and one owner's (its VQPs'): without the
  // second, one owner's deep rings or many streams take the table and every other owner's
  // transfers are refused.
  uint32_t max_transfers = 65536;
  uint32_t max_transfers_per_owner = 16384;
  // The shared segments (rings) of one owner's open sessions together. The engine writes every
  // completion and notification slot as a session goes round its rings, so each session's pages
  // end up the agent's, refused entries included: without a bound, one owner's 256 sessions of
  // the largest rings hold 2 GiB.
  uint64_t max_session_bytes_per_owner = 256ull << 20;
  uint32_t default_timeout_ms = 30000;
  uint32_t notify_receives = 256;  // length-0 receives kept posted per VQP
  uint32_t idle_linger_us = 200;
  // While it busy-polls and a turn finds nothing (work in flight, or lingering), the engine gives
  // its core away (sched_yield) before the next turn: a thread woken on that core (a client
  // waiting for its completion, a gRPC handler, a second agent's engine) runs at once rather than
  // when the scheduler preempts a spinning loop. Off: the loop spins unbroken (a core of its own).
  bool yield_when_idle = true;
  // With work in flight, how long the engine busy-polls without progress (no completion, no
  // command, no submission) before it sleeps on its fds as when idle, waking at least every
  // millisecond for deadlines and soft NIC timers. A poller that spins until its work completes
  // holds its core for whole scheduler slices when a busy process shares it, while the threads
  // that would complete the work (the peer's engine, the client) wait; one that sleeps is woken
  // when a socket or CQ has something, ahead of the busy process. 0: never sleep with work in
  // flight.
  uint32_t in_flight_spin_us = 100;
  uint32_t idle_wait_ms = 100;  // with nothing to recover; at most kRecoveryWaitMs while recovering
  uint32_t call_timeout_ms = 5000;
  bool fault_injection = false;
  // Dead QPs come back: dead data QPs are reset and reconnected with the peer agent, retried with
  // an exponential backoff from `recovery_backoff_ms` up to `recovery_backoff_cap_ms`.
  bool recovery = true;
  uint32_t recovery_backoff_ms = 100;
  uint32_t recovery_backoff_cap_ms = 2000;
  uint32_t recovery_peer_timeout_ms = 10000;  // an unanswered request counts as a failure
  // A VQP none of whose data QPs came back within this long of failed attempts, or whose peer
  // answers that the VQP is gone, fails for good (VqpState::kFailed).
  uint32_t recovery_budget_ms = 60000;
  // Every VQP's first cooldown of a data QP that stalls or keeps dying (VirtualQpConfig's
  // cooldown_ms, which this sets): an agent-wide setting, not a per-VQP request.
  uint32_t qp_cooldown_ms = 100;
  // This process's identity in business cards; 0: a random one is drawn at start.
  uint64_t incarnation = 0;
  size_t event_watcher_capacity = 4096;
};

}  // namespace braid::engine

#endif  // BRAID_DATAPLANE_ENGINE_ENGINE_OPTIONS_H_
