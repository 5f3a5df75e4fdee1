// Recovery of dead physical QPs (dead QPs come back), coordinated with the peer agent.
//
// The side that sees a data QP die leads: it resets the QP (BeginReset, then ResetQp once its
// work is back) and hands a RecoveryRequest to the control plane, which asks the peer agent to
// reset its side and connect it to ours (AcceptRecovery there); the peer's new entry comes back
// through CompleteRecovery and ours is connected to it. A failure (peer unreachable, refused, no
// answer in time) retries with exponential backoff up to the cap. Both sides leading at once is
// settled by the control endpoints: the smaller leads, the other accepts. Every success bumps
// the VQP's epoch.
//
// Identity: only the VQP this one was connected with (endpoint, VQP id and agent incarnation of
// its card) may recover its QPs, and a request must name this agent's incarnation: a restarted
// peer's new VQP, which may reuse the old id, is never touched by the old one.
// Budget: a QP that keeps failing to come back for `recovery_budget_ms`, while no data QP of its
// VQP is healthy, fails the VQP; so does a peer answering that the VQP is gone (NOT_FOUND).
#include <algorithm>
#include <future>
#include <thread>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;

const char* RecoveryPhaseName(RecoveryPhase phase) {
  switch (phase) {
    case RecoveryPhase::kIdle:
      return "idle";
    case RecoveryPhase::kResetting:
      return "resetting";
    case RecoveryPhase::kAwaitingPeer:
      return "awaiting_peer";
    case RecoveryPhase::kAccepting:
      return "accepting";
    case RecoveryPhase::kProbing:
      return "probing";
  }
  return "unknown";
}

namespace {

uint32_t NewPsn(uint64_t seed) {
  seed ^= seed >> 33;
  seed *= 0xff51afd7ed558ccdull;
  seed ^= seed >> 33;
  return static_cast<uint32_t>(seed) & 0xFFFFFF;
}

}  // namespace

void Engine::RecoveryFailed(VqpSlot& slot, uint32_t index, uint64_t now) {
  QpRecovery& r = slot.recovery[index];
  ++stats_.recoveries_failed;
  ++r.attempts;
  if (r.failing_since_ns == 0) r.failing_since_ns = now;
  if (now - r.failing_since_ns > uint64_t{options_.recovery_budget_ms} * 1000000 &&
      slot.vqp->healthy_data_qps() == 0) {
    FailVqp(slot, "no data QP came back within the recovery budget of " +
                      std::to_string(options_.recovery_budget_ms) + " ms (" +
                      std::to_string(r.attempts) + " failed attempts on QP " +
                      std::to_string(index) + ")");
    return;
  }
  const uint64_t backoff_ms = std::min<uint64_t>(
      uint64_t{options_.recovery_backoff_ms} << std::min<uint32_t>(r.attempts - 1, 20),
      options_.recovery_backoff_cap_ms);
  r.next_attempt_ns = now + backoff_ms * 1000000;
  r.phase = RecoveryPhase::kIdle;
  r.attempt = 0;
}

// Reconnected: the QP's probe decides (RunRecovery, kProbing).
void Engine::RecoverySucceeded(VqpSlot& slot, uint32_t index, uint64_t epoch) {
  QpRecovery& r = slot.recovery[index];
  r.phase = RecoveryPhase::kProbing;
  r.attempt = 0;
  r.epoch = epoch;
  PostNotifyReceives(slot);  // a single QP's receives died with it
}

void Engine::FailVqp(VqpSlot& slot, const std::string& why) {
  if (slot.state == VqpState::kFailed) return;
  slot.state = VqpState::kFailed;
  slot.failure = why;
  for (int i = 0; i < slot.vqp->num_physical_qps(); ++i) (void)slot.vqp->BeginReset(i);
  for (QpRecovery& r : slot.recovery) {
    if (r.reply)
      r.reply->set_value(
          Status::NotFound("virtual QP " + std::to_string(slot.id) + " has failed: " + why));
    r = QpRecovery{.reported = r.reported};
  }
  FailBacklog(slot, Status::FailedPrecondition("virtual QP " + std::to_string(slot.id) +
                                               " has failed (" + why + ")"));
  TrackQpHealth(slot);
  Emit(EventKind::kVqpFailed, slot.id, -1, "", why);
}

void Engine::Attend(VqpSlot& slot) {
  if (slot.on_attention_list) return;
  slot.on_attention_list = true;
  recovery_.attention.push_back(&slot);
}

bool Engine::Settled(const VqpSlot& slot) const {
  const vqp::VirtualQp& q = *slot.vqp;
  if (slot.state == VqpState::kFailed || !q.connected()) return true;
  if (q.pending_sends() != 0) return false;
  for (int i = 0; i < q.num_physical_qps(); ++i) {
    const vqp::QpHealth h = q.health(i);
    if (q.outstanding(i) != 0 || q.probing(i) ||
        (h != vqp::QpHealth::kHealthy && h != vqp::QpHealth::kDraining)) {
      return false;
    }
  }
  for (const QpRecovery& r : slot.recovery) {
    if (r.phase != RecoveryPhase::kIdle) return false;
  }
  for (uint32_t i = 0; i < slot.recovery.size(); ++i) {
    if (slot.recovery[i].reported != q.health(static_cast<int>(i))) return false;  // not told yet
  }
  return true;
}

