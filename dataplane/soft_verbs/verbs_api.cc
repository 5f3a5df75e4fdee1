// The libibverbs API of libbraid_verbs.so (exported with rdma-core's symbol versions by
// verbs_shim.map). Loaded with LD_PRELOAD, it stands in front of libibverbs: an unmodified verbs
// program finds the soft NICs of BRAID_SOFT_NICS as its devices. What it does not support fails
// with EOPNOTSUPP (doc/soft_verbs.md); nothing reaches libibverbs with an object of ours.
//
// Every function takes the shim's lock (shim_state.h). Errors follow the man pages: functions
// returning a pointer return NULL with errno set, those returning int return the errno value.
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <span>

#include "dataplane/soft/soft_device.h"
#include "dataplane/soft_verbs/qp_transition.h"
#include "dataplane/soft_verbs/shim_state.h"
#include "dataplane/verbs/memlock.h"

#undef ibv_query_port
#undef ibv_reg_mr
#undef ibv_reg_mr_iova

namespace braid::soft {
namespace {

using Lock = std::unique_lock<std::mutex>;

template <typename T>
T* Fail(int err) {
  errno = err;
  return nullptr;
}

ShimCq* Of(ibv_cq* cq) { return reinterpret_cast<ShimCq*>(cq); }
ShimQp* Of(ibv_qp* qp) { return reinterpret_cast<ShimQp*>(qp); }
ShimPd* Of(ibv_pd* pd) { return reinterpret_cast<ShimPd*>(pd); }
ShimContext* Of(ibv_context* c) { return reinterpret_cast<ShimContext*>(c); }

// The context ops the inline functions of verbs.h call.
int PollCq(ibv_cq* cq, int num_entries, ibv_wc* wc) {
  if (num_entries < 0) return -1;
  Lock lock(ShimState::Get().mu());
  ShimState::Get().NotePoll();
  common::Result<int> n =
      Of(cq)->impl->Poll(std::span<ibv_wc>(wc, static_cast<size_t>(num_entries)));
  if (n.ok()) return *n;
  if (n.status().code() == common::StatusCode::kCqOverflow) {
    // As a kernel provider reports an overrun: IBV_EVENT_CQ_ERR on the context's async queue.
    ShimContext* c = Of(cq->context);
    ibv_async_event event{};
    event.element.cq = cq;
    event.event_type = IBV_EVENT_CQ_ERR;
    c->async_events.push_back(event);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(c->ctx.async_fd, &one, sizeof(one));
  }
  return -1;
}

// The live state of the soft QP (it moves to ERR by itself on an error completion).
ibv_qp_state StateOf(const verbs::Qp& qp) {
  switch (qp.state()) {
    case verbs::QpState::kReset:
      return IBV_QPS_RESET;
    case verbs::QpState::kInit:
      return IBV_QPS_INIT;
    case verbs::QpState::kRtr:
      return IBV_QPS_RTR;
    case verbs::QpState::kRts:
      return IBV_QPS_RTS;
    case verbs::QpState::kError:
      return IBV_QPS_ERR;
  }
  return IBV_QPS_ERR;
}

int ReqNotifyCq(ibv_cq* cq, int solicited_only) {
  (void)solicited_only;  // every completion is an event (a superset, as the man page allows)
  Lock lock(ShimState::Get().mu());
  ShimCq* c = Of(cq);
  if (c->channel == nullptr) return EINVAL;
  common::Status s = c->impl->RequestNotify();
  if (!s.ok()) return ErrnoOf(s);
  ShimState::Get().Arm(c);
  return 0;
}

int PostSend(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad_wr) {
  Lock lock(ShimState::Get().mu());
  common::Status s = Of(qp)->impl->PostSend(wr, bad_wr);
  return ErrnoOf(s);
}

int PostRecv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  Lock lock(ShimState::Get().mu());
  common::Status s = Of(qp)->impl->PostRecv(wr, bad_wr);
  return ErrnoOf(s);
}

// Type-2 windows only: they are bound with IBV_WR_BIND_MW work requests (PostSend).
ibv_mw* AllocMw(ibv_pd* pd, ibv_mw_type type) {
  if (type != IBV_MW_TYPE_2) return Fail<ibv_mw>(EOPNOTSUPP);
  Lock lock(ShimState::Get().mu());
  auto mw = Of(pd)->impl->AllocMw();
  if (!mw.ok()) return Fail<ibv_mw>(ErrnoOf(mw.status()));
  auto* m = new ShimMw();
  std::memset(&m->mw, 0, sizeof(m->mw));
  m->mw.context = pd->context;
  m->mw.pd = pd;
  m->mw.rkey = (*mw)->handle()->rkey;
  m->mw.type = IBV_MW_TYPE_2;
  m->impl = std::move(mw).value();
  return &m->mw;
}
int BindMw(ibv_qp*, ibv_mw*, ibv_mw_bind*) { return EOPNOTSUPP; }  // type-1 binds
int DeallocMw(ibv_mw* mw) {
  Lock lock(ShimState::Get().mu());
  delete reinterpret_cast<ShimMw*>(mw);
  return 0;
}
int PostSrqRecv(ibv_srq*, ibv_recv_wr*, ibv_recv_wr**) { return EOPNOTSUPP; }

}  // namespace
}  // namespace braid::soft

