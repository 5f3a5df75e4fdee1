// The engine's transfers: admission, validation, posting, backlogs and deadlines. Completions:
// engine_completions.cc; entries from a session's ring: engine_sessions.cc.
#include <arpa/inet.h>

#include <algorithm>
#include <string>

#include "dataplane/common/quote.h"
#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"
#include "dataplane/session/ring_entry.h"

namespace braid::engine {

using common::Result;
using common::Status;

namespace {

std::string Range(uint64_t offset, uint64_t length) {
  return "[" + std::to_string(offset) + ", " + std::to_string(offset) + " + " +
         std::to_string(length) + ")";
}

Status CutShort(uint64_t region_id) {
  return Status::FailedPrecondition(
      "region " + std::to_string(region_id) +
      ": its owner cut the file short under the agent's mapping, so its bytes are lost to the "
      "agent; deregister it and register the file again");
}

}  // namespace

void Engine::StartTransfer(const TransferRequest& request, std::shared_ptr<TransferSink> sink) {
  // Null for a VQP the caller may not see: refused by PrepareTransfer, charged to no one.
  VqpSlot* slot = VisibleVqp(request.vqp_id, request.owner);
  Result<uint32_t> acquired = AcquireTransfer(request.op_id, request.vqp_id, slot, request.op,
                                              request.length, request.timeout_ms);
  if (!acquired.ok()) {
    TransferResult r;
    r.op_id = request.op_id;
    r.status = acquired.status().code() == common::StatusCode::kNoResource ? TransferRefusal(slot)
                                                                           : acquired.status();
    if (!sink->results.Push(std::move(r)).ok()) sink->dropped.fetch_add(1);
    return;
  }
  const uint32_t index = *acquired;
  Transfer& t = transfers_.slots[index];
  t.sink = std::move(sink);
  Status s = PrepareTransfer(request, slot, t);
  if (!s.ok()) {
    Complete(index, std::move(s), IBV_WC_SUCCESS, false);
    Release(index);
    return;
  }
  Admit(index);
}

Result<uint32_t> Engine::AcquireTransfer(uint64_t op_id, uint64_t vqp_id, VqpSlot* vqp,
                                         TransferOp op, uint64_t length, uint32_t timeout_ms) {
  if (!transfers_.stopped.empty()) return Status::Cancelled(transfers_.stopped);
  OwnerUsage* usage = vqp != nullptr ? vqp->usage : nullptr;
  if (usage != nullptr && usage->transfers >= options_.max_transfers_per_owner) {
    return Status::NoResource();
  }
  uint32_t index;
  if (!transfers_.free.empty()) {
    index = transfers_.free.back();
    transfers_.free.pop_back();
  } else if (transfers_.slots.size() < options_.max_transfers) {
    index = static_cast<uint32_t>(transfers_.slots.size());
    transfers_.slots.emplace_back();
  } else {
    return Status::NoResource();
  }
  Transfer& t = transfers_.slots[index];
  t.active = true;
  t.reported = false;
  t.posted = false;
  t.op_id = op_id;
  t.vqp_id = vqp_id;
  t.region_id = 0;
  t.local_memory = nullptr;
  t.has_remote_keys = false;
  t.session = nullptr;
  t.usage = usage;
  if (usage != nullptr) ++usage->transfers;
  t.op = op;
  t.length = length;
  t.start_ns = NowNs();
  const uint32_t timeout = timeout_ms != 0 ? timeout_ms : options_.default_timeout_ms;
  t.deadline_ns = t.start_ns + uint64_t{timeout} * 1000000;
  ++transfers_.in_flight;
  return index;
}

Status Engine::TransferRefusal(const VqpSlot* vqp) const {
  if (vqp != nullptr && vqp->usage->transfers >= options_.max_transfers_per_owner) {
    return Status::NoResource("this caller has " + std::to_string(vqp->usage->transfers) +
                              " transfers in flight or waiting, its limit "
                              "(max_transfers_per_caller): wait for completions before "
                              "submitting more");
  }
  return Status::NoResource("the agent has " + std::to_string(transfers_.slots.size()) +
                            " transfers in flight or waiting, its limit (max_transfers): "
                            "back-pressure, submit again after completions");
}

void Engine::Admit(uint32_t index) {
  Transfer& t = transfers_.slots[index];
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

Status Engine::PrepareTransfer(const TransferRequest& request, VqpSlot* slot, Transfer& t) {
  if (slot == nullptr) return FindVqp(request.vqp_id, request.owner).status();
  BRAID_RETURN_IF_ERROR(CheckCarries(*slot));
  if (request.length == 0) return Status::InvalidArgument("transfer length must be > 0");
  if (request.timeout_ms > session::kMaxTimeoutMs) {  // the ring's entries are held to it too
    return Status::InvalidArgument("timeout_ms " + std::to_string(request.timeout_ms) +
                                   " is above 24 hours (" + std::to_string(session::kMaxTimeoutMs) +
                                   "); 0 takes the agent's default");
  }
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
  if (region.shm->cut_short()) return CutShort(region.id);
  const RemoteRegion& remote = request.remote;
  BRAID_RETURN_IF_ERROR(CheckRemote(*slot, remote));
  if (!Within(request.remote_offset, request.length, remote.length)) {
    return Status::OutOfRange("remote range " + Range(request.remote_offset, request.length) +
                              " is past remote region " + std::to_string(remote.region_id) + " (" +
                              std::to_string(remote.length) + " bytes)");
  }
  BRAID_ASSIGN_OR_RETURN(uint32_t local_keys, LocalKeys(*slot, region));
  BRAID_ASSIGN_OR_RETURN(uint32_t remote_keys, RemoteKeys(*slot, remote, t));
  FillWr(t, region, request.local_offset, local_keys, remote.addr + request.remote_offset,
         remote_keys, request.imm);
  return Status::Ok();
}

Status Engine::CheckCarries(const VqpSlot& slot) const {
  if (!slot.vqp->connected()) {
    return Status::FailedPrecondition("virtual QP " + std::to_string(slot.id) +
                                      " is not connected");
  }
  if (slot.state == VqpState::kFailed) {
    return Status::FailedPrecondition("virtual QP " + std::to_string(slot.id) + " has failed (" +
                                      slot.failure + "); destroy it and connect a new one");
  }
  return Status::Ok();
}

Status Engine::CheckRemote(const VqpSlot& slot, const RemoteRegion& remote) const {
  if (remote.agent_id == options_.agent_id) {
    return Status::InvalidArgument("remote region " + std::to_string(remote.region_id) +
                                   " belongs to this agent (" + options_.agent_id +
                                   "); a transfer targets the peer's memory");
  }
  if (remote.vqp_id != 0 && remote.vqp_id != slot.peer_vqp_id) {
    return Status::FailedPrecondition(
        "remote region " + std::to_string(remote.region_id) + " is granted to VQP " +
        std::to_string(remote.vqp_id) + " of its agent, not to this VQP's peer (VQP " +
        std::to_string(slot.peer_vqp_id) + "): its owner must grant that VQP access");
  }
  if (remote.addr + remote.length < remote.addr) {
    return Status::OutOfRange("remote region " + std::to_string(remote.region_id) +
                              " wraps around the address space");
  }
  return Status::Ok();
}

void Engine::FillWr(Transfer& t, RegionSlot& region, uint64_t local_offset, uint32_t local_keys,
                    uint64_t remote_addr, uint32_t remote_keys, uint32_t imm) {
  vqp::VirtualSendWr& wr = t.wr;
  wr = {};
  wr.wr_id = (uint64_t{t.generation} << 32) | static_cast<uint64_t>(&t - transfers_.slots.data());
  switch (t.op) {
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
  wr.local_addr = reinterpret_cast<uint64_t>(region.shm->addr()) + local_offset;
  wr.length = t.length;
  wr.local_keys = local_keys;
  wr.remote_addr = remote_addr;
  wr.remote_keys = remote_keys;
  wr.imm_data = htonl(imm);
  t.region_id = region.id;
  t.local_memory = region.shm.get();
  ++region.in_flight;
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
