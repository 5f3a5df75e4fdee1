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

namespace braid::testing {
namespace {

using common::Status;
using common::StatusCode;

constexpr int kMaxWrs = 8;
constexpr int kMaxSges = 4;
constexpr int kMaxWcs = 16;
constexpr size_t kArenaPerDevice = 1 << 20;

enum class Op : uint32_t {
  kInfo,
  kAllocPd,
  kCreateCq,
  kRegMr,
  kCreateQp,
  kToInit,
  kToRtr,
  kToRts,
  kToError,
  kToReset,
  kPostSend,
  kPostRecv,
  kPoll,
  kCapacity,
  kDestroyPd,
  kDestroyCq,
  kDestroyMr,
  kDestroyQp,
  kHold,
  kDropNext,
  kBreak,
  kResizeCq,
  kAllocMw,
  kDestroyMw,
  kQuit
};

// A window bind travels as: remote_addr = its address, rkey = the new key, compare_add = its
// length, imm = its access, swap = window handle << 32 | region handle (the far process's).
struct WireWr {
  uint64_t wr_id;
  uint32_t opcode;
  uint32_t flags;
  uint32_t imm;
  uint32_t num_sge;
  uint64_t remote_addr;
  uint32_t rkey;
  uint64_t compare_add;
  uint64_t swap;
  ibv_sge sge[kMaxSges];
};

struct Request {
  Op op;
  int32_t device;
  uint32_t handle;   // the object operated on
  uint32_t handle2;  // CreateQp: send CQ; RegMr/CreateQp: PD
  uint32_t handle3;  // CreateQp: receive CQ
  int64_t arg;
  uint64_t addr;
  verbs::QpCaps caps;
  bool sq_sig_all;
  verbs::QpInitParams init;
  verbs::QpRtrParams rtr;
  verbs::QpRtsParams rts;
  uint32_t num_wrs;
  WireWr wrs[kMaxWrs];
};

struct Response {
  StatusCode code;
  char message[240];
  uint32_t handle;
  uint32_t value;
  uint32_t lkey;
  uint32_t rkey;
  int32_t count;
  uint32_t bad_index;
  verbs::Gid gid;
  uint16_t lid;
  uint8_t gid_index;
  ibv_mtu mtu;
  ibv_wc wcs[kMaxWcs];
};

Status ToStatus(const Response& r) {
  if (r.code == StatusCode::kOk) return Status::Ok();
  if (r.code == StatusCode::kNoResource) return Status::NoResource();
  const std::string msg = std::string("remote: ") + r.message;
  switch (r.code) {
    case StatusCode::kInvalidArgument:
      return Status::InvalidArgument(msg);
    case StatusCode::kNotFound:
      return Status::NotFound(msg);
    case StatusCode::kNotSupported:
      return Status::NotSupported(msg);
    case StatusCode::kFailedPrecondition:
      return Status::FailedPrecondition(msg);
    case StatusCode::kCqOverflow:
      return Status::CqOverflow(msg);
    default:
      return Status::Internal(msg);
  }
}

void SetStatus(Response* r, const Status& s) {
  r->code = s.code();
  std::snprintf(r->message, sizeof(r->message), "%.*s", static_cast<int>(s.message().size()),
                s.message().data());
}

// ---- Child side --------------------------------------------------------------------------------

class Server {
 public:
  Server(int fd, uint16_t port)
      : fd_(fd),
        fabric_(soft::TcpFabricOptions{.port = port}),
        provider_({{{"soft1", "127.0.0.2"}, {"soft3", "127.0.0.4"}}, &fabric_}) {}

  int Run() {
    for (const char* name : {"soft1", "soft3"}) {
      auto d = provider_.OpenDevice(name);
      if (!d.ok()) return 1;
      devices_.push_back(std::move(d).value());
    }
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) {
        Request req;
        if (recv(fd_, &req, sizeof(req), 0) != sizeof(req)) return 0;  // the parent went away
        if (req.op == Op::kQuit) return 0;
        Response res{};
        Handle(req, &res);
        if (send(fd_, &res, sizeof(res), MSG_NOSIGNAL) != sizeof(res)) return 0;
      } else {
        fabric_.Progress();
      }
    }
  }

