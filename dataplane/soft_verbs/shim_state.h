// ShimState: the process-wide state behind libbraid_verbs.so, the libibverbs API over soft NICs.
//
// What: the soft NICs named in BRAID_SOFT_NICS ("soft0=127.0.0.1,soft1=127.0.0.2"; TCP port from
// BRAID_SOFT_PORT, default 18515), one TCP fabric they share, the devices opened through
// ibv_open_device, and a progress thread. Each verbs object handed to the program is one of the
// Shim* structs below: the rdma-core struct first (programs read its fields and call the inline
// functions through context->ops), then what stands behind it.
// Threading: every entry point takes mu() (ibv_query_port reads the port outside it: a walk of
// the host's interfaces that touches no provider state); the soft provider is single-threaded
// and this lock is what makes it safe to call from any thread. The progress thread also takes it,
// to move the fabric (inbound frames, ACK timers) while the program sleeps in ibv_get_cq_event or
// elsewhere, and to turn completions on armed CQs into completion-channel events. While the program
// polls a CQ itself (within the last 50 µs) and no CQ is armed, the thread stays out of its way.
// Ownership: the state lives for the process; devices and the thread exist while a context is
// open (the last ibv_close_device stops the thread and closes the NICs' listeners).
#ifndef BRAID_DATAPLANE_SOFT_VERBS_SHIM_STATE_H_
#define BRAID_DATAPLANE_SOFT_VERBS_SHIM_STATE_H_

#include <infiniband/verbs.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

struct ShimDevice {
  ibv_device dev;  // first: programs get &dev
  std::string name;
  std::string ipv4;
};

struct ShimContext {
  ibv_context ctx;  // first; ctx.async_fd is an eventfd (semaphore): one count per event
  verbs::Device* device = nullptr;  // shared by every context of the same NIC
  std::string name;
  std::deque<ibv_async_event> async_events;  // IBV_EVENT_CQ_ERR when a CQ overran
};

struct ShimPd {
  ibv_pd pd;  // first
  std::unique_ptr<verbs::ProtectionDomain> impl;
};

struct ShimMr {
  ibv_mr mr;  // first
  std::unique_ptr<verbs::MemoryRegion> impl;
  uint64_t pinned_pages = 0;  // counted in ShimState::pinned_pages()
};

// A type-2 memory window. mw.rkey is the key it was allocated with: the soft NIC finds the window
// by it (the bound key is the one the bind work request named).
struct ShimMw {
  ibv_mw mw;  // first
  std::unique_ptr<verbs::MemoryWindow> impl;
};

struct ShimChannel {
  ibv_comp_channel channel;  // first; channel.fd is an eventfd (semaphore): one count per event
  std::deque<struct ShimCq*> events;
};

struct ShimCq {
  ibv_cq cq;  // first
  std::unique_ptr<verbs::Cq> impl;
  ShimChannel* channel = nullptr;
  bool armed = false;  // ibv_req_notify_cq was called; the next completion is an event
};

struct ShimQp {
  ibv_qp qp;  // first
  std::unique_ptr<verbs::Qp> impl;
  ibv_qp_cap cap{};
  ibv_qp_attr attr{};  // the attributes set so far (ibv_query_qp)
};

class ShimState {
 public:
  static ShimState& Get();

  std::mutex& mu() { return mu_; }
  // The configured NICs (parsed once); empty when BRAID_SOFT_NICS is unset or malformed.
  std::vector<ShimDevice*>& devices() { return device_list_; }
  // Opens (or shares) the NIC's device; starts the fabric and the progress thread on first use.
  // Under mu().
  common::Result<verbs::Device*> Open(const std::string& name);
  // Under mu(): one context of `name` closed; the last one stops everything.
  void Close(const std::string& name, std::unique_lock<std::mutex>& lock);
  // Under mu(): CQs whose next completion is a channel event.
  void Arm(ShimCq* cq);
  void Disarm(ShimCq* cq);
  TcpFabric* fabric() { return fabric_.get(); }
  // Under mu(): the program polled a CQ now (its polls move the fabric meanwhile).
  void NotePoll();
  // Under mu(): the pages the process's registrations pin, as the kernel counts them (each
  // registration's own, against RLIMIT_MEMLOCK: see ibv_reg_mr).
  uint64_t& pinned_pages() { return pinned_pages_; }

 private:
  ShimState();
  void Progress();

  std::mutex mu_;
  std::vector<std::unique_ptr<ShimDevice>> devices_;
  std::vector<ShimDevice*> device_list_;
  std::vector<SoftNicConfig> nics_;
  uint16_t port_ = 18515;
  uint64_t pinned_pages_ = 0;
  std::unique_ptr<TcpFabric> fabric_;
  std::unique_ptr<SoftProvider> provider_;
  struct Open_ {
    std::unique_ptr<verbs::Device> device;
    int contexts = 0;
  };
  std::map<std::string, Open_> open_;
  std::vector<ShimCq*> armed_;
  std::thread progress_;
  bool stop_ = false;
  uint64_t last_poll_ns_ = 0;
};

// errno for a failed Status (EINVAL, ENOMEM, EOPNOTSUPP, ...).
int ErrnoOf(const common::Status& s);

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_VERBS_SHIM_STATE_H_