using braid::soft::Fail;
using braid::soft::Lock;
using braid::soft::ShimChannel;
using braid::soft::ShimContext;
using braid::soft::ShimCq;
using braid::soft::ShimMr;
using braid::soft::ShimPd;
using braid::soft::ShimQp;
using braid::soft::ShimState;

extern "C" {

ibv_device** ibv_get_device_list(int* num_devices) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  const auto& devices = state.devices();
  auto** list = static_cast<ibv_device**>(calloc(devices.size() + 1, sizeof(ibv_device*)));
  if (list == nullptr) return Fail<ibv_device*>(ENOMEM);
  for (size_t i = 0; i < devices.size(); ++i) list[i] = &devices[i]->dev;
  if (num_devices != nullptr) *num_devices = static_cast<int>(devices.size());
  return list;
}

void ibv_free_device_list(ibv_device** list) { free(list); }

const char* ibv_get_device_name(ibv_device* device) { return device->name; }

__be64 ibv_get_device_guid(ibv_device* device) {
  // The GUID of a RoCE port is derived from its MAC; ours from the NIC's IPv4 address.
  const auto* d = reinterpret_cast<braid::soft::ShimDevice*>(device);
  const auto gid = braid::verbs::Gid::ParseIpv4(d->ipv4);
  uint64_t guid = 0x02000000'00000000ull;
  if (gid) guid |= *gid->Ipv4();
  return htobe64(guid);
}

int ibv_get_device_index(ibv_device* device) {
  ShimState& state = ShimState::Get();
  for (size_t i = 0; i < state.devices().size(); ++i) {
    if (&state.devices()[i]->dev == device) return static_cast<int>(i);
  }
  return -1;
}

ibv_context* ibv_open_device(ibv_device* device) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  const auto* d = reinterpret_cast<braid::soft::ShimDevice*>(device);
  auto opened = state.Open(d->name);
  if (!opened.ok()) return Fail<ibv_context>(braid::soft::ErrnoOf(opened.status()));
  auto* c = new ShimContext();
  std::memset(&c->ctx, 0, sizeof(c->ctx));
  c->ctx.device = device;
  c->ctx.ops.poll_cq = braid::soft::PollCq;
  c->ctx.ops.req_notify_cq = braid::soft::ReqNotifyCq;
  c->ctx.ops.post_send = braid::soft::PostSend;
  c->ctx.ops.post_recv = braid::soft::PostRecv;
  c->ctx.ops.alloc_mw = braid::soft::AllocMw;
  c->ctx.ops.bind_mw = braid::soft::BindMw;
  c->ctx.ops.dealloc_mw = braid::soft::DeallocMw;
  c->ctx.ops.post_srq_recv = braid::soft::PostSrqRecv;
  c->ctx.cmd_fd = -1;
  c->ctx.async_fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  c->ctx.num_comp_vectors = 1;
  pthread_mutex_init(&c->ctx.mutex, nullptr);
  c->device = *opened;
  c->name = d->name;
  return &c->ctx;
}

