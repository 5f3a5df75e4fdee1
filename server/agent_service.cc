#include "server/agent_service.h"

#include <thread>

#include "server/hold_stream.h"
#include "server/proto_mapping.h"
#include "server/refused_reactor.h"
#include "server/transfer_stream.h"
#include "server/watch_stream.h"

namespace braid::server {

using common::Result;

namespace {

// A WatchNotifications stream's capacity once its caller's backlog budget is spent: enough for a
// client that keeps reading, little for one that does not.
constexpr uint32_t kWatcherFloor = 256;

// The reply of a unary call whose engine result maps onto one message.
template <typename T, typename Out>
grpc::Status Reply(const Result<T>& result, Out* out) {
  if (!result.ok()) return ToGrpc(result.status());
  ToProto(*result, out);
  return grpc::Status::OK;
}

}  // namespace

// Admits the caller for `rpc` or returns its refusal.
#define BRAID_ADMIT(context, rpc, access)                                           \
  const OpenCalls::Token open_call = open_calls_.Enter();                           \
  Caller caller;                                                                    \
  if (grpc::Status refused = Admit(context, rpc, access, &caller); !refused.ok()) { \
    return refused;                                                                 \
  }

AgentService::AgentService(engine::Engine& engine, AgentServiceOptions options, Authenticator& auth,
                           AuditLog& audit, Reclaimer& reclaimer)
    : engine_(engine),
      options_(std::move(options)),
      auth_(auth),
      audit_(audit),
      started_(std::chrono::steady_clock::now()),
      windows_(options_.transfer_window, options_.transfer_window_per_caller, 1),
      backlogs_(kWatcherCapacity, options_.watch_backlog_per_caller, kWatcherFloor),
      leases_(options_.leases_per_caller),
      reclaimer_(reclaimer) {}

template <typename T, typename Out>
grpc::Status AgentService::OwnedReply(const Result<T>& result, Out* out) const {
  if (!result.ok()) return ToGrpc(result.status());
  ToProto(*result, out);
  out->set_owner(auth_.IdentityOf(result->owner));
  return grpc::Status::OK;
}

template <typename Info>
auto AgentService::Owned() const {
  return [this](const auto& item, Info* info) {
    ToProto(item, info);
    info->set_owner(auth_.IdentityOf(item.owner));
  };
}

template <typename T, typename Out>
grpc::Status AgentService::Leased(grpc::ServerContext* context, uint64_t lease,
                                  LeaseTable::Kind kind, engine::OwnerId owner,
                                  const Result<T>& result, Out* out) {
  if (!result.ok()) return ToGrpc(result.status());
  const bool vqp = kind == LeaseTable::Kind::kVqp;
  const auto give_back = [&] {
    reclaimer_.Release(owner, vqp ? std::vector<uint64_t>{result->id} : std::vector<uint64_t>{},
                       vqp ? std::vector<uint64_t>{} : std::vector<uint64_t>{result->id});
  };
  if (context->IsCancelled()) {
    give_back();
    return {grpc::StatusCode::CANCELLED,
            std::string("the caller gave up (its deadline passed, it cancelled or its connection "
                        "dropped) before the ") +
                (vqp ? "VQP" : "region") +
                " was made, so it was destroyed again: call again with a longer deadline"};
  }
  if (lease != 0 && !leases_.Add(lease, kind, result->id)) {
    give_back();
    return ToGrpc(leases_.Check(lease, owner));
  }
  return OwnedReply(result, out);
}

grpc::Status AgentService::Admit(grpc::ServerContextBase* context, const char* rpc, Access access,
                                 Caller* caller) {
  Refusal refusal;
  if (!auth_.Identify(*context, caller, &refusal)) {
    audit_.AuthFailed(rpc, refusal.reason, context->peer(), refusal.status.error_message());
    return refusal.status;
  }
  const Role r = caller->role;
  bool allowed = false;
  const char* needs = "";
  switch (access) {
    case Access::kAnyone:
      allowed = true;
      break;
    case Access::kClient:
      allowed = r >= Role::kClient;
      needs = "the client role or above";
      break;
    case Access::kOperator:
      allowed = r >= Role::kOperator;
      needs = "the operator or admin role";
      break;
    case Access::kAdmin:
      allowed = r == Role::kAdmin;
      needs = "the admin role";
      break;
    case Access::kPeer:
      allowed = r == Role::kPeer || r == Role::kAdmin;
      needs = "the peer role (another agent)";
      break;
  }
  if (allowed) return grpc::Status::OK;
  std::string message = caller->Describe() + " (role " + RoleName(r) + ") may not call " + rpc +
                        ": it needs " + needs;
  audit_.Denied(rpc, "role", caller->identity, context->peer(), message);
  return {grpc::StatusCode::PERMISSION_DENIED, message};
}

grpc::Status AgentService::GetInfo(grpc::ServerContext* context, const v1::GetInfoRequest*,
                                   v1::AgentInfo* out) {
  BRAID_ADMIT(context, "GetInfo", Access::kAnyone);
  auto snap = engine_.Snapshot();
  if (!snap.ok()) return ToGrpc(snap.status());
  out->set_agent_id(options_.agent_id);
  out->set_version(options_.version);
  out->set_provider(engine_.provider_name());
  out->set_control_endpoint(options_.control_endpoint);
  out->set_devices(static_cast<uint32_t>(snap->devices.size()));
  out->set_uptime_seconds(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count()));
  out->set_fault_injection(options_.fault_injection);
  out->set_virtual_qps(static_cast<uint32_t>(snap->vqps.size()));
  out->set_regions(snap->regions);
  out->set_plaintext(options_.plaintext);
  out->set_caller_identity(caller.identity);
  out->set_caller_role(RoleName(caller.role));
  return grpc::Status::OK;
}

