// RingTransport: a TransferSession's operations through a local session's shared-memory rings
// (transfer_transport.h, doc/local_data_path.md).
//
// Send copies entries into the submission ring (ringing the engine only when it sleeps); the
// reader thread reaps completions, spinning a short while when the ring runs dry, then sleeping on
// the client's doorbell (or spinning for good in busy-poll mode). Remote regions are bound to the
// session once (BindRemote) and their handles kept.

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <utility>

#include "client_sdk/src/ring_idle.h"
#include "client_sdk/src/transfer_transport.h"
#include "dataplane/common/named_thread.h"
#include "dataplane/common/outcome.h"
#include "dataplane/session/session_client.h"

namespace braid::client::internal {

namespace {

using session::CompletionEntry;
using session::RingOp;
using session::SubmitEntry;

constexpr size_t kBatch = 64;  // entries copied per Submit / Reap call

RingOp RingOpOf(v1::Op op) {
  switch (op) {
    case v1::OP_READ:
      return RingOp::kRead;
    case v1::OP_WRITE_WITH_IMM:
      return RingOp::kWriteWithImm;
    default:
      return RingOp::kWrite;
  }
}

TransferResult FromEntry(const CompletionEntry& c) {
  TransferResult r;
  r.op_id = c.user_data;
  r.bytes = c.length;
  const auto code = static_cast<common::StatusCode>(c.status);
  if (code == common::StatusCode::kOk) {
    r.wc_status = common::OutcomeName(IBV_WC_SUCCESS);
    return r;
  }
  if (c.detail != 0) {
    r.status = Status::FromCode(
        code, std::string("the agent refused the operation: ") +
                  std::string(session::Describe(static_cast<session::SubmitField>(c.detail))));
  } else if (c.wc_status != 0) {
    r.wc_status = common::OutcomeName(static_cast<int>(c.wc_status));
    r.status = Status::FromCode(code, "virtual WR failed: " + r.wc_status);
  } else if (code == common::StatusCode::kDeadlineExceeded) {
    r.status = Status::DeadlineExceeded("the operation missed its deadline in the agent");
  } else if (code == common::StatusCode::kNoResource) {
    r.status = Status::NoResource(
        "the agent holds as many transfers as it takes, from this caller "
        "(max_transfers_per_caller) "
        "or from all (max_transfers): submit again after completions");
  } else {
    r.status = Status::FromCode(code, "the agent did not carry out the operation (" +
                                          std::string(common::StatusCodeName(code)) + ")");
  }
  return r;
}

class RingTransport final : public Transport {
 public:
  RingTransport(std::shared_ptr<AgentClient> agent, std::unique_ptr<session::SessionClient> client,
                bool busy_poll)
      : agent_(std::move(agent)), client_(std::move(client)), busy_poll_(busy_poll) {}
  ~RingTransport() override {
    if (reader_.joinable()) Close();
  }

  uint32_t window() const override { return client_->cq_entries(); }
  const char* kind() const override { return "ring"; }

  void Start(CompletionSink* sink) override {
    reader_ = common::NamedThread("braid-ring-rd", [this, sink] { ReadLoop(sink); });
  }

  std::vector<std::pair<uint64_t, Status>> Send(uint64_t vqp_id,
                                                std::span<const WireOp> ops) override {
    std::vector<std::pair<uint64_t, Status>> refused;
    SubmitEntry batch[kBatch];
    size_t n = 0;
    for (const WireOp& w : ops) {
      const TransferOp& op = *w.op;
      Result<uint32_t> handle = Bind(vqp_id, op.remote);
      if (!handle.ok()) {
        refused.emplace_back(w.op_id, handle.status());
        continue;
      }
      if (op.local_region > UINT32_MAX) {
        refused.emplace_back(
            w.op_id, Status::OutOfRange("local region id " + std::to_string(op.local_region) +
                                        " does not fit a ring entry"));
        continue;
      }
      SubmitEntry& e = batch[n++];
      e = {};
      e.user_data = w.op_id;
      e.vqp_id = vqp_id;
      e.local_region = static_cast<uint32_t>(op.local_region);
      e.local_offset = op.local_offset;
      e.remote_region = *handle;
      e.remote_offset = op.remote_offset;
      e.length = op.length;
      e.imm = op.op == v1::OP_WRITE_WITH_IMM ? op.imm : 0;
      e.timeout_ms = w.timeout_ms;
      e.op = static_cast<uint8_t>(RingOpOf(op.op));
      if (n == kBatch) {
        Push({batch, n}, &refused);
        n = 0;
      }
    }
    if (n > 0) Push({batch, n}, &refused);
    return refused;
  }