int ibv_close_device(ibv_context* context) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  std::unique_ptr<ShimContext> c(braid::soft::Of(context));
  if (c->ctx.async_fd >= 0) close(c->ctx.async_fd);
  pthread_mutex_destroy(&c->ctx.mutex);
  state.Close(c->name, lock);
  return 0;
}

int ibv_query_device(ibv_context* context, ibv_device_attr* attr) {
  Lock lock(ShimState::Get().mu());
  const braid::verbs::DeviceInfo& info = braid::soft::Of(context)->device->info();
  std::memset(attr, 0, sizeof(*attr));
  std::snprintf(attr->fw_ver, sizeof(attr->fw_ver), "braid-soft 1");
  attr->node_guid = ibv_get_device_guid(context->device);
  attr->sys_image_guid = attr->node_guid;
  attr->max_mr_size = info.max_mr_size;
  attr->page_size_cap = 4096;
  attr->vendor_id = 0;
  attr->max_qp = 1 << 16;
  attr->max_qp_wr = static_cast<int>(info.max_qp_wr);
  attr->device_cap_flags =
      IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_MEM_WINDOW | IBV_DEVICE_MEM_WINDOW_TYPE_2B;
  attr->max_mw = 1 << 20;
  attr->max_sge = 16;
  attr->max_sge_rd = 16;
  attr->max_cq = 1 << 16;
  attr->max_cqe = static_cast<int>(info.max_cqe);
  attr->max_mr = 1 << 20;
  attr->max_pd = 1 << 16;
  attr->max_qp_rd_atom = 16;
  attr->max_qp_init_rd_atom = 16;
  attr->max_res_rd_atom = 1 << 20;
  attr->atomic_cap = IBV_ATOMIC_NONE;
  attr->max_pkeys = 1;
  attr->phys_port_cnt = 1;
  return 0;
}

int ibv_query_port(ibv_context* context, uint8_t port_num, struct _compat_ibv_port_attr* out) {
  if (port_num != 1) return EINVAL;
  // Not under the shim's lock: the device is the context's for as long as it is open, and
  // QueryPortActive may run beside any other call. It walks the host's interfaces (getifaddrs:
  // milliseconds on a host with hundreds of them), and every post and poll of the process would
  // wait for it (an agent reads its ports once a second, on a thread beside its data plane).
  braid::verbs::Device& device = *braid::soft::Of(context)->device;
  const braid::verbs::DeviceInfo& info = device.info();
  // The link as it is now (the interface holding the NIC's address).
  const braid::common::Result<bool> port = device.QueryPortActive();
  const bool active = port.ok() && *port;
  // The compat struct is a prefix of ibv_port_attr: the inline ibv_query_port zeroed the rest.
  auto* attr = reinterpret_cast<ibv_port_attr*>(out);
  attr->state = active ? IBV_PORT_ACTIVE : IBV_PORT_DOWN;
  attr->max_mtu = IBV_MTU_4096;
  attr->active_mtu = info.active_mtu;
  attr->gid_tbl_len = 1;
  attr->port_cap_flags = 0;
  attr->max_msg_sz = 1u << 31;
  attr->pkey_tbl_len = 1;
  attr->lid = 0;
  attr->sm_lid = 0;
  attr->lmc = 0;
  attr->max_vl_num = 1;
  attr->active_width = 1;             // 1x
  attr->active_speed = 32;            // 25 Gb/s (EDR) per lane, as a RoCE NIC reports
  attr->phys_state = active ? 5 : 3;  // LinkUp : Disabled
  attr->link_layer = IBV_LINK_LAYER_ETHERNET;
  return 0;
}

