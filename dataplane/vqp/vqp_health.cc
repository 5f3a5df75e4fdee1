// VirtualQp: the health of its physical QPs: death, cooldown and probes, operator drain, and the
// three recovery steps of a dead QP (see doc/vqp.md, "Failure handling").
#include <algorithm>
#include <string>

#include "dataplane/vqp/virtual_qp.h"

namespace braid::vqp {

using common::Status;

void VirtualQp::SetHealth(int qp_index, QpHealth health) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (qp_index < static_cast<int>(config_.num_qps)) {
    healthy_data_qps_ += (health == QpHealth::kHealthy) - (q.health == QpHealth::kHealthy);
  }
  q.health = health;
}

Status VirtualQp::ChangeDeviceHealth(int device, QpHealth from, QpHealth to) {
  bool any = false;
  for (size_t i = 0; i < qps_.size(); ++i) {
    if (qps_[i].device != device) continue;
    any = true;
    if (qps_[i].health == from && !qps_[i].probing) SetHealth(static_cast<int>(i), to);
  }
  if (!any) return Status::NotFound("VQP has no QP on device " + std::to_string(device));
  return Status::Ok();
}

Status VirtualQp::BeginReset(int index) {
  if (!connected_) return Status::FailedPrecondition("VQP is not connected");
  if (index < 0 || index >= num_physical_qps()) {
    return Status::OutOfRange("no physical QP " + std::to_string(index));
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  if (q.resetting) return Status::Ok();
  q.resetting = true;
  if (q.health != QpHealth::kDead) MarkDead(index, IBV_WC_WR_FLUSH_ERR);
  BRAID_RETURN_IF_ERROR(q.qp->ToError());
  return Status::Ok();
}

bool VirtualQp::ResetReady(int index) const {
  if (index < 0 || index >= num_physical_qps()) return false;
  const PhysQp& q = qps_[static_cast<size_t>(index)];
  return q.resetting && q.outstanding == 0 && q.posted_recvs == 0;
}

common::Result<QpCard> VirtualQp::ResetQp(int index, uint32_t psn) {
  if (!ResetReady(index)) {
    return Status::FailedPrecondition("QP " + std::to_string(index) +
                                      " still has work in flight or was not reset");
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  const verbs::DeviceInfo& info = cq_.device(q.device).info();
  BRAID_RETURN_IF_ERROR(q.qp->ToReset());
  BRAID_RETURN_IF_ERROR(q.qp->ToInit({.port_num = info.port_num}));
  uint32_t device_index = 0;  // into the card's devices, which follow devices_.used
  for (size_t k = 0; k < devices_.used.size(); ++k) {
    if (devices_.used[k] == q.device) device_index = static_cast<uint32_t>(k);
  }
  q.outstanding_bytes = 0;
  q.rate.Reset();
  q.reset_psn = psn & 0xFFFFFF;
  return QpCard{device_index, info.port_num, q.qp->qp_num(), psn & 0xFFFFFF,
                static_cast<uint8_t>(info.active_mtu)};
}

Status VirtualQp::ReconnectQp(int index, const QpCard& peer, uint64_t epoch) {
  if (index < 0 || index >= num_physical_qps()) {
    return Status::OutOfRange("no physical QP " + std::to_string(index));
  }
  PhysQp& q = qps_[static_cast<size_t>(index)];
  if (!q.resetting || q.qp->state() != verbs::QpState::kInit) {
    return Status::FailedPrecondition("QP " + std::to_string(index) + " was not reset");
  }
  if (peer.device_index >= peer_.devices.size() || peer.device_index != q.remote_device) {
    return Status::InvalidArgument("the peer's QP " + std::to_string(index) +
                                   " moved to another device");
  }
  // Our first PSN was chosen at ResetQp and sent to the peer in our entry.
  BRAID_RETURN_IF_ERROR(ToRtrRts(index, peer, q.reset_psn, epoch));
  BRAID_RETURN_IF_ERROR(PostPool(index));
  q.resetting = false;
  q.death = IBV_WC_SUCCESS;
  // The probe: no new work until the path answers.
  SetHealth(index, QpHealth::kDraining);
  return PostProbe(index);
}

Status VirtualQp::PostProbe(int index) {
  PhysQp& q = qps_[static_cast<size_t>(index)];
  ibv_send_wr probe{};
  probe.wr_id = WrTag::Encode(WrKind::kProbe, static_cast<uint32_t>(index));
  probe.opcode = IBV_WR_RDMA_WRITE;
  probe.send_flags = IBV_SEND_SIGNALED;
  probe.wr.rdma.remote_addr = peer_.control_addr;
  probe.wr.rdma.rkey = peer_.control_rkeys[q.remote_device];
  ibv_send_wr* bad = nullptr;
  q.probing = true;
  Status posted = q.qp->PostSend(&probe, &bad);
  if (!posted.ok()) {
    q.probing = false;
    MarkDead(index, IBV_WC_GENERAL_ERR);
    return posted.WithContext("probe of QP " + std::to_string(index));
  }
  ++q.outstanding;
  return Status::Ok();
}

void VirtualQp::Strike(int qp_index, uint64_t now, std::string cause) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (q.strikes > 0 && now - q.last_strike_ns > kForgiveStrikesNs) q.strikes = 0;
  ++q.strikes;
  q.last_strike_ns = now;
  const uint64_t ms =
      std::min<uint64_t>(uint64_t{config_.cooldown_ms} << std::min<uint32_t>(q.strikes - 1, 16),
                         config_.cooldown_cap_ms);
  q.cooldown_until_ns = now + ms * 1000000;
  q.cooling_cause = std::move(cause) + "; cooling down for " + std::to_string(ms) + " ms (strike " +
                    std::to_string(q.strikes) + ")";
}

void VirtualQp::CheckStalls(uint64_t now) {
  if (!connected_ || destroying_) return;
  // A link that stops completing anything for the VQP (no data QP on the device completed a WR
  // for the limit while work is outstanding) cools its healthy QPs. Per QP, a wait is no sign: QPs
  // of a device share its link and take turns. A single broken QP is RC's business (it times out
  // and dies).
  for (int d : devices_.used) {
    DeviceLoad& load = devices_.load[static_cast<size_t>(d)];
    if (load.outstanding == 0) continue;
    const double turn_ns = load.rate.ns_per_byte() * static_cast<double>(config_.fragment_size);
    const uint64_t limit = std::max<uint64_t>(uint64_t{config_.stall_ms} * 1000000,
                                              static_cast<uint64_t>(32 * turn_ns));
    if (now <= load.last_progress_ns + limit) continue;
    const uint64_t stalled_ms = (now - load.last_progress_ns) / 1000000;
    load.rate.Restart(now);  // the stall is not the link's rate
    load.last_progress_ns = now;
    for (uint32_t i = 0; i < config_.num_qps; ++i) {
      PhysQp& q = qps_[i];
      if (q.device != d || q.health != QpHealth::kHealthy || healthy_data_qps_ <= 1) continue;
      Strike(static_cast<int>(i), now,
             "stalled: its link completed nothing for " + std::to_string(stalled_ms) + " ms with " +
                 std::to_string(load.outstanding) + " WRs outstanding");
      SetHealth(static_cast<int>(i), QpHealth::kCooling);
    }
  }
  // Cooled QPs whose cooldown has passed and whose work is back are probed (re-admitted when the
  // probe answers).
  for (uint32_t i = 0; i < config_.num_qps; ++i) {
    const PhysQp& q = qps_[i];
    if (q.health == QpHealth::kCooling && !q.probing && q.outstanding == 0 &&
        now >= q.cooldown_until_ns) {
      (void)PostProbe(static_cast<int>(i));  // a failed post marks it dead
    }
  }
}

void VirtualQp::OnProbeCompletion(int qp_index, const ibv_wc& wc) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  --q.outstanding;
  if (!q.probing) return;
  q.probing = false;
  if (wc.status != IBV_WC_SUCCESS) {
    MarkDead(qp_index, wc.status);
    return;
  }
  // A QP that keeps dying (a second strike before the first was forgiven) sits out the rest of
  // its cooldown, unless no other data QP is healthy.
  if (qp_index < static_cast<int>(config_.num_qps) && q.strikes >= 2 && healthy_data_qps_ > 0 &&
      NowNs() < q.cooldown_until_ns) {
    SetHealth(qp_index, QpHealth::kCooling);
    return;
  }
  // A QP that comes back on a drained device stays out of service until the operator re-admits it.
  SetHealth(qp_index, DeviceDrained(q.device) ? QpHealth::kDraining : QpHealth::kHealthy);
}