  void Close() override {
    stop_.store(true, std::memory_order_relaxed);
    client_->Interrupt();  // the reader may sleep on the doorbell
    reader_.join();
    client_.reset();  // closes the session socket: the agent ends the session
  }

  // In-flight entries cannot be called back from the engine; the session fails them at once and
  // ignores their completions. Closing the session (Close) reclaims them in the agent.
  void Cancel() override {}

 private:
  // The handle of `remote` for this session: bound on first use, and again when the peer's grant
  // changed (a region granted anew has new keys). Found without allocating.
  Result<uint32_t> Bind(uint64_t vqp_id, const v1::RemoteRegion& remote) {
    auto it = bound_.find({vqp_id, remote.region_id()});
    if (it != bound_.end() && SameGrant(it->second.remote, remote)) return it->second.handle;
    BRAID_ASSIGN_OR_RETURN(uint32_t handle, agent_->BindRemote(client_->id(), vqp_id, remote));
    bound_[{vqp_id, remote.region_id()}] = {remote, handle};
    return handle;
  }

  static bool SameGrant(const v1::RemoteRegion& a, const v1::RemoteRegion& b) {
    if (a.agent_id() != b.agent_id() || a.vqp_id() != b.vqp_id() || a.addr() != b.addr() ||
        a.length() != b.length() || a.keys_size() != b.keys_size()) {
      return false;
    }
    for (int i = 0; i < a.keys_size(); ++i) {
      if (a.keys(i).device() != b.keys(i).device() || a.keys(i).rkey() != b.keys(i).rkey()) {
        return false;
      }
    }
    return true;
  }

  // Copies `entries` into the submission ring. The session never has more in flight than the
  // completion ring holds, which the submission ring matches, so they fit at once unless the
  // engine is slow to take the previous ones: then this waits for room.
  void Push(std::span<const SubmitEntry> entries,
            std::vector<std::pair<uint64_t, Status>>* refused) {
    while (!entries.empty()) {
      const uint32_t n = client_->Submit(entries);
      entries = entries.subspan(n);
      if (n > 0) continue;
      if (client_->broken() || client_->AgentGone()) {
        for (const SubmitEntry& e : entries) {
          refused->emplace_back(e.user_data,
                                Status::IoError("the local session to the agent ended"));
        }
        break;
      }
      std::this_thread::yield();
    }
  }

  void ReadLoop(CompletionSink* sink) {
    CompletionEntry out[kBatch];
    RingIdle idle(busy_poll_);
    while (!stop_.load(std::memory_order_relaxed)) {
      const uint32_t n = client_->Reap(out);
      for (uint32_t i = 0; i < n; ++i) sink->Complete(FromEntry(out[i]));
      if (n > 0) {
        idle.Busy();
        continue;
      }
      if (client_->broken()) {
        sink->End(Status::IoError("the agent broke the local session's ring protocol"));
        return;
      }
      if (!idle.Idle(*client_)) {
        sink->End(Status::IoError("agent " + agent_->target() + " ended the local session"));
        return;
      }
    }
  }

  std::shared_ptr<AgentClient> agent_;
  std::unique_ptr<session::SessionClient> client_;
  const bool busy_poll_;
  struct Bound {
    v1::RemoteRegion remote;
    uint32_t handle;
  };
  // By (VQP, the peer's region id); Send's thread only.
  std::map<std::pair<uint64_t, uint64_t>, Bound> bound_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

}  // namespace

Result<std::unique_ptr<Transport>> OpenRingTransport(std::shared_ptr<AgentClient> agent,
                                                     const std::string& socket_path,
                                                     uint32_t entries, bool busy_poll) {
  BRAID_ASSIGN_OR_RETURN(std::unique_ptr<session::SessionClient> client,
                         session::SessionClient::Connect(socket_path, {entries, entries, 2}));
  return std::unique_ptr<Transport>(
      std::make_unique<RingTransport>(std::move(agent), std::move(client), busy_poll));
}

}  // namespace braid::client::internal