grpc::Status AgentService::ListDevices(grpc::ServerContext* context, const v1::ListDevicesRequest*,
                                       v1::ListDevicesResponse* out) {
  BRAID_ADMIT(context, "ListDevices", Access::kAnyone);
  auto devices = engine_.ListDevices();
  if (!devices.ok()) return ToGrpc(devices.status());
  for (const auto& d : *devices) ToProto(d, out->add_devices());
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateVirtualQp(grpc::ServerContext* context,
                                           const v1::CreateVirtualQpRequest* request,
                                           v1::VirtualQpInfo* out) {
  BRAID_ADMIT(context, "CreateVirtualQp", Access::kClient);
  auto parsed = FromProto(*request);
  if (!parsed.ok()) return ToGrpc(parsed.status());
  parsed->owner = caller.owner;
  const uint64_t lease = request->lease_id();
  if (lease != 0) {
    if (common::Status s = leases_.Check(lease, caller.owner); !s.ok()) return ToGrpc(s);
  }
  return Leased(context, lease, LeaseTable::Kind::kVqp, caller.owner,
                engine_.CreateVirtualQp(std::move(parsed).value()), out);
}

grpc::Status AgentService::ConnectVirtualQp(grpc::ServerContext* context,
                                            const v1::ConnectVirtualQpRequest* request,
                                            v1::VirtualQpInfo* out) {
  BRAID_ADMIT(context, "ConnectVirtualQp", Access::kClient);
  if (!request->has_remote_card()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "remote_card is required"};
  }
  auto card = FromProto(request->remote_card());
  if (!card.ok()) return ToGrpc(card.status());
  return OwnedReply(
      engine_.ConnectVirtualQp(request->vqp_id(), std::move(card).value(), caller.scope()), out);
}

grpc::Status AgentService::GetVirtualQp(grpc::ServerContext* context,
                                        const v1::GetVirtualQpRequest* request,
                                        v1::VirtualQpInfo* out) {
  BRAID_ADMIT(context, "GetVirtualQp", Access::kClient);
  return OwnedReply(engine_.GetVirtualQp(request->vqp_id(), caller.scope()), out);
}

