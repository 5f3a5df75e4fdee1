// The two-process conformance harness's wire protocol: one fixed-size Request and Response per
// call over a SOCK_SEQPACKET socketpair between the test process and its forked child, which owns
// devices 1 and 3 (remote_harness.cc: the parent's proxies; remote_harness_server.cc: the child).
#ifndef BRAID_TESTS_CONFORMANCE_REMOTE_HARNESS_WIRE_H_
#define BRAID_TESTS_CONFORMANCE_REMOTE_HARNESS_WIRE_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "dataplane/common/status.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/verbs/qp_params.h"

namespace braid::testing::remote {

using common::Status;
using common::StatusCode;

constexpr int kMaxWrs = 8;
constexpr int kMaxSges = 4;
constexpr int kMaxWcs = 16;

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

inline Status ToStatus(const Response& r) {
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

inline void SetStatus(Response* r, const Status& s) {
  r->code = s.code();
  std::snprintf(r->message, sizeof(r->message), "%.*s", static_cast<int>(s.message().size()),
                s.message().data());
}

// The child: serves requests on `fd` with soft NICs soft1 (127.0.0.2) and soft3 (127.0.0.4) on
// a TcpFabric listening on `port`, until the parent quits or goes away. Returns the exit code.
int RunServer(int fd, uint16_t port);

}  // namespace braid::testing::remote

#endif  // BRAID_TESTS_CONFORMANCE_REMOTE_HARNESS_WIRE_H_