Status VirtualQp::DrainDevice(int device) {
  BRAID_RETURN_IF_ERROR(ChangeDeviceHealth(device, QpHealth::kHealthy, QpHealth::kDraining));
  devices_.drained |= 1u << device;
  return Status::Ok();
}

Status VirtualQp::UndrainDevice(int device) {
  BRAID_RETURN_IF_ERROR(ChangeDeviceHealth(device, QpHealth::kDraining, QpHealth::kHealthy));
  devices_.drained &= ~(1u << device);
  Pump();
  ReportSends();
  return Status::Ok();
}

void VirtualQp::MarkDead(int qp_index, ibv_wc_status status) {
  PhysQp& q = qps_[static_cast<size_t>(qp_index)];
  if (status != IBV_WC_WR_FLUSH_ERR && q.death == IBV_WC_SUCCESS) q.death = status;
  if (q.death != IBV_WC_SUCCESS) last_error_ = q.death;
  if (q.health == QpHealth::kDead) return;
  // A path error is a strike; an operation's own fault, or a reset asked for, is not.
  if (qp_index < static_cast<int>(config_.num_qps) && q.health == QpHealth::kHealthy &&
      status != IBV_WC_WR_FLUSH_ERR && !IsOperationFault(status)) {
    Strike(qp_index, NowNs(), std::string("died (") + ibv_wc_status_str(status) + ")");
  }
  SetHealth(qp_index, QpHealth::kDead);
  ++counters_.qps_died;
  if (healthy_data_qps() == 0) AbortAll(last_error_);
}

// A dead QP gets no new work, and with none healthy nothing can make progress; every unfinished
// virtual WR ends with an error once its in-flight pieces are back.
void VirtualQp::AbortAll(ibv_wc_status status) {
  for (uint64_t i = send_.head; i != send_.tail; ++i) {
    SendEntry& e = Send(i);
    if (e.stage == SendStage::kDone) continue;
    if (e.status == IBV_WC_SUCCESS || (e.status == IBV_WC_WR_FLUSH_ERR && status != e.status)) {
      e.status = status;
    }
    e.aborted = true;
  }
}

}  // namespace braid::vqp