grpc::Status AgentService::ListVirtualQps(grpc::ServerContext* context,
                                          const v1::ListVirtualQpsRequest* request,
                                          v1::ListVirtualQpsResponse* out) {
  BRAID_ADMIT(context, "ListVirtualQps", Access::kClient);
  auto page = PageFromProto(request->page_size(), request->page_token());
  if (!page.ok()) return ToGrpc(page.status());
  auto list = engine_.ListVirtualQps(caller.scope(), *page);
  if (!list.ok()) return ToGrpc(list.status());
  out->set_next_page_token(
      FillPage(*list, Owned<v1::VirtualQpInfo>(), kMaxPageBytes, out->mutable_vqps()));
  return grpc::Status::OK;
}

grpc::Status AgentService::DestroyVirtualQp(grpc::ServerContext* context,
                                            const v1::DestroyVirtualQpRequest* request,
                                            v1::DestroyVirtualQpResponse*) {
  BRAID_ADMIT(context, "DestroyVirtualQp", Access::kClient);
  const common::Status s = engine_.DestroyVirtualQp(request->vqp_id(), caller.scope());
  if (s.ok()) leases_.Forget(LeaseTable::Kind::kVqp, request->vqp_id());
  return ToGrpc(s);
}

grpc::Status AgentService::RegisterMemory(grpc::ServerContext* context,
                                          const v1::RegisterMemoryRequest* request,
                                          v1::RegionInfo* out) {
  BRAID_ADMIT(context, "RegisterMemory", Access::kClient);
  const uint64_t lease = request->lease_id();
  if (lease != 0) {
    if (common::Status s = leases_.Check(lease, caller.owner); !s.ok()) return ToGrpc(s);
  }
  engine::RegisterRequest r{.length = request->length(),
                            .label = request->label(),
                            .owner = caller.owner,
                            .file_uid = caller.uid};
  r.grant_vqps.assign(request->grant_vqp_ids().begin(), request->grant_vqp_ids().end());
  return Leased(context, lease, LeaseTable::Kind::kRegion, caller.owner,
                engine_.RegisterMemory(std::move(r)), out);
}

grpc::Status AgentService::GrantAccess(grpc::ServerContext* context,
                                       const v1::GrantAccessRequest* request,
                                       v1::RemoteRegion* out) {
  BRAID_ADMIT(context, "GrantAccess", Access::kClient);
  auto grant = engine_.GrantAccess(request->region_id(), request->vqp_id(), caller.scope());
  if (!grant.ok()) return ToGrpc(grant.status());
  ToProto(*grant, out);
  return grpc::Status::OK;
}

grpc::Status AgentService::RevokeAccess(grpc::ServerContext* context,
                                        const v1::RevokeAccessRequest* request,
                                        v1::RevokeAccessResponse*) {
  BRAID_ADMIT(context, "RevokeAccess", Access::kClient);
  return ToGrpc(engine_.RevokeAccess(request->region_id(), request->vqp_id(), caller.scope()));
}

grpc::Status AgentService::BindRemote(grpc::ServerContext* context,
                                      const v1::BindRemoteRequest* request,
                                      v1::BindRemoteResponse* out) {
  BRAID_ADMIT(context, "BindRemote", Access::kClient);
  auto handle = engine_.BindRemote(request->session_id(), request->vqp_id(),
                                   FromProto(request->remote()), caller.scope());
  if (!handle.ok()) return ToGrpc(handle.status());
  out->set_handle(*handle);
  return grpc::Status::OK;
}

grpc::Status AgentService::DeregisterMemory(grpc::ServerContext* context,
                                            const v1::DeregisterMemoryRequest* request,
                                            v1::DeregisterMemoryResponse*) {
  BRAID_ADMIT(context, "DeregisterMemory", Access::kClient);
  const common::Status s = engine_.DeregisterMemory(request->region_id(), caller.scope());
  if (s.ok()) leases_.Forget(LeaseTable::Kind::kRegion, request->region_id());
  return ToGrpc(s);
}

