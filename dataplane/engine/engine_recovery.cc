// Recovery of dead physical QPs (rule 5), coordinated with the peer agent.
//
// The side that sees a data QP die leads: it resets the QP (BeginReset, then ResetQp once its
// work is back) and hands a RecoveryRequest to the control plane, which asks the peer agent to
// reset its side and connect it to ours (AcceptRecovery there); the peer's new entry comes back
// through CompleteRecovery and ours is connected to it. A failure (peer unreachable, refused, no
// answer in time) retries with exponential backoff up to the cap. Both sides leading at once is
// settled by the control endpoints: the smaller leads, the other accepts. Every success bumps
// the VQP's epoch.
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
    case RecoveryPhase::kIdle: return "idle";
    case RecoveryPhase::kResetting: return "resetting";
    case RecoveryPhase::kAwaitingPeer: return "awaiting_peer";
    case RecoveryPhase::kAccepting: return "accepting";
    case RecoveryPhase::kProbing: return "probing";
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
}

void Engine::RunRecovery(uint64_t now) {
  for (auto& [id, slot_ptr] : vqps_) {
    VqpSlot& slot = *slot_ptr;
    vqp::VirtualQp& q = *slot.vqp;
    if (!q.connected()) continue;
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
          r.attempt = ++recovery_attempt_ids_;
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
          request.qp_index = i;
          request.card = *card;
          request.epoch = slot.epoch + 1;
          r.epoch = request.epoch;  // the epoch of this attempt, on both sides
          if (!recovery_requests_.Push(std::move(request)).ok()) {
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
    if (!peer.ok() || !slot.vqp->ReconnectQp(static_cast<int>(qp_index), *peer, r.epoch).ok()) {
      e.RecoveryFailed(slot, qp_index, now);
      return;
    }
    e.RecoverySucceeded(slot, qp_index, r.epoch);
  };
  while (!commands_.Push(command).ok()) std::this_thread::yield();
}

Result<vqp::QpCard> Engine::AcceptRecovery(uint64_t vqp_id, uint32_t qp_index,
                                           const vqp::QpCard& initiator, uint64_t epoch,
                                           const std::string& from_endpoint) {
  auto reply = std::make_shared<std::promise<Result<vqp::QpCard>>>();
  auto answer = reply->get_future();
  Status pushed = commands_.Push([=](Engine& e) {
    auto it = e.vqps_.find(vqp_id);
    if (it == e.vqps_.end()) {
      reply->set_value(Status::NotFound("no virtual QP " + std::to_string(vqp_id) +
                                        " on agent " + e.options_.agent_id));
      return;
    }
    VqpSlot& slot = *it->second;
    if (!slot.vqp->connected()) {
      reply->set_value(Status::FailedPrecondition("virtual QP " + std::to_string(vqp_id) +
                                                  " is not connected"));
      return;
    }
    if (qp_index >= slot.recovery.size()) {
      reply->set_value(Status::OutOfRange("virtual QP " + std::to_string(vqp_id) + " has " +
                                          std::to_string(slot.recovery.size()) +
                                          " physical QPs"));
      return;
    }
    QpRecovery& r = slot.recovery[qp_index];
    if (r.phase == RecoveryPhase::kAccepting) {
      reply->set_value(Status::FailedPrecondition("data QP " + std::to_string(qp_index) +
                                                  " is already being recovered"));
      return;
    }
    if (r.phase != RecoveryPhase::kIdle && e.options_.control_endpoint < from_endpoint) {
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
    r.phase = RecoveryPhase::kAccepting;
    r.attempt = 0;
    r.initiator = initiator;
    r.epoch = epoch;
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
