// The conformance suite across two processes: devices 0 and 2 are soft NICs of this process
// (127.0.0.1, 127.0.0.3), devices 1 and 3 live in a forked child (127.0.0.2, 127.0.0.4); both
// sides run their own TcpFabric, so every QP pair talks over real TCP between processes.
//
// The child's verbs objects are reached through a small RPC proxy (a SOCK_SEQPACKET socketpair;
// one fixed-size request and response per call) implementing the provider interface. Endpoint
// buffers come from a MAP_SHARED arena mapped before the fork: both processes see the same bytes at
// the same addresses, so the tests compare memory on either side unchanged.
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/conformance/harness.h"
#include "tests/conformance/remote_harness_wire.h"

namespace braid::testing {
namespace {

using common::Status;
using common::StatusCode;
using remote::kMaxSges;
using remote::kMaxWcs;
using remote::kMaxWrs;
using remote::Op;
using remote::Request;
using remote::Response;
using remote::RunServer;
using remote::ToStatus;
using remote::WireWr;

constexpr size_t kArenaPerDevice = 1 << 20;

// ---- Parent side: proxies ----------------------------------------------------------------------

class Rpc {
 public:
  Rpc(int fd, soft::Fabric* local) : fd_(fd), local_(local) {}
  // This process's fabric: polling a remote CQ must keep the local side moving too.
  void ProgressLocal() { local_->Progress(); }
  Response Call(Request& q) {
    Response r{};
    if (send(fd_, &q, sizeof(q), MSG_NOSIGNAL) != sizeof(q) ||
        recv(fd_, &r, sizeof(r), 0) != sizeof(r)) {
      r.code = StatusCode::kInternal;
      std::snprintf(r.message, sizeof(r.message), "the remote process does not answer");
    }
    return r;
  }
  Request New(Op op, int device, uint32_t handle = 0) {
    Request q{};
    q.op = op;
    q.device = device;
    q.handle = handle;
    return q;
  }

 private:
  int fd_;
  soft::Fabric* local_;
};

class RemoteMr final : public verbs::MemoryRegion {
 public:
  RemoteMr(Rpc* rpc, int device, uint32_t handle, void* addr, size_t length, uint32_t lkey,
           uint32_t rkey)
      : rpc_(rpc),
        device_(device),
        handle_(handle),
        addr_(addr),
        length_(length),
        lkey_(lkey),
        rkey_(rkey) {
    mr_.addr = addr;
    mr_.length = length;
    mr_.lkey = lkey;
    mr_.rkey = rkey;
    mr_.handle = handle;  // what a bind names in the far process
  }
  ~RemoteMr() override {
    Request q = rpc_->New(Op::kDestroyMr, device_, handle_);
    rpc_->Call(q);
  }
  void* addr() const override { return addr_; }
  size_t length() const override { return length_; }
  uint32_t lkey() const override { return lkey_; }
  uint32_t rkey() const override { return rkey_; }
  ibv_mr* handle() override { return &mr_; }

 private:
  Rpc* rpc_;
  int device_;
  uint32_t handle_;
  void* addr_;
  size_t length_;
  uint32_t lkey_, rkey_;
  ibv_mr mr_{};
};

class RemoteMw final : public verbs::MemoryWindow {
 public:
  RemoteMw(Rpc* rpc, int device, uint32_t handle, uint32_t rkey) : rpc_(rpc), device_(device) {
    mw_.rkey = rkey;
    mw_.handle = handle;  // what a bind names in the far process
    mw_.type = IBV_MW_TYPE_2;
  }
  ~RemoteMw() override {
    Request q = rpc_->New(Op::kDestroyMw, device_, mw_.handle);
    rpc_->Call(q);
  }
  ibv_mw* handle() override { return &mw_; }

 private:
  Rpc* rpc_;
  int device_;
  ibv_mw mw_{};
};

class RemoteCq final : public verbs::Cq {
 public:
  RemoteCq(Rpc* rpc, int device, uint32_t handle, int capacity)
      : rpc_(rpc), device_(device), handle_(handle), capacity_(capacity) {}
  ~RemoteCq() override {
    Request q = rpc_->New(Op::kDestroyCq, device_, handle_);
    rpc_->Call(q);
  }
  common::Result<int> Poll(std::span<ibv_wc> out) override {
    rpc_->ProgressLocal();
    Request q = rpc_->New(Op::kPoll, device_, handle_);
    q.arg = static_cast<int64_t>(out.size());
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    std::memcpy(out.data(), r.wcs, sizeof(ibv_wc) * static_cast<size_t>(r.count));
    return r.count;
  }
  int capacity() const override { return capacity_; }
  int wakeup_fd() const override { return -1; }
  Status RequestNotify() override { return Status::NotSupported("no remote wakeup fd"); }
  Status ConsumeWakeup() override { return Status::NotSupported("no remote wakeup fd"); }
  Status Resize(int entries) override {
    Request q = rpc_->New(Op::kResizeCq, device_, handle_);
    q.arg = entries;
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    capacity_ = static_cast<int>(r.value);
    return Status::Ok();
  }
  uint32_t handle() const { return handle_; }