int ibv_query_gid(ibv_context* context, uint8_t port_num, int index, ibv_gid* gid) {
  if (port_num != 1 || index != 0) return -1;
  Lock lock(ShimState::Get().mu());
  const braid::verbs::DeviceInfo& info = braid::soft::Of(context)->device->info();
  std::memcpy(gid->raw, info.gid.raw.data(), sizeof(gid->raw));
  return 0;
}

int _ibv_query_gid_ex(ibv_context* context, uint32_t port_num, uint32_t gid_index,
                      ibv_gid_entry* entry, uint32_t flags, size_t entry_size) {
  if (flags != 0 || entry_size < sizeof(ibv_gid_entry)) return EINVAL;
  if (port_num != 1 || gid_index != 0) return ENODATA;
  ibv_gid gid;
  if (ibv_query_gid(context, 1, 0, &gid) != 0) return EINVAL;
  std::memset(entry, 0, sizeof(*entry));
  entry->gid = gid;
  entry->gid_index = 0;
  entry->port_num = 1;
  entry->gid_type = IBV_GID_TYPE_ROCE_V2;
  entry->ndev_ifindex = 0;
  return 0;
}

ssize_t _ibv_query_gid_table(ibv_context* context, ibv_gid_entry* entries, size_t max_entries,
                             uint32_t flags, size_t entry_size) {
  if (max_entries < 1) return -EINVAL;
  const int r = _ibv_query_gid_ex(context, 1, 0, entries, flags, entry_size);
  return r == 0 ? 1 : -r;
}

int ibv_query_pkey(ibv_context*, uint8_t port_num, int index, __be16* pkey) {
  if (port_num != 1 || index != 0) return -1;
  *pkey = htobe16(0xFFFF);
  return 0;
}

ibv_pd* ibv_alloc_pd(ibv_context* context) {
  Lock lock(ShimState::Get().mu());
  auto pd = braid::soft::Of(context)->device->AllocPd();
  if (!pd.ok()) return Fail<ibv_pd>(braid::soft::ErrnoOf(pd.status()));
  auto* p = new ShimPd();
  std::memset(&p->pd, 0, sizeof(p->pd));
  p->pd.context = context;
  p->impl = std::move(pd).value();
  return &p->pd;
}

int ibv_dealloc_pd(ibv_pd* pd) {
  Lock lock(ShimState::Get().mu());
  delete braid::soft::Of(pd);
  return 0;
}

ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  constexpr int kSupported = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                             IBV_ACCESS_MW_BIND | IBV_ACCESS_RELAXED_ORDERING |
                             IBV_ACCESS_OPTIONAL_RANGE;
  if ((access & ~kSupported) != 0) return Fail<ibv_mr>(EOPNOTSUPP);
  Lock lock(ShimState::Get().mu());
  // As the kernel pins a registration (ib_umem_get): its pages count against the soft
  // RLIMIT_MEMLOCK, every registration's again, unless the process has CAP_IPC_LOCK.
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t first = reinterpret_cast<uintptr_t>(addr) / page;
  const uint64_t pages =
      length == 0 ? 0 : (reinterpret_cast<uintptr_t>(addr) + length - 1) / page - first + 1;
  uint64_t& pinned = ShimState::Get().pinned_pages();
  if (const braid::verbs::MemlockLimit limit = braid::verbs::ReadMemlock();
      limit.bounded() && pinned + pages > limit.soft / page) {
    return Fail<ibv_mr>(ENOMEM);
  }
  auto mr = braid::soft::Of(pd)->impl->RegisterMemory(addr, length, static_cast<unsigned>(access));
  if (!mr.ok()) return Fail<ibv_mr>(braid::soft::ErrnoOf(mr.status()));
  pinned += pages;
  auto* m = new ShimMr();
  m->pinned_pages = pages;
  std::memset(&m->mr, 0, sizeof(m->mr));
  m->mr.context = pd->context;
  m->mr.pd = pd;
  m->mr.addr = addr;
  m->mr.length = length;
  m->impl = std::move(mr).value();
  m->mr.lkey = m->impl->lkey();
  m->mr.rkey = m->impl->rkey();
  return &m->mr;
}

ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova,
                         unsigned int access) {
  // Remote addresses are virtual addresses here: only iova == addr can be honoured.
  if (iova != reinterpret_cast<uint64_t>(addr)) return Fail<ibv_mr>(EOPNOTSUPP);
  return ibv_reg_mr(pd, addr, length, static_cast<int>(access));
}

ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova, int access) {
  return ibv_reg_mr_iova2(pd, addr, length, iova, static_cast<unsigned>(access));
}