 private:
  template <typename T>
  static uint32_t Keep(std::vector<std::unique_ptr<T>>& table, std::unique_ptr<T> object) {
    table.push_back(std::move(object));
    return static_cast<uint32_t>(table.size() - 1);
  }

  void Handle(const Request& q, Response* r) {
    r->code = StatusCode::kOk;
    verbs::Device* device = q.device == 1 ? devices_[0].get() : devices_[1].get();
    switch (q.op) {
      case Op::kInfo: {
        const verbs::DeviceInfo& i = device->info();
        r->gid = i.gid;
        r->lid = i.lid;
        r->gid_index = i.gid_index;
        r->mtu = i.active_mtu;
        break;
      }
      case Op::kAllocPd: {
        auto pd = device->AllocPd();
        if (!pd.ok()) return SetStatus(r, pd.status());
        r->handle = Keep(pds_, std::move(pd).value());
        break;
      }
      case Op::kCreateCq: {
        auto cq = device->CreateCq(static_cast<int>(q.arg));
        if (!cq.ok()) return SetStatus(r, cq.status());
        r->value = static_cast<uint32_t>((*cq)->capacity());
        r->handle = Keep(cqs_, std::move(cq).value());
        break;
      }
      case Op::kCapacity:
        r->value = static_cast<uint32_t>(cqs_[q.handle]->capacity());
        break;
      case Op::kResizeCq: {
        const common::Status s = cqs_[q.handle]->Resize(static_cast<int>(q.arg));
        if (!s.ok()) return SetStatus(r, s);
        r->value = static_cast<uint32_t>(cqs_[q.handle]->capacity());
        break;
      }
      case Op::kRegMr: {
        auto mr = pds_[q.handle2]->RegisterMemory(reinterpret_cast<void*>(q.addr),
                                                  static_cast<size_t>(q.arg),
                                                  static_cast<unsigned>(q.handle3));
        if (!mr.ok()) return SetStatus(r, mr.status());
        r->lkey = (*mr)->lkey();
        r->rkey = (*mr)->rkey();
        r->handle = Keep(mrs_, std::move(mr).value());
        break;
      }
      case Op::kAllocMw: {
        auto mw = pds_[q.handle2]->AllocMw();
        if (!mw.ok()) return SetStatus(r, mw.status());
        r->rkey = (*mw)->handle()->rkey;
        r->handle = Keep(mws_, std::move(mw).value());
        break;
      }
      case Op::kDestroyMw:
        mws_[q.handle].reset();
        break;
      case Op::kCreateQp: {
        auto qp = pds_[q.handle2]->CreateQp(
            {cqs_[q.handle].get(), cqs_[q.handle3].get(), q.caps, q.sq_sig_all});
        if (!qp.ok()) return SetStatus(r, qp.status());
        r->value = (*qp)->qp_num();
        r->handle = Keep(qps_, std::move(qp).value());
        break;
      }
      case Op::kToInit:
        return SetStatus(r, qps_[q.handle]->ToInit(q.init));
      case Op::kToRtr:
        return SetStatus(r, qps_[q.handle]->ToRtr(q.rtr));
      case Op::kToRts:
        return SetStatus(r, qps_[q.handle]->ToRts(q.rts));
      case Op::kToError:
        return SetStatus(r, qps_[q.handle]->ToError());
      case Op::kToReset:
        return SetStatus(r, qps_[q.handle]->ToReset());
      case Op::kPostSend: {
        ibv_send_wr wrs[kMaxWrs]{};
        ibv_sge sges[kMaxWrs][kMaxSges];
        for (uint32_t i = 0; i < q.num_wrs; ++i) {
          const WireWr& w = q.wrs[i];
          std::memcpy(sges[i], w.sge, sizeof(w.sge));
          wrs[i].wr_id = w.wr_id;
          wrs[i].opcode = static_cast<ibv_wr_opcode>(w.opcode);
          wrs[i].send_flags = w.flags;
          wrs[i].imm_data = w.imm;
          wrs[i].num_sge = static_cast<int>(w.num_sge);
          wrs[i].sg_list = sges[i];
          if (w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD || w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP) {
            wrs[i].wr.atomic = {w.remote_addr, w.compare_add, w.swap, w.rkey};
          } else if (w.opcode == IBV_WR_BIND_MW) {
            const uint32_t mw = static_cast<uint32_t>(w.swap >> 32);
            const uint32_t mr = static_cast<uint32_t>(w.swap);
            if (mw >= mws_.size() || !mws_[mw] || mr >= mrs_.size() || !mrs_[mr]) {
              return SetStatus(r, Status::InvalidArgument("no such window or region"));
            }
            wrs[i].bind_mw = {mws_[mw]->handle(),
                              w.rkey,
                              {mrs_[mr]->handle(), w.remote_addr, w.compare_add, w.imm}};
          } else if (w.opcode == IBV_WR_LOCAL_INV) {
            wrs[i].invalidate_rkey = w.rkey;
          } else {
            wrs[i].wr.rdma = {w.remote_addr, w.rkey};
          }
          wrs[i].next = i + 1 < q.num_wrs ? &wrs[i + 1] : nullptr;
        }
        ibv_send_wr* bad = nullptr;
        const Status s = qps_[q.handle]->PostSend(wrs, &bad);
        r->bad_index = bad != nullptr ? static_cast<uint32_t>(bad - wrs) : 0;
        return SetStatus(r, s);
      }
      case Op::kPostRecv: {
        ibv_recv_wr wrs[kMaxWrs]{};
        ibv_sge sges[kMaxWrs][kMaxSges];
        for (uint32_t i = 0; i < q.num_wrs; ++i) {
          std::memcpy(sges[i], q.wrs[i].sge, sizeof(q.wrs[i].sge));
          wrs[i].wr_id = q.wrs[i].wr_id;
          wrs[i].num_sge = static_cast<int>(q.wrs[i].num_sge);
          wrs[i].sg_list = sges[i];
          wrs[i].next = i + 1 < q.num_wrs ? &wrs[i + 1] : nullptr;
        }
        ibv_recv_wr* bad = nullptr;
        const Status s = qps_[q.handle]->PostRecv(wrs, &bad);
        r->bad_index = bad != nullptr ? static_cast<uint32_t>(bad - wrs) : 0;
        return SetStatus(r, s);
      }
      case Op::kPoll: {
        auto n = cqs_[q.handle]->Poll(std::span<ibv_wc>(r->wcs, std::min<size_t>(kMaxWcs, q.arg)));
        if (!n.ok()) return SetStatus(r, n.status());
        r->count = *n;
        break;
      }
      case Op::kHold:
        return SetStatus(r, fabric_.HoldQp(*qps_[q.handle], q.arg != 0));
      case Op::kDropNext:
        return SetStatus(r, fabric_.DropNext(*qps_[q.handle], static_cast<int>(q.arg)));
      case Op::kBreak:
        return SetStatus(r, fabric_.BreakQp(*qps_[q.handle]));
      case Op::kDestroyQp:
        qps_[q.handle].reset();
        break;
      case Op::kDestroyMr:
        mrs_[q.handle].reset();
        break;
      case Op::kDestroyCq:
        cqs_[q.handle].reset();
        break;
      case Op::kDestroyPd:
        pds_[q.handle].reset();
        break;
      case Op::kQuit:
        break;
    }
  }

  int fd_;
  soft::TcpFabric fabric_;
  soft::SoftProvider provider_;
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<std::unique_ptr<verbs::MemoryRegion>> mrs_;
  std::vector<std::unique_ptr<verbs::MemoryWindow>> mws_;
  std::vector<std::unique_ptr<verbs::Qp>> qps_;
};

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
      Server server(fds[1], port_);
      _exit(server.Run());
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
