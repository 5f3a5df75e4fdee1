// The physical-layer provider interface: a small table of operations per object, in the manner of
// rdma-core's verbs_context_ops, carrying only what Braid uses.
//
//   Provider ─ ListDevices / OpenDevice ─▶ Device ─ AllocPd ─▶ ProtectionDomain ─ RegisterMemory ─▶
//   MemoryRegion (and AllocMw ─▶ MemoryWindow)
//                                           │                                   └─ CreateQp
//                                           ───────▶ Qp └─ CreateCq ─▶ Cq
//
// Vocabulary types are rdma-core's own (ibv_send_wr, ibv_recv_wr, ibv_wc, ibv_wc_status): the
// ibverbs provider converts nothing. Each op behaves as its verbs man page says, except that
// failures are a Status (never errno, never an exception) and that the soft provider fills the
// fields the spec leaves undefined on error completions with poison values.
//
// Threading: objects are not thread-safe; the thread that owns a Device (in braidd: the engine's
// data-plane thread) uses it and everything created from it. Provider::ListDevices may be called
// from any thread.
// Ownership: every object is move-free and owned through unique_ptr by whoever created it.
// REQUIRES: children are destroyed before their parents (QPs, MRs and MWs before their PD; QPs
// before their CQs; everything before its Device).
#ifndef BRAID_DATAPLANE_VERBS_PROVIDER_H_
#define BRAID_DATAPLANE_VERBS_PROVIDER_H_

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/common/result.h"
#include "dataplane/common/status.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/verbs/qp_params.h"

namespace braid::verbs {

using common::Result;
using common::Status;

enum class LinkLayer : uint8_t { kEthernet, kInfiniband };

struct DeviceInfo {
  std::string name;      // "mlx5_0", "soft0"
  std::string provider;  // "ibverbs", "soft"
  uint8_t port_num = 1;
  bool port_active = false;
  LinkLayer link_layer = LinkLayer::kEthernet;
  Gid gid;  // the GID at gid_index
  uint8_t gid_index = 0;
  uint16_t lid = 0;
  ibv_mtu active_mtu = IBV_MTU_1024;
  uint32_t max_qp_wr = 0;
  uint32_t max_cqe = 0;
  uint64_t max_mr_size = 0;
  uint32_t fds_per_qp = 0;      // descriptors a QP may add when connected, at most (soft NICs: 1)
  bool memory_windows = false;  // type-2 memory windows (ProtectionDomain::AllocMw)
  // The GID reaches this process alone: a soft NIC is the one listener on its address and port,
  // so another process naming the same GID cannot be reached through it. (Processes sharing an
  // HCA share its GID.)
  bool gid_is_exclusive = false;
};

class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual void* addr() const = 0;
  virtual size_t length() const = 0;
  virtual uint32_t lkey() const = 0;
  virtual uint32_t rkey() const = 0;
  // The ibv_mr a window bind names (ibv_send_wr.bind_mw.bind_info.mr).
  virtual ibv_mr* handle() = 0;
};

// A type-2 memory window (ibv_alloc_mw(3)), allocated unbound. It is bound, rebound and
// invalidated with work requests on a QP of its PD: IBV_WR_BIND_MW naming handle() (the new rkey
// is the caller's: ibv_inc_rkey of the last one) and IBV_WR_LOCAL_INV with the bound rkey. Once
// bound it answers only requests arriving on the QP it was bound through.
class MemoryWindow {
 public:
  virtual ~MemoryWindow() = default;
  // The ibv_mw a bind names (ibv_send_wr.bind_mw.mw); its rkey is the key it was allocated with.
  virtual ibv_mw* handle() = 0;
};

// A completion queue. Poll is the hot path: no allocation, no lock.
class Cq {
 public:
  virtual ~Cq() = default;
  // As ibv_poll_cq(3): fills at most out.size() completions, oldest first, and returns how many.
  // A CQ that overflowed returns kCqOverflow once the completions it holds are drained.
  virtual Result<int> Poll(std::span<ibv_wc> out) = 0;
  // Number of entries the CQ holds before it overflows.
  virtual int capacity() const = 0;
  // An fd that becomes readable after RequestNotify() once a completion arrives (-1: none).
  virtual int wakeup_fd() const = 0;
  // As ibv_req_notify_cq(3) with solicited_only = 0.
  virtual Status RequestNotify() = 0;
  // Consumes the wakeup event after wakeup_fd() fired (as ibv_get_cq_event + ibv_ack_cq_events).
  virtual Status ConsumeWakeup() = 0;
  // As ibv_resize_cq(3): the CQ then holds at least `entries` (at most the device's max_cqe);
  // completions it holds are kept, in order. Fails (the CQ unchanged) when `entries` is below what
  // it holds now or above max_cqe. Slow path: the thread that polls the CQ.
  virtual Status Resize(int entries) = 0;
};