 private:
  Rpc* rpc_;
  int device_;
  uint32_t handle_;
  int capacity_;
};

class RemoteQp final : public verbs::Qp {
 public:
  RemoteQp(Rpc* rpc, int device, uint32_t handle, uint32_t qp_num)
      : rpc_(rpc), device_(device), handle_(handle), qp_num_(qp_num) {}
  ~RemoteQp() override {
    Request q = rpc_->New(Op::kDestroyQp, device_, handle_);
    rpc_->Call(q);
  }
  uint32_t qp_num() const override { return qp_num_; }
  verbs::QpState state() const override { return state_; }
  Status ToInit(const verbs::QpInitParams& p) override {
    Request q = rpc_->New(Op::kToInit, device_, handle_);
    q.init = p;
    return Transition(q, verbs::QpState::kInit);
  }
  Status ToRtr(const verbs::QpRtrParams& p) override {
    Request q = rpc_->New(Op::kToRtr, device_, handle_);
    q.rtr = p;
    return Transition(q, verbs::QpState::kRtr);
  }
  Status ToRts(const verbs::QpRtsParams& p) override {
    Request q = rpc_->New(Op::kToRts, device_, handle_);
    q.rts = p;
    return Transition(q, verbs::QpState::kRts);
  }
  Status ToError() override {
    Request q = rpc_->New(Op::kToError, device_, handle_);
    return Transition(q, verbs::QpState::kError);
  }
  Status ToReset() override {
    Request q = rpc_->New(Op::kToReset, device_, handle_);
    return Transition(q, verbs::QpState::kReset);
  }
  Status PostSend(ibv_send_wr* wr, ibv_send_wr** bad_wr) override {
    return PostChain(Op::kPostSend, wr, bad_wr, [](WireWr& x, const ibv_send_wr& w) {
      x.opcode = w.opcode;
      x.flags = w.send_flags;
      x.imm = w.imm_data;
      if (w.opcode == IBV_WR_BIND_MW) {
        x.remote_addr = w.bind_mw.bind_info.addr;
        x.rkey = w.bind_mw.rkey;
        x.compare_add = w.bind_mw.bind_info.length;
        x.imm = w.bind_mw.bind_info.mw_access_flags;
        x.swap = static_cast<uint64_t>(w.bind_mw.mw->handle) << 32 | w.bind_mw.bind_info.mr->handle;
        return;
      }
      if (w.opcode == IBV_WR_LOCAL_INV) {
        x.rkey = w.invalidate_rkey;
        return;
      }
      const bool atomic =
          w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD || w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP;
      x.remote_addr = atomic ? w.wr.atomic.remote_addr : w.wr.rdma.remote_addr;
      x.rkey = atomic ? w.wr.atomic.rkey : w.wr.rdma.rkey;
      x.compare_add = atomic ? w.wr.atomic.compare_add : 0;
      x.swap = atomic ? w.wr.atomic.swap : 0;
    });
  }
  Status PostRecv(ibv_recv_wr* wr, ibv_recv_wr** bad_wr) override {
    return PostChain(Op::kPostRecv, wr, bad_wr, [](WireWr&, const ibv_recv_wr&) {});
  }

  // Link control of this QP's connection, in the far process.
  Status Control(Op op, int64_t arg) {
    Request q = rpc_->New(op, device_, handle_);
    q.arg = arg;
    return ToStatus(rpc_->Call(q));
  }

 private:
  // Marshals a WR chain (wr_id and SGEs here, the rest by `fill`), posts it remotely and maps
  // the remote bad_wr index back onto the caller's chain.
  template <typename Wr, typename Fill>
  Status PostChain(Op op, Wr* wr, Wr** bad_wr, Fill fill) {
    Request q = rpc_->New(op, device_, handle_);
    Wr* list[kMaxWrs];
    for (Wr* w = wr; w != nullptr; w = w->next) {
      if (q.num_wrs == kMaxWrs || w->num_sge > kMaxSges) {
        if (bad_wr != nullptr) *bad_wr = w;
        return Status::NotSupported("the proxy carries at most 8 WRs of 4 SGEs");
      }
      WireWr& x = q.wrs[q.num_wrs];
      list[q.num_wrs++] = w;
      x.wr_id = w->wr_id;
      x.num_sge = static_cast<uint32_t>(w->num_sge);
      for (int i = 0; i < w->num_sge; ++i) x.sge[i] = w->sg_list[i];
      fill(x, *w);
    }
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk && bad_wr != nullptr && r.bad_index < q.num_wrs) {
      *bad_wr = list[r.bad_index];
    }
    return ToStatus(r);
  }

