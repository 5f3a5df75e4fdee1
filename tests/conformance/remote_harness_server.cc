// The child side of the two-process conformance harness (remote_harness_wire.h): the verbs
// objects of devices 1 and 3, driven by the parent's requests.
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "tests/conformance/remote_harness_wire.h"

namespace braid::testing::remote {
namespace {

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

}  // namespace

int RunServer(int fd, uint16_t port) {
  Server server(fd, port);
  return server.Run();
}

}  // namespace braid::testing::remote
