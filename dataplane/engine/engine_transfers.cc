// The engine's transfers: validation, posting, backlogs, completions, deadlines, notifications.
#include <arpa/inet.h>

#include <algorithm>
#include <string>

#include "dataplane/common/quote.h"
#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

namespace {

std::string Range(uint64_t offset, uint64_t length) {
  return "[" + std::to_string(offset) + ", " + std::to_string(offset) + " + " +
         std::to_string(length) + ")";
}

// offset + length within [0, size], without overflow.
bool Within(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

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

void Engine::StartTransfer(const TransferRequest& request, std::shared_ptr<TransferSink> sink) {
  uint32_t index;
  if (!transfers_.stopped.empty()) {
    TransferResult r;
    r.op_id = request.op_id;
    r.status = Status::Cancelled(transfers_.stopped);
    if (!sink->results.Push(std::move(r)).ok()) sink->dropped.fetch_add(1);
    return;
  }
  if (!transfers_.free.empty()) {
    index = transfers_.free.back();
    transfers_.free.pop_back();
  } else if (transfers_.slots.size() < options_.max_transfers) {
    index = static_cast<uint32_t>(transfers_.slots.size());
    transfers_.slots.emplace_back();
  } else {
    TransferResult r;
    r.op_id = request.op_id;
    r.status = Status::NoResource();
    if (!sink->results.Push(std::move(r)).ok()) sink->dropped.fetch_add(1);
    return;
  }
  Transfer& t = transfers_.slots[index];
  t.active = true;
  t.reported = false;
  t.posted = false;
  t.op_id = request.op_id;
  t.vqp_id = request.vqp_id;
  t.region_id = 0;
  t.has_remote_keys = false;
  t.op = request.op;
  t.length = request.length;
  t.start_ns = NowNs();
  const uint32_t timeout =
      request.timeout_ms != 0 ? request.timeout_ms : options_.default_timeout_ms;
  t.deadline_ns = t.start_ns + uint64_t{timeout} * 1000000;
  t.sink = std::move(sink);
  ++transfers_.in_flight;
  Status s = PrepareTransfer(request, t);
  if (!s.ok()) {
    Complete(index, std::move(s), IBV_WC_SUCCESS, false);
    Release(index);
    return;
  }
  // Stale: mostly transfers that completed before their deadline.
  deadlines_.Push({t.deadline_ns, index, t.generation},
                  [this](const DeadlineHeap::Entry& d) { return !DeadlineLive(d); });
  VqpSlot& slot = *vqps_[t.vqp_id];
  if (!slot.backlog.empty() || !PostTransfer(index)) {
    slot.backlog.push_back(index);
    ++transfers_.backlogged;
    if (!slot.on_backlog_list) {
      slot.on_backlog_list = true;
      transfers_.backlogged_vqps.push_back(&slot);
    }
  }
}

Status Engine::PrepareTransfer(const TransferRequest& request, Transfer& t) {
  BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, FindVqp(request.vqp_id, request.owner));
  if (!slot->vqp->connected()) {
    return Status::FailedPrecondition("virtual QP " + std::to_string(request.vqp_id) +
                                      " is not connected");
  }
  if (slot->state == VqpState::kFailed) {
    return Status::FailedPrecondition("virtual QP " + std::to_string(request.vqp_id) +
                                      " has failed (" + slot->failure +
                                      "); destroy it and connect a new one");
  }
  if (request.length == 0) return Status::InvalidArgument("transfer length must be > 0");
  BRAID_ASSIGN_OR_RETURN(RegionSlot * found, FindRegion(request.local_region, request.owner));
  RegionSlot& region = *found;
  if (region.owner != slot->owner) {  // an operator's call may name both: their PDs differ
    return Status::FailedPrecondition(
        "region " + std::to_string(region.id) + " and virtual QP " + std::to_string(slot->id) +
        " belong to different owners: a VQP moves only its owner's memory");
  }
  if (!Within(request.local_offset, request.length, region.shm->length())) {
    return Status::OutOfRange("local range " + Range(request.local_offset, request.length) +
                              " is past region " + std::to_string(region.id) + " (" +
                              std::to_string(region.shm->length()) + " bytes)");
  }
  const RemoteRegion& remote = request.remote;
  if (remote.agent_id == options_.agent_id) {
    return Status::InvalidArgument("remote region " + std::to_string(remote.region_id) +
                                   " belongs to this agent (" + options_.agent_id +
                                   "); a transfer targets the peer's memory");
  }
  if (remote.vqp_id != 0 && remote.vqp_id != slot->peer_vqp_id) {
    return Status::FailedPrecondition(
        "remote region " + std::to_string(remote.region_id) + " is granted to VQP " +
        std::to_string(remote.vqp_id) + " of its agent, not to this VQP's peer (VQP " +
        std::to_string(slot->peer_vqp_id) + "): its owner must grant that VQP access");
  }
  if (!Within(request.remote_offset, request.length, remote.length) ||
      remote.addr + remote.length < remote.addr) {
    return Status::OutOfRange("remote range " + Range(request.remote_offset, request.length) +
                              " is past remote region " + std::to_string(remote.region_id) + " (" +
                              std::to_string(remote.length) + " bytes)");
  }
  BRAID_ASSIGN_OR_RETURN(uint32_t local_keys, LocalKeys(*slot, region));
  BRAID_ASSIGN_OR_RETURN(uint32_t remote_keys, RemoteKeys(*slot, remote, t));
  vqp::VirtualSendWr& wr = t.wr;
  wr = {};
  wr.wr_id = (uint64_t{t.generation} << 32) | static_cast<uint64_t>(&t - transfers_.slots.data());
  switch (request.op) {
    case TransferOp::kWrite:
      wr.opcode = IBV_WR_RDMA_WRITE;
      break;
    case TransferOp::kWriteWithImm:
      wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
      break;
    case TransferOp::kRead:
      wr.opcode = IBV_WR_RDMA_READ;
      break;
  }
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.local_addr = reinterpret_cast<uint64_t>(region.shm->addr()) + request.local_offset;
  wr.length = request.length;
  wr.local_keys = local_keys;
  wr.remote_addr = remote.addr + request.remote_offset;
  wr.remote_keys = remote_keys;
  wr.imm_data = htonl(request.imm);
  t.region_id = region.id;
  ++region.in_flight;
  return Status::Ok();
}

Result<uint32_t> Engine::LocalKeys(VqpSlot& slot, RegionSlot& region) {
  auto it = slot.local_uses.find(region.id);
  if (it != slot.local_uses.end()) return it->second.handle;
  // First use of the region by this VQP: register it in the VQP's domains, local access only.
  BRAID_ASSIGN_OR_RETURN(Registration registration, Register(slot, region, IBV_ACCESS_LOCAL_WRITE));
  Result<uint32_t> handle = slot.vqp->AddLocalKeys(registration.Keys(/*remote=*/false));
  if (!handle.ok()) {
    if (handle.status().code() == common::StatusCode::kNoResource) {
      return Status::NoResource();
    }
    return handle.status();
  }
  slot.local_uses.emplace(region.id, LocalUse{std::move(registration), *handle});
  return *handle;
}

Result<uint32_t> Engine::RemoteKeys(VqpSlot& slot, const RemoteRegion& remote, Transfer& t) {
  std::vector<uint32_t> rkeys;
  for (const std::string& device : slot.peer_devices) {
    auto it = std::find_if(remote.keys.begin(), remote.keys.end(),
                           [&](const auto& k) { return k.first == device; });
    if (it == remote.keys.end()) {
      return Status::InvalidArgument("remote region " + std::to_string(remote.region_id) +
                                     " has no key for the peer's device " + common::Quote(device));
    }
    rkeys.push_back(it->second);
  }
  auto key = std::make_tuple(remote.addr, remote.length, rkeys);
  auto it = slot.remote_handles.find(key);
  if (it == slot.remote_handles.end()) {
    Result<uint32_t> handle = slot.vqp->AddRemoteKeys(rkeys);
    if (!handle.ok() && handle.status().code() == common::StatusCode::kNoResource) {
      // The table is full: evict the least recently used entry no transfer uses.
      auto victim = slot.remote_handles.end();
      for (auto e = slot.remote_handles.begin(); e != slot.remote_handles.end(); ++e) {
        if (e->second.users == 0 &&
            (victim == slot.remote_handles.end() || e->second.last_use < victim->second.last_use)) {
          victim = e;
        }
      }
      if (victim == slot.remote_handles.end()) return Status::NoResource();  // all in use
      (void)slot.vqp->RemoveRemoteKeys(victim->second.handle);
      slot.remote_handles.erase(victim);
      handle = slot.vqp->AddRemoteKeys(rkeys);
    }
    if (!handle.ok()) return handle.status();
    it = slot.remote_handles.emplace(std::move(key), RemoteKeysEntry{*handle, 0, 0}).first;
  }
  ++it->second.users;
  it->second.last_use = ++slot.remote_uses;
  t.remote_keys = it;
  t.has_remote_keys = true;
  return it->second.handle;
}

bool Engine::PostTransfer(uint32_t index) {
  Transfer& t = transfers_.slots[index];
  VqpSlot& slot = *vqps_[t.vqp_id];
  Status s = slot.vqp->PostSend(t.wr);
  if (s.ok()) Attend(slot);
  if (s.ok()) {
    t.posted = true;
    ++transfers_.posted;
    return true;
  }
  if (s.code() == common::StatusCode::kNoResource) return false;
  Complete(index, std::move(s), IBV_WC_SUCCESS, false);
  Release(index);
  return true;
}

void Engine::PumpBacklogs() {
  for (size_t i = 0; i < transfers_.backlogged_vqps.size();) {
    VqpSlot& slot = *transfers_.backlogged_vqps[i];
    auto& backlog = slot.backlog;
    while (!backlog.empty()) {
      const uint32_t index = backlog.front();
      Transfer& t = transfers_.slots[index];
      if (!t.reported && !PostTransfer(index)) break;
      if (t.reported && !t.posted) Release(index);  // past its deadline while waiting
      backlog.pop_front();
      --transfers_.backlogged;
    }
    if (!backlog.empty()) {
      ++i;
      continue;
    }
    slot.on_backlog_list = false;
    transfers_.backlogged_vqps[i] = transfers_.backlogged_vqps.back();
    transfers_.backlogged_vqps.pop_back();
  }
}

void Engine::FailBacklog(VqpSlot& slot, const Status& status) {
  for (uint32_t index : slot.backlog) {
    if (!transfers_.slots[index].reported) {
      Complete(index, status, IBV_WC_WR_FLUSH_ERR, false);
    }
    Release(index);
    --transfers_.backlogged;
  }
  slot.backlog.clear();
}

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
    Complete(index, wc.status == IBV_WC_SUCCESS ? Status::Ok() : WcError(wc.status), wc.status,
             true);
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
  t.active = false;
  t.sink.reset();
  ++t.generation;
  transfers_.free.push_back(index);
}

bool Engine::DeadlineLive(const DeadlineHeap::Entry& d) const {
  const Transfer& t = transfers_.slots[d.index];
  return t.generation == d.generation && t.active && !t.reported;
}

void Engine::CheckDeadlines(uint64_t now) {
  DeadlineHeap::Entry d;
  while (deadlines_.PopDue(now, &d)) {
    if (!DeadlineLive(d)) continue;
    const uint32_t i = d.index;
    Transfer& t = transfers_.slots[i];
    const uint64_t ms = (t.deadline_ns - t.start_ns) / 1000000;
    Complete(i,
             Status::DeadlineExceeded(
                 "transfer " + std::to_string(t.op_id) + " missed its deadline of " +
                 std::to_string(ms) + " ms" +
                 (t.posted ? " (its virtual WR is still in flight)" : " (never posted)")),
             IBV_WC_SUCCESS, false);
    // The slot stays until the WC arrives (posted) or the backlog lets go of it.
  }
}

}  // namespace braid::engine