int ibv_dereg_mr(ibv_mr* mr) {
  Lock lock(ShimState::Get().mu());
  auto* m = reinterpret_cast<ShimMr*>(mr);
  ShimState::Get().pinned_pages() -= m->pinned_pages;
  delete m;
  return 0;
}

int ibv_rereg_mr(ibv_mr*, int, ibv_pd*, void*, size_t, int) { return EOPNOTSUPP; }

ibv_comp_channel* ibv_create_comp_channel(ibv_context* context) {
  const int fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  if (fd < 0) return nullptr;
  auto* ch = new ShimChannel();
  ch->channel.context = context;
  ch->channel.fd = fd;
  ch->channel.refcnt = 0;
  return &ch->channel;
}

int ibv_destroy_comp_channel(ibv_comp_channel* channel) {
  Lock lock(ShimState::Get().mu());
  auto* ch = reinterpret_cast<ShimChannel*>(channel);
  if (ch->channel.refcnt != 0) return EBUSY;
  close(ch->channel.fd);
  delete ch;
  return 0;
}

ibv_cq* ibv_create_cq(ibv_context* context, int cqe, void* cq_context, ibv_comp_channel* channel,
                      int comp_vector) {
  if (comp_vector != 0) return Fail<ibv_cq>(EINVAL);
  Lock lock(ShimState::Get().mu());
  auto cq = braid::soft::Of(context)->device->CreateCq(cqe);
  if (!cq.ok()) return Fail<ibv_cq>(braid::soft::ErrnoOf(cq.status()));
  auto* c = new ShimCq();
  std::memset(&c->cq, 0, sizeof(c->cq));
  c->cq.context = context;
  c->cq.channel = channel;
  c->cq.cq_context = cq_context;
  c->impl = std::move(cq).value();
  c->cq.cqe = c->impl->capacity();
  pthread_mutex_init(&c->cq.mutex, nullptr);
  pthread_cond_init(&c->cq.cond, nullptr);
  if (channel != nullptr) {
    c->channel = reinterpret_cast<ShimChannel*>(channel);
    ++channel->refcnt;
  }
  return &c->cq;
}

int ibv_resize_cq(ibv_cq* cq, int cqe) {
  Lock lock(ShimState::Get().mu());
  ShimCq* c = braid::soft::Of(cq);
  braid::common::Status s = c->impl->Resize(cqe);
  if (!s.ok()) return braid::soft::ErrnoOf(s);
  cq->cqe = c->impl->capacity();
  return 0;
}

int ibv_destroy_cq(ibv_cq* cq) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  ShimCq* c = braid::soft::Of(cq);
  state.Disarm(c);
  if (c->channel != nullptr) {
    std::erase(c->channel->events, c);
    --c->channel->channel.refcnt;
  }
  pthread_cond_destroy(&c->cq.cond);
  pthread_mutex_destroy(&c->cq.mutex);
  delete c;
  return 0;
}

int ibv_get_cq_event(ibv_comp_channel* channel, ibv_cq** cq, void** cq_context) {
  auto* ch = reinterpret_cast<ShimChannel*>(channel);
  uint64_t one = 0;
  if (read(ch->channel.fd, &one, sizeof(one)) != sizeof(one)) return -1;  // errno from read
  Lock lock(ShimState::Get().mu());
  if (ch->events.empty()) {  // its CQ was destroyed meanwhile
    errno = EAGAIN;
    return -1;
  }
  ShimCq* c = ch->events.front();
  ch->events.pop_front();
  *cq = &c->cq;
  *cq_context = c->cq.cq_context;
  return 0;
}