void Engine::Forget(VqpSlot& slot) {
  if (slot.on_attention_list) std::erase(recovery_.attention, &slot);
  if (slot.on_backlog_list) std::erase(transfers_.backlogged_vqps, &slot);
  slot.on_attention_list = slot.on_backlog_list = false;
}

void Engine::RunRecovery(uint64_t now) {
  if (now >= recovery_.next_sweep_ns) {
    // Every 5 s, every VQP: a QP that died with only receives out announces itself to
    // nobody.
    recovery_.next_sweep_ns = now + 5000000000ull;
    for (auto& [id, slot] : vqps_) {
      if (!Settled(*slot)) Attend(*slot);
    }
  }
  // By index: recovery may fail a VQP, never add or destroy one.
  for (size_t a = 0; a < recovery_.attention.size();) {
    VqpSlot& slot = *recovery_.attention[a];
    RecoverOne(slot, now);
    if (!Settled(slot)) {
      ++a;
      continue;
    }
    slot.on_attention_list = false;
    recovery_.attention[a] = recovery_.attention.back();
    recovery_.attention.pop_back();
  }
}

void Engine::RecoverOne(VqpSlot& slot, uint64_t now) {
  vqp::VirtualQp& q = *slot.vqp;
  if (!q.connected()) return;
  q.CheckStalls(now);
  TrackQpHealth(slot);
  if (slot.state == VqpState::kFailed) return;
  for (uint32_t i = 0; i < slot.recovery.size(); ++i) {
    QpRecovery& r = slot.recovery[i];
    const int index = static_cast<int>(i);
    switch (r.phase) {
      case RecoveryPhase::kIdle:
        if (!options_.recovery || q.health(index) != vqp::QpHealth::kDead ||
            slot.peer_endpoint.empty() || now < r.next_attempt_ns) {
          break;
        }
        if (!q.BeginReset(index).ok()) {
          RecoveryFailed(slot, i, now);
          break;
        }
        r.phase = RecoveryPhase::kResetting;
        r.attempt = ++recovery_.attempt_ids;
        if (r.attempts == 0) {
          Emit(EventKind::kQpRecovering, slot.id, index,
               cq_->device(q.physical_device(index)).info().name,
               "resetting and reconnecting with the peer");
        }
        break;
      case RecoveryPhase::kResetting: {
        if (!q.ResetReady(index)) break;
        Result<vqp::QpCard> card = q.ResetQp(index, NewPsn(now ^ r.attempt));
        if (!card.ok()) {
          RecoveryFailed(slot, i, now);
          break;
        }
        RecoveryRequest request;
        request.vqp_id = slot.id;
        request.attempt = r.attempt;
        request.peer_endpoint = slot.peer_endpoint;
        request.peer_vqp_id = slot.peer_vqp_id;
        request.peer_incarnation = slot.peer_incarnation;
        request.failed_attempts = r.attempts;
        request.qp_index = i;
        request.card = *card;
        request.epoch = slot.epoch + 1;
        r.epoch = request.epoch;  // the epoch of this attempt, on both sides
        if (!recovery_.requests.Push(std::move(request)).ok()) {
          RecoveryFailed(slot, i, now);
          break;
        }
        r.phase = RecoveryPhase::kAwaitingPeer;
        r.deadline_ns = now + uint64_t{options_.recovery_peer_timeout_ms} * 1000000;
        break;
      }
      case RecoveryPhase::kAwaitingPeer:
        if (now > r.deadline_ns) RecoveryFailed(slot, i, now);
        break;
      case RecoveryPhase::kProbing:
        if (q.health(index) == vqp::QpHealth::kHealthy) {
          ++stats_.recoveries_succeeded;
          ++r.recoveries;
          r.attempts = 0;
          r.failing_since_ns = 0;
          r.phase = RecoveryPhase::kIdle;
          slot.epoch = std::max(slot.epoch + 1, r.epoch);
        } else if (q.health(index) == vqp::QpHealth::kDead) {
          RecoveryFailed(slot, i, now);  // the path is still down
        }
        break;
      case RecoveryPhase::kAccepting: {
        if (!q.ResetReady(index)) break;
        Result<vqp::QpCard> card = q.ResetQp(index, NewPsn(now ^ (slot.id << 8) ^ i));
        Status s = card.ok() ? q.ReconnectQp(index, r.initiator, r.epoch) : card.status();
        auto reply = std::move(r.reply);
        if (!s.ok()) {
          RecoveryFailed(slot, i, now);
          if (reply) reply->set_value(s);
          break;
        }
        RecoverySucceeded(slot, i, r.epoch);
        if (reply) reply->set_value(*card);
        break;
      }
    }
  }
}