  Status Transition(Request& q, verbs::QpState target) {
    const Status s = ToStatus(rpc_->Call(q));
    if (s.ok()) state_ = target;
    return s;
  }
  Rpc* rpc_;
  int device_;
  uint32_t handle_;
  uint32_t qp_num_;
  verbs::QpState state_ = verbs::QpState::kReset;
};

class RemotePd final : public verbs::ProtectionDomain {
 public:
  RemotePd(Rpc* rpc, int device, uint32_t handle) : rpc_(rpc), device_(device), handle_(handle) {}
  ~RemotePd() override {
    Request q = rpc_->New(Op::kDestroyPd, device_, handle_);
    rpc_->Call(q);
  }
  common::Result<std::unique_ptr<verbs::MemoryRegion>> RegisterMemory(
      void* addr, size_t length, unsigned int access) override {
    Request q = rpc_->New(Op::kRegMr, device_);
    q.handle2 = handle_;
    q.handle3 = access;
    q.addr = reinterpret_cast<uint64_t>(addr);
    q.arg = static_cast<int64_t>(length);
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    return std::unique_ptr<verbs::MemoryRegion>(
        std::make_unique<RemoteMr>(rpc_, device_, r.handle, addr, length, r.lkey, r.rkey));
  }
  common::Result<std::unique_ptr<verbs::MemoryWindow>> AllocMw() override {
    Request q = rpc_->New(Op::kAllocMw, device_);
    q.handle2 = handle_;
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    return std::unique_ptr<verbs::MemoryWindow>(
        std::make_unique<RemoteMw>(rpc_, device_, r.handle, r.rkey));
  }
  common::Result<std::unique_ptr<verbs::Qp>> CreateQp(const verbs::QpCreateParams& p) override {
    auto* send_cq = dynamic_cast<RemoteCq*>(p.send_cq);
    auto* recv_cq = dynamic_cast<RemoteCq*>(p.recv_cq);
    if (send_cq == nullptr || recv_cq == nullptr) return Status::InvalidArgument("not remote CQs");
    Request q = rpc_->New(Op::kCreateQp, device_, send_cq->handle());
    q.handle2 = handle_;
    q.handle3 = recv_cq->handle();
    q.caps = p.caps;
    q.sq_sig_all = p.sq_sig_all;
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    return std::unique_ptr<verbs::Qp>(std::make_unique<RemoteQp>(rpc_, device_, r.handle, r.value));
  }

 private:
  Rpc* rpc_;
  int device_;
  uint32_t handle_;
};

class RemoteDevice final : public verbs::Device {
 public:
  RemoteDevice(Rpc* rpc, int device) : rpc_(rpc), device_(device) {
    Request q = rpc_->New(Op::kInfo, device_);
    const Response r = rpc_->Call(q);
    info_.name = device == 1 ? "soft1" : "soft3";
    info_.provider = "soft (remote process)";
    info_.port_active = true;
    info_.gid = r.gid;
    info_.lid = r.lid;
    info_.gid_index = r.gid_index;
    info_.active_mtu = r.mtu;
    info_.memory_windows = true;  // the far process's devices are soft NICs
  }
  const verbs::DeviceInfo& info() const override { return info_; }
  common::Result<std::unique_ptr<verbs::ProtectionDomain>> AllocPd() override {
    Request q = rpc_->New(Op::kAllocPd, device_);
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    return std::unique_ptr<verbs::ProtectionDomain>(
        std::make_unique<RemotePd>(rpc_, device_, r.handle));
  }
  common::Result<std::unique_ptr<verbs::Cq>> CreateCq(int entries) override {
    Request q = rpc_->New(Op::kCreateCq, device_);
    q.arg = entries;
    const Response r = rpc_->Call(q);
    if (r.code != StatusCode::kOk) return ToStatus(r);
    return std::unique_ptr<verbs::Cq>(
        std::make_unique<RemoteCq>(rpc_, device_, r.handle, static_cast<int>(r.value)));
  }