// A reliable-connected queue pair. State machine RESET→INIT→RTR→RTS, any→ERR, any→RESET.
class Qp {
 public:
  virtual ~Qp() = default;
  virtual uint32_t qp_num() const = 0;
  virtual QpState state() const = 0;

  virtual Status ToInit(const QpInitParams& params) = 0;
  virtual Status ToRtr(const QpRtrParams& params) = 0;
  virtual Status ToRts(const QpRtsParams& params) = 0;
  // Outstanding work completes with IBV_WC_WR_FLUSH_ERR.
  virtual Status ToError() = 0;
  // Discards every queued WR without completions; the QP can be connected again.
  virtual Status ToReset() = 0;

  // As ibv_post_send(3): posts a chain. On failure *bad_wr names the first WR not posted (those
  // before it were posted). A full send queue is kNoResource (never allocates).
  virtual Status PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) = 0;
  // As ibv_post_recv(3), same failure rules.
  virtual Status PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) = 0;
  // Fault injection (soft NICs; a real HCA has none: kNotSupported): the QP's connection breaks,
  // its outstanding work ends in RETRY_EXC_ERR and the rest flushes.
  virtual Status InjectBreak() const {
    return Status::NotSupported("this QP's device has no fault hooks");
  }
};

class ProtectionDomain {
 public:
  virtual ~ProtectionDomain() = default;
  // `access` is IBV_ACCESS_* flags. The memory must stay mapped until the MR is destroyed.
  virtual Result<std::unique_ptr<MemoryRegion>> RegisterMemory(void* addr, size_t length,
                                                               unsigned int access) = 0;
  virtual Result<std::unique_ptr<Qp>> CreateQp(const QpCreateParams& params) = 0;
  // A type-2 memory window of this PD (DeviceInfo::memory_windows).
  virtual Result<std::unique_ptr<MemoryWindow>> AllocMw() {
    return Status::NotSupported("this device has no memory windows");
  }
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceInfo& info() const = 0;
  // Whether the port is active now: a link goes down and comes back while the device is open
  // (info().port_active is what it was when opened). Any thread, beside the thread of the
  // device's QPs and CQs (it reads the port only): the engine reads it on a thread of its own
  // (engine::PortWatcher), since a query may take milliseconds.
  virtual Result<bool> QueryPortActive() { return info().port_active; }
  virtual Result<std::unique_ptr<ProtectionDomain>> AllocPd() = 0;
  virtual Result<std::unique_ptr<Cq>> CreateCq(int min_entries) = 0;
  // An fd that turns readable when the device has inbound work that only progress (a Cq::Poll)
  // will handle, for a caller that sleeps while idle; -1 when the CQs' wakeup fds suffice (as on
  // an HCA, which places data without the host's help).
  virtual int progress_fd() const { return -1; }
  // Doorbell batching: work posted to this device's QPs between BeginPostBatch() and the matching
  // EndPostBatch() may be held and started at EndPostBatch(), all at once (a soft NIC sends it in
  // one sendmsg per connection rather than one per WR). Calls nest; the same thread as the posts.
  // Default: nothing held (an HCA starts each WR at its own doorbell).
  virtual void BeginPostBatch() {}
  virtual void EndPostBatch() {}
  // Fault injection (soft NICs; a real HCA has none: kNotSupported): the device's link goes down,
  // every connected QP on it breaks (RETRY_EXC_ERR, then flushes).
  virtual Status InjectLinkDown() { return Status::NotSupported("this device has no fault hooks"); }
};

// A provider's own running count (the soft link's connections, refused attaches, ACKs held
// for an answer), for an operator's metrics. `name` is snake_case, without a unit suffix.
struct ProviderCounter {
  const char* name;
  const char* help;
  uint64_t value;
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string_view name() const = 0;
  // kNotFound when the provider has no device at all.
  virtual Result<std::vector<DeviceInfo>> ListDevices() = 0;
  virtual Result<std::unique_ptr<Device>> OpenDevice(std::string_view name) = 0;
  // Appends the provider's counters; the thread of its devices. Default: none (an HCA's are in
  // sysfs, where the operator's node exporter reads them).
  virtual void ReadCounters(std::vector<ProviderCounter>* out) const { (void)out; }
};

}  // namespace braid::verbs

#endif  // BRAID_DATAPLANE_VERBS_PROVIDER_H_