void ibv_ack_cq_events(ibv_cq* cq, unsigned int nevents) {
  Lock lock(ShimState::Get().mu());
  cq->comp_events_completed += nevents;
}

ibv_qp* ibv_create_qp(ibv_pd* pd, ibv_qp_init_attr* init) {
  if (init->qp_type != IBV_QPT_RC || init->srq != nullptr) return Fail<ibv_qp>(EOPNOTSUPP);
  if (init->send_cq == nullptr || init->recv_cq == nullptr) return Fail<ibv_qp>(EINVAL);
  Lock lock(ShimState::Get().mu());
  braid::verbs::QpCreateParams params;
  params.send_cq = braid::soft::Of(init->send_cq)->impl.get();
  params.recv_cq = braid::soft::Of(init->recv_cq)->impl.get();
  params.caps.max_send_wr = init->cap.max_send_wr;
  params.caps.max_recv_wr = init->cap.max_recv_wr;
  params.caps.max_send_sge = init->cap.max_send_sge;
  params.caps.max_recv_sge = init->cap.max_recv_sge;
  params.caps.max_inline_data = init->cap.max_inline_data;
  params.sq_sig_all = init->sq_sig_all != 0;
  auto qp = braid::soft::Of(pd)->impl->CreateQp(params);
  if (!qp.ok()) return Fail<ibv_qp>(braid::soft::ErrnoOf(qp.status()));
  auto* q = new ShimQp();
  std::memset(&q->qp, 0, sizeof(q->qp));
  q->impl = std::move(qp).value();
  q->qp.context = pd->context;
  q->qp.qp_context = init->qp_context;
  q->qp.pd = pd;
  q->qp.send_cq = init->send_cq;
  q->qp.recv_cq = init->recv_cq;
  q->qp.qp_num = q->impl->qp_num();
  q->qp.state = IBV_QPS_RESET;
  q->qp.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&q->qp.mutex, nullptr);
  pthread_cond_init(&q->qp.cond, nullptr);
  q->cap = init->cap;
  q->attr.cap = init->cap;
  q->attr.qp_state = IBV_QPS_RESET;
  return &q->qp;
}

int ibv_modify_qp(ibv_qp* qp, ibv_qp_attr* attr, int attr_mask) {
  Lock lock(ShimState::Get().mu());
  ShimQp* q = braid::soft::Of(qp);
  q->attr.qp_state = braid::soft::StateOf(*q->impl);
  const int err = braid::soft::ModifyQp(*q->impl, q->attr, *attr, attr_mask);
  if (err != 0) return err;
  qp->state = q->attr.qp_state;
  return 0;
}

int ibv_query_qp(ibv_qp* qp, ibv_qp_attr* attr, int attr_mask, ibv_qp_init_attr* init_attr) {
  (void)attr_mask;  // everything known is returned
  Lock lock(ShimState::Get().mu());
  ShimQp* q = braid::soft::Of(qp);
  q->attr.qp_state = braid::soft::StateOf(*q->impl);
  qp->state = q->attr.qp_state;
  *attr = q->attr;
  attr->cur_qp_state = q->attr.qp_state;
  attr->cap = q->cap;
  if (init_attr != nullptr) {
    std::memset(init_attr, 0, sizeof(*init_attr));
    init_attr->qp_context = qp->qp_context;
    init_attr->send_cq = qp->send_cq;
    init_attr->recv_cq = qp->recv_cq;
    init_attr->cap = q->cap;
    init_attr->qp_type = IBV_QPT_RC;
  }
  return 0;
}

int ibv_destroy_qp(ibv_qp* qp) {
  Lock lock(ShimState::Get().mu());
  ShimQp* q = braid::soft::Of(qp);
  pthread_cond_destroy(&q->qp.cond);
  pthread_mutex_destroy(&q->qp.mutex);
  delete q;
  return 0;
}