 private:
  Rpc* rpc_;
  int device_;
  verbs::DeviceInfo info_;
};

// Local QPs are controlled here; the far process's QPs through the RPC.
class TwoProcessLinkControl final : public LinkControl {
 public:
  explicit TwoProcessLinkControl(soft::TcpFabric* local) : local_(local) {}
  Status Hold(const verbs::Qp& qp, bool hold) override {
    if (auto* r = dynamic_cast<const RemoteQp*>(&qp)) {
      return const_cast<RemoteQp*>(r)->Control(Op::kHold, hold ? 1 : 0);
    }
    return local_.Hold(qp, hold);
  }
  Status DropNext(const verbs::Qp& qp, int count) override {
    if (auto* r = dynamic_cast<const RemoteQp*>(&qp)) {
      return const_cast<RemoteQp*>(r)->Control(Op::kDropNext, count);
    }
    return local_.DropNext(qp, count);
  }
  Status Break(const verbs::Qp& qp) override {
    if (auto* r = dynamic_cast<const RemoteQp*>(&qp)) {
      return const_cast<RemoteQp*>(r)->Control(Op::kBreak, 0);
    }
    return local_.Break(qp);
  }
  Status Repair(const verbs::Qp& qp) override { return local_.Repair(qp); }
  uint64_t NowNs() const override { return local_.NowNs(); }

 private:
  TcpLinkControl local_;
};

class TwoProcessHarness final : public Harness {
 public:
  explicit TwoProcessHarness(uint16_t port)
      : port_(port),
        fabric_(soft::TcpFabricOptions{.port = port}),
        provider_({{{"soft0", "127.0.0.1"}, {"soft2", "127.0.0.3"}}, &fabric_}),
        link_(&fabric_) {}
  ~TwoProcessHarness() override {
    devices_.clear();
    if (child_ > 0) {
      Request q{};
      q.op = Op::kQuit;
      (void)!send(fd_, &q, sizeof(q), MSG_NOSIGNAL);
      int status = 0;
      waitpid(child_, &status, 0);
    }
    if (fd_ >= 0) close(fd_);
    if (arena_ != nullptr) munmap(arena_, 4 * kArenaPerDevice);
  }

  std::string SkipReason() override { return ""; }
  Status Open() override {
    arena_ = static_cast<uint8_t*>(mmap(nullptr, 4 * kArenaPerDevice, PROT_READ | PROT_WRITE,
                                        MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (arena_ == MAP_FAILED) {
      arena_ = nullptr;
      return Status::FromErrno(errno, "mmap shared arena");
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds) != 0)
      return Status::FromErrno(errno, "socketpair");
    child_ = fork();
    if (child_ < 0) return Status::FromErrno(errno, "fork");
    if (child_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(fds[0]);
      _exit(RunServer(fds[1], port_));
    }
    close(fds[1]);
    fd_ = fds[0];
    rpc_ = std::make_unique<Rpc>(fd_, &fabric_);
    auto local0 = provider_.OpenDevice("soft0");
    auto local2 = provider_.OpenDevice("soft2");
    if (!local0.ok()) return local0.status();
    if (!local2.ok()) return local2.status();
    devices_.push_back(std::move(local0).value());
    devices_.push_back(std::make_unique<RemoteDevice>(rpc_.get(), 1));
    devices_.push_back(std::move(local2).value());
    devices_.push_back(std::make_unique<RemoteDevice>(rpc_.get(), 3));
    return Status::Ok();
  }
  int num_devices() const override { return static_cast<int>(devices_.size()); }
  verbs::Device& device(int index) override { return *devices_[static_cast<size_t>(index)]; }
  void Progress() override { fabric_.Progress(); }
  LinkControl* link() override { return &link_; }
  bool poisons_undefined_fields() const override { return true; }
  uint8_t* EndpointBuffer(int device, size_t bytes) override {
    if (arena_ == nullptr || bytes > kArenaPerDevice) return nullptr;
    return arena_ + static_cast<size_t>(device) * kArenaPerDevice;
  }

 private:
  uint16_t port_;
  soft::TcpFabric fabric_;
  soft::SoftProvider provider_;
  uint8_t* arena_ = nullptr;
  int fd_ = -1;
  pid_t child_ = -1;
  std::unique_ptr<Rpc> rpc_;
  TwoProcessLinkControl link_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
};

}  // namespace

HarnessFactory TcpTwoProcessHarness(uint16_t port) {
  return {"TcpTwoProcesses", [port] { return std::make_unique<TwoProcessHarness>(port); }};
}

}  // namespace braid::testing