grpc::Status AgentService::ListRegions(grpc::ServerContext* context,
                                       const v1::ListRegionsRequest* request,
                                       v1::ListRegionsResponse* out) {
  BRAID_ADMIT(context, "ListRegions", Access::kClient);
  auto page = PageFromProto(request->page_size(), request->page_token());
  if (!page.ok()) return ToGrpc(page.status());
  auto list = engine_.ListRegions(caller.scope(), *page);
  if (!list.ok()) return ToGrpc(list.status());
  out->set_next_page_token(
      FillPage(*list, Owned<v1::RegionInfo>(), kMaxPageBytes, out->mutable_regions()));
  return grpc::Status::OK;
}

grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse>* AgentService::Transfer(
    grpc::CallbackServerContext* context) {
  Caller caller;
  if (grpc::Status refused = Admit(context, "Transfer", Access::kClient, &caller); !refused.ok()) {
    return RefusedBidi<v1::TransferRequest, v1::TransferResponse>::Make(std::move(refused));
  }
  return StartTransferStream(engine_, relay_, caller, windows_.Take(caller.owner),
                             shutting_down_.load());
}

grpc::ServerWriteReactor<v1::WatchNotificationsResponse>* AgentService::WatchNotifications(
    grpc::CallbackServerContext* context, const v1::WatchNotificationsRequest* request) {
  using Refused = RefusedWrite<v1::WatchNotificationsResponse>;
  Caller caller;
  if (grpc::Status refused = Admit(context, "WatchNotifications", Access::kClient, &caller);
      !refused.ok()) {
    return Refused::Make(std::move(refused));
  }
  const uint64_t vqp_id = request->vqp_id();
  // Given back with on_end, which the stream keeps until it is destroyed.
  auto backlog = std::make_shared<CallerBudget::Lease>(backlogs_.Take(caller.owner));
  auto stream = WatchStream<engine::NotificationWatcher, v1::WatchNotificationsResponse>::Create(
      relay_, backlog->size(),
      [](const engine::Notification& n, v1::WatchNotificationsResponse* out) {
        ToProto(n, out->mutable_notification());
      },
      BehindMessage("notifications", backlog->size()),
      [this, vqp_id, backlog] { engine_.PruneWatchers(vqp_id); }, shutting_down_.load());
  if (common::Status s = engine_.Watch(vqp_id, stream->watcher(), caller.scope()); !s.ok()) {
    return Refused::Make(ToGrpc(s));
  }
  return stream->Start();
}

grpc::ServerWriteReactor<v1::WatchEventsResponse>* AgentService::WatchEvents(
    grpc::CallbackServerContext* context, const v1::WatchEventsRequest*) {
  using Refused = RefusedWrite<v1::WatchEventsResponse>;
  Caller caller;
  if (grpc::Status refused = Admit(context, "WatchEvents", Access::kOperator, &caller);
      !refused.ok()) {
    return Refused::Make(std::move(refused));
  }
  auto stream = WatchStream<engine::EventWatcher, v1::WatchEventsResponse>::Create(
      relay_, kWatcherCapacity,
      [](const engine::EngineEvent& e, v1::WatchEventsResponse* out) {
        ToProto(e, out->mutable_event());
      },
      BehindMessage("events", kWatcherCapacity), [this] { engine_.PruneWatchers(0); },
      shutting_down_.load());
  if (common::Status s = engine_.WatchEvents(stream->watcher()); !s.ok()) {
    return Refused::Make(ToGrpc(s));
  }
  return stream->Start();
}

grpc::ServerWriteReactor<v1::HoldResponse>* AgentService::Hold(grpc::CallbackServerContext* context,
                                                               const v1::HoldRequest* request) {
  Caller caller;
  if (grpc::Status refused = Admit(context, "Hold", Access::kClient, &caller); !refused.ok()) {
    return RefusedWrite<v1::HoldResponse>::Make(std::move(refused));
  }
  return HoldStream::Start(relay_, leases_, reclaimer_,
                           {.owner = caller.owner,
                            .identity = caller.Describe(),
                            .resume = request->resume_lease_id(),
                            .grace_ms = options_.lease_grace_ms,
                            .per_owner = options_.leases_per_caller,
                            .shutting_down = shutting_down_.load()});
}

