// The engine's completions: polling the virtual CQ, notifications, reporting each transfer's
// outcome to its sink or its session's completion ring, and releasing its slot.
#include <arpa/inet.h>

#include <string>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

namespace {

// What a failed virtual WR means to the client.
Status WcError(ibv_wc_status status) {
  const std::string what = std::string("virtual WR failed: ") + ibv_wc_status_str(status);
  switch (status) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
      return Status::PermissionDenied(what);
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
      return Status::InvalidArgument(what);
    default:
      return Status::QpError(what);
  }
}

}  // namespace

int Engine::PollCompletions() {
  int total = 0;
  for (int round = 0; round < 4; ++round) {
    Result<int> n = cq_->Poll(loop_.wcs);
    if (!n.ok() || *n == 0) break;
    for (int i = 0; i < *n; ++i) OnVirtualWc(loop_.wcs[static_cast<size_t>(i)]);
    total += *n;
    if (*n < static_cast<int>(loop_.wcs.size())) break;
  }
  return total;
}

void Engine::OnVirtualWc(const vqp::VirtualWc& wc) {
  if (wc.wr_id & kRecvWrBit) {
    auto it = vqps_.find(wc.wr_id & ~kRecvWrBit);
    if (it == vqps_.end()) return;  // flushed by a destroy
    VqpSlot& slot = *it->second;
    if (wc.status == IBV_WC_WR_FLUSH_ERR) {
      // A single-QP VQP's receives die with its QP; they are posted again once it is back.
      PostNotifyReceives(slot);
      return;
    }
    Notification n;
    n.vqp_id = slot.id;
    n.seq = slot.notifications++;
    n.imm = ntohl(wc.imm_data);
    n.byte_len = wc.byte_len;
    n.status = wc.status;
    ++stats_.notifications;
    FanOut(slot.watchers, n);
    if (!slot.session_watchers.empty()) {
      session::NotifyEntry entry{};
      entry.vqp_id = n.vqp_id;
      entry.seq = n.seq;
      entry.byte_len = n.byte_len;
      entry.imm = n.imm;
      entry.kind = static_cast<uint8_t>(session::NotifyKind::kNotification);
      entry.wc_status = static_cast<uint8_t>(n.status);
      // A session that fell behind leaves the list (Notify ended its watches).
      for (size_t i = 0; i < slot.session_watchers.size();) {
        if (Notify(*slot.session_watchers[i], entry)) ++i;
      }
    }
    PostNotifyReceives(slot);
    return;
  }
  const auto index = static_cast<uint32_t>(wc.wr_id & 0xFFFFFFFF);
  const auto generation = static_cast<uint32_t>(wc.wr_id >> 32);
  if (index >= transfers_.slots.size()) return;
  Transfer& t = transfers_.slots[index];
  if (!t.active || !t.posted || t.generation != generation) return;
  t.posted = false;
  --transfers_.posted;
  if (!t.reported) {
    // Bytes moved through a file cut short under the agent never reached (or came from) it.
    const ibv_wc_status status =
        wc.status == IBV_WC_SUCCESS && t.local_memory != nullptr && t.local_memory->cut_short()
            ? IBV_WC_LOC_PROT_ERR
            : wc.status;
    Complete(index, status == IBV_WC_SUCCESS ? Status::Ok() : WcError(status), status, true);
  }
  Release(index);
}

void Engine::Complete(uint32_t index, Status status, ibv_wc_status wc_status, bool posted) {
  Transfer& t = transfers_.slots[index];
  t.reported = true;
  --transfers_.in_flight;
  const uint64_t latency = NowNs() - t.start_ns;
  int outcome = -1;
  if (posted) {
    outcome = wc_status;
  } else if (status.code() == common::StatusCode::kDeadlineExceeded) {
    outcome = kOutcomeDeadline;
  } else if (status.code() == common::StatusCode::kCancelled) {
    outcome = kOutcomeCancelled;
  }
  if (outcome >= 0) {  // a virtual WR outcome (requests refused up front are not)
    ++stats_.completions[static_cast<size_t>(t.op)][static_cast<size_t>(outcome)];
    const double seconds = static_cast<double>(latency) * 1e-9;
    size_t bucket = 0;
    while (bucket < kLatencyBounds.size() && seconds > kLatencyBounds[bucket]) ++bucket;
    ++stats_.latency_buckets[bucket];
    stats_.latency_sum_seconds += seconds;
  }
  if (t.session != nullptr) {
    --t.session->in_flight;
    session::CompletionEntry c{};
    c.user_data = t.op_id;
    c.length = status.ok() ? t.length : 0;
    c.status = static_cast<uint32_t>(status.code());
    c.wc_status = posted ? static_cast<uint32_t>(wc_status) : 0;
    WriteCompletion(*t.session, c);
    t.session = nullptr;
    return;
  }
  TransferResult r;
  r.op_id = t.op_id;
  r.status = std::move(status);
  r.wc_status = wc_status;
  r.posted = posted;
  r.bytes = r.status.ok() ? t.length : 0;
  r.latency_ns = latency;
  if (!t.sink->results.Push(std::move(r)).ok()) t.sink->dropped.fetch_add(1);
}

void Engine::Release(uint32_t index) {
  Transfer& t = transfers_.slots[index];
  if (t.region_id != 0) {
    auto it = regions_.by_id.find(t.region_id);
    if (it != regions_.by_id.end()) --it->second->in_flight;
  }
  if (t.has_remote_keys) {
    // A destroyed VQP took its key cache with it.
    if (vqps_.find(t.vqp_id) != vqps_.end()) --t.remote_keys->second.users;
    t.has_remote_keys = false;
  }
  if (t.usage != nullptr) {
    --t.usage->transfers;
    t.usage = nullptr;
  }
  t.active = false;
  t.sink.reset();
  ++t.generation;
  transfers_.free.push_back(index);
}

}  // namespace braid::engine
