// Mapping between the engine's plain types and braid.v1 messages, and Status → grpc::Status.
//
// Parsing never aborts: a malformed message (a GID of the wrong size, an unknown scheme, a value
// out of its field's range) is an INVALID_ARGUMENT with a message naming the field.
// Threading: pure functions.
#ifndef BRAID_SERVER_PROTO_MAPPING_H_
#define BRAID_SERVER_PROTO_MAPPING_H_

#include <grpcpp/grpcpp.h>

#include "braid/v1/agent.pb.h"
#include "braid/v1/business_card.pb.h"
#include "dataplane/common/result.h"
#include "dataplane/engine/engine_types.h"
#include "dataplane/vqp/business_card.h"

namespace braid::server {

grpc::StatusCode ToGrpcCode(common::StatusCode code);
grpc::Status ToGrpc(const common::Status& status);

void ToProto(const vqp::QpCard& qp, v1::QpCard* out);
common::Result<vqp::QpCard> FromProto(const v1::QpCard& qp, const char* field);
void ToProto(const vqp::BusinessCard& card, v1::BusinessCard* out);
common::Result<vqp::BusinessCard> FromProto(const v1::BusinessCard& card);

void ToProto(const engine::DeviceStatus& device, v1::Device* out);
void ToProto(const engine::VqpStatus& vqp, v1::VirtualQpInfo* out);
void ToProto(const engine::RemoteRegion& region, v1::RemoteRegion* out);
engine::RemoteRegion FromProto(const v1::RemoteRegion& region);
void ToProto(const engine::RegionStatus& region, v1::RegionInfo* out);
common::Result<engine::CreateVqpRequest> FromProto(const v1::CreateVirtualQpRequest& request);
common::Result<engine::TransferRequest> FromProto(const v1::TransferOp& op);
void ToProto(const engine::TransferResult& result, v1::TransferCompletion* out);
void ToProto(const engine::Notification& n, v1::Notification* out);
void ToProto(const engine::EngineEvent& e, v1::Event* out);

}  // namespace braid::server

#endif  // BRAID_SERVER_PROTO_MAPPING_H_