// Not supported on soft NICs: clean refusals.
ibv_srq* ibv_create_srq(ibv_pd*, ibv_srq_init_attr*) { return Fail<ibv_srq>(EOPNOTSUPP); }
ibv_ah* ibv_create_ah(ibv_pd*, ibv_ah_attr*) { return Fail<ibv_ah>(EOPNOTSUPP); }
int ibv_destroy_srq(ibv_srq*) { return EINVAL; }  // none was ever created
int ibv_destroy_ah(ibv_ah*) { return EINVAL; }
ibv_ah* ibv_create_ah_from_wc(ibv_pd*, ibv_wc*, ibv_grh*, uint8_t) {
  return Fail<ibv_ah>(EOPNOTSUPP);
}
ibv_qp_ex* ibv_qp_to_qp_ex(ibv_qp*) { return Fail<ibv_qp_ex>(EOPNOTSUPP); }
int ibv_attach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return EOPNOTSUPP; }
int ibv_detach_mcast(ibv_qp*, const ibv_gid*, uint16_t) { return EOPNOTSUPP; }
int ibv_query_ece(ibv_qp*, ibv_ece*) { return EOPNOTSUPP; }
int ibv_set_ece(ibv_qp*, ibv_ece*) { return EOPNOTSUPP; }
ibv_context* ibv_import_device(int) { return Fail<ibv_context>(EOPNOTSUPP); }

int ibv_get_async_event(ibv_context* context, ibv_async_event* event) {
  // Blocks unless the program made async_fd non-blocking (then EAGAIN when there is none).
  uint64_t one = 0;
  if (read(context->async_fd, &one, sizeof(one)) != sizeof(one)) return -1;
  Lock lock(ShimState::Get().mu());
  ShimContext* c = braid::soft::Of(context);
  if (c->async_events.empty()) {
    errno = EAGAIN;
    return -1;
  }
  *event = c->async_events.front();
  c->async_events.pop_front();
  return 0;
}

void ibv_ack_async_event(ibv_async_event*) {}

// libibverbs-private (IBVERBS_PRIVATE_34), used by ibv_devinfo: every GID of a soft NIC is RoCE v2
// (enum ibv_gid_type_sysfs: 0 IB/RoCE v1, 1 RoCE v2).
int ibv_query_gid_type(ibv_context*, uint8_t port_num, unsigned int index, int* type) {
  if (port_num != 1 || index != 0) return -1;
  *type = 1;
  return 0;
}

}  // extern "C"

// Fault hooks for tests of verbs programs (version BRAID_SOFT_VERBS_1; find them with dlsym).
// Each returns 0 or an errno. A held QP's frames wait; dropped frames are lost (the requester
// retransmits); a broken QP's connection is closed (its work ends in RETRY_EXC_ERR, then flushes);
// a NIC taken down has every connected QP broken.
extern "C" {

int braid_soft_verbs_hold_qp(ibv_qp* qp, int hold) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  if (state.fabric() == nullptr) return ENODEV;
  return braid::soft::ErrnoOf(state.fabric()->HoldQp(*braid::soft::Of(qp)->impl, hold != 0));
}

int braid_soft_verbs_drop_next(ibv_qp* qp, int count) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  if (state.fabric() == nullptr || count < 0) return count < 0 ? EINVAL : ENODEV;
  return braid::soft::ErrnoOf(state.fabric()->DropNext(*braid::soft::Of(qp)->impl, count));
}

int braid_soft_verbs_break_qp(ibv_qp* qp) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  if (state.fabric() == nullptr) return ENODEV;
  return braid::soft::ErrnoOf(state.fabric()->BreakQp(*braid::soft::Of(qp)->impl));
}

int braid_soft_verbs_nic_down(ibv_context* context) {
  ShimState& state = ShimState::Get();
  Lock lock(state.mu());
  if (state.fabric() == nullptr) return ENODEV;
  const auto* device =
      dynamic_cast<const braid::soft::SoftDevice*>(braid::soft::Of(context)->device);
  if (device == nullptr) return ENODEV;
  (void)state.fabric()->BreakDevice(device);
  return 0;
}

}  // extern "C"