grpc::Status AgentService::EndLease(grpc::ServerContext* context,
                                    const v1::EndLeaseRequest* request, v1::EndLeaseResponse*) {
  BRAID_ADMIT(context, "EndLease", Access::kClient);
  common::Result<LeaseTable::Held> held = leases_.End(request->lease_id(), caller.owner);
  if (!held.ok()) return ToGrpc(held.status());
  // Given back before the answer: a client that closes knows what it held is gone.
  HoldStream::GiveBack(std::move(*held), request->lease_id(), caller.Describe(), reclaimer_,
                       /*now=*/true);
  return grpc::Status::OK;
}

bool AgentService::AwaitCallsDone(std::chrono::milliseconds limit) const {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (open_calls_.count() > 0 || relay_.registered() > 0) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

std::string AgentService::BehindMessage(const char* what, uint32_t capacity) {
  return "the watcher fell more than " + std::to_string(capacity) + " " + what +
         " behind; subscribe again";
}

grpc::Status AgentService::DrainDevice(grpc::ServerContext* context,
                                       const v1::DrainDeviceRequest* request, v1::Device* out) {
  BRAID_ADMIT(context, "DrainDevice", Access::kOperator);
  return Reply(engine_.DrainDevice(request->device()), out);
}

grpc::Status AgentService::UndrainDevice(grpc::ServerContext* context,
                                         const v1::DrainDeviceRequest* request, v1::Device* out) {
  BRAID_ADMIT(context, "UndrainDevice", Access::kOperator);
  return Reply(engine_.UndrainDevice(request->device()), out);
}

grpc::Status AgentService::InjectFault(grpc::ServerContext* context,
                                       const v1::InjectFaultRequest* request,
                                       v1::InjectFaultResponse*) {
  BRAID_ADMIT(context, "InjectFault", Access::kAdmin);
  engine::FaultRequest f;
  switch (request->kind()) {
    case v1::FAULT_KIND_STALL_ENGINE:
      f.kind = engine::FaultKind::kStallEngine;
      break;
    case v1::FAULT_KIND_DEVICE_DOWN:
      f.kind = engine::FaultKind::kDeviceDown;
      break;
    case v1::FAULT_KIND_DEVICE_UP:
      f.kind = engine::FaultKind::kDeviceUp;
      break;
    case v1::FAULT_KIND_BREAK_QP:
      f.kind = engine::FaultKind::kBreakQp;
      break;
    default:
      return {grpc::StatusCode::INVALID_ARGUMENT, "unknown fault kind"};
  }
  f.duration_ms = request->duration_ms();
  f.device = request->device();
  f.vqp_id = request->vqp_id();
  f.qp_index = request->qp_index();
  return ToGrpc(engine_.InjectFault(std::move(f)));
}

grpc::Status AgentService::RecoverQp(grpc::ServerContext* context,
                                     const v1::RecoverQpRequest* request,
                                     v1::RecoverQpResponse* out) {
  BRAID_ADMIT(context, "RecoverQp", Access::kPeer);
  auto card = FromProto(request->qp(), "qp");
  if (!card.ok()) return ToGrpc(card.status());
  engine::RecoveryOffer offer;
  offer.vqp_id = request->vqp_id();
  offer.to_incarnation = request->to_incarnation();
  offer.qp_index = request->qp_index();
  offer.card = *card;
  offer.epoch = request->epoch();
  offer.from_endpoint = request->from_endpoint();
  offer.from_vqp_id = request->from_vqp_id();
  offer.from_incarnation = request->from_incarnation();
  offer.from_identity = caller.identity;
  auto ours = engine_.AcceptRecovery(offer);
  if (!ours.ok()) return ToGrpc(ours.status());
  ToProto(*ours, out->mutable_qp());
  return grpc::Status::OK;
}

}  // namespace braid::server