void Engine::CompleteRecovery(uint64_t vqp_id, uint32_t qp_index, uint64_t attempt,
                              Result<vqp::QpCard> peer) {
  auto command = [vqp_id, qp_index, attempt, peer = std::move(peer)](Engine& e) {
    auto it = e.vqps_.find(vqp_id);
    if (it == e.vqps_.end() || qp_index >= it->second->recovery.size()) return;
    VqpSlot& slot = *it->second;
    QpRecovery& r = slot.recovery[qp_index];
    if (r.phase != RecoveryPhase::kAwaitingPeer || r.attempt != attempt) return;  // stale
    const uint64_t now = NowNs();
    e.Attend(slot);
    if (!peer.ok() && peer.status().code() == common::StatusCode::kNotFound) {
      // The peer agent has no such VQP any more (destroyed, or the agent restarted): nothing of
      // this VQP can ever be recovered.
      e.FailVqp(slot, "the peer no longer has this VQP: " +
                          std::string(peer.status().message()).substr(0, 200));
      return;
    }
    if (!peer.ok() || !slot.vqp->ReconnectQp(static_cast<int>(qp_index), *peer, r.epoch).ok()) {
      e.RecoveryFailed(slot, qp_index, now);
      return;
    }
    e.RecoverySucceeded(slot, qp_index, r.epoch);
  };
  while (!commands_.Push(command).ok()) std::this_thread::yield();
}

Result<vqp::QpCard> Engine::AcceptRecovery(const RecoveryOffer& offer) {
  auto reply = std::make_shared<std::promise<Result<vqp::QpCard>>>();
  auto answer = reply->get_future();
  Status pushed = commands_.Push([=](Engine& e) {
    const uint64_t vqp_id = offer.vqp_id;
    const uint32_t qp_index = offer.qp_index;
    auto it = e.vqps_.find(vqp_id);
    // Existence is not disclosed to a caller that does not hold the VQP's peer identity.
    if (offer.to_incarnation != e.incarnation_ || it == e.vqps_.end() ||
        it->second->peer_vqp_id != offer.from_vqp_id ||
        it->second->peer_incarnation != offer.from_incarnation ||
        it->second->peer_endpoint != offer.from_endpoint ||
        (!it->second->peer_identity.empty() && it->second->peer_identity != offer.from_identity)) {
      reply->set_value(Status::NotFound(
          "no virtual QP " + std::to_string(vqp_id) + " connected with VQP " +
          std::to_string(offer.from_vqp_id) + " of " + offer.from_endpoint.substr(0, 100) +
          " on agent " + e.options_.agent_id +
          (offer.to_incarnation != e.incarnation_ ? " (the agent restarted since)" : "")));
      return;
    }
    VqpSlot& slot = *it->second;
    if (slot.state == VqpState::kFailed) {
      reply->set_value(Status::NotFound("virtual QP " + std::to_string(vqp_id) +
                                        " has failed: " + slot.failure));
      return;
    }
    if (!slot.vqp->connected()) {
      reply->set_value(
          Status::FailedPrecondition("virtual QP " + std::to_string(vqp_id) + " is not connected"));
      return;
    }
    if (qp_index >= slot.recovery.size()) {
      reply->set_value(Status::OutOfRange("virtual QP " + std::to_string(vqp_id) + " has " +
                                          std::to_string(slot.recovery.size()) + " physical QPs"));
      return;
    }
    QpRecovery& r = slot.recovery[qp_index];
    if (r.phase == RecoveryPhase::kAccepting) {
      reply->set_value(Status::FailedPrecondition("data QP " + std::to_string(qp_index) +
                                                  " is already being recovered"));
      return;
    }
    if (r.phase != RecoveryPhase::kIdle && e.options_.control_endpoint < offer.from_endpoint) {
      reply->set_value(Status::FailedPrecondition(
          "recovery collision: " + e.options_.control_endpoint + " leads"));
      return;
    }
    // Ours (if any) is abandoned: an answer to it is stale from now on.
    Status s = slot.vqp->BeginReset(static_cast<int>(qp_index));
    if (!s.ok()) {
      reply->set_value(s);
      return;
    }
    e.TrackQpHealth(slot);  // its death first, then the recovery
    if (r.phase == RecoveryPhase::kIdle && r.attempts == 0) {
      e.Emit(EventKind::kQpRecovering, slot.id, static_cast<int32_t>(qp_index),
             e.cq_->device(slot.vqp->physical_device(static_cast<int>(qp_index))).info().name,
             "the peer asked to reset and reconnect");
    }
    r.phase = RecoveryPhase::kAccepting;
    r.attempt = 0;
    e.Attend(slot);
    r.initiator = offer.card;
    r.epoch = offer.epoch;
    r.reply = reply;
  });
  if (!pushed.ok()) return Status::NoResource();
  if (answer.wait_for(std::chrono::milliseconds(options_.call_timeout_ms)) !=
      std::future_status::ready) {
    return Status::DeadlineExceeded("the QP did not flush within " +
                                    std::to_string(options_.call_timeout_ms) + " ms");
  }
  return answer.get();
}

}  // namespace braid::engine
