// The engine's state and outcomes as braid.v1 messages, and Status → grpc::Status. What callers
// send is parsed in request_mapping.h (included here: the two directions of one service).
// Threading: pure functions.
#ifndef BRAID_SERVER_PROTO_MAPPING_H_
#define BRAID_SERVER_PROTO_MAPPING_H_

#include <grpcpp/grpcpp.h>

#include "braid/v1/agent.pb.h"
#include "dataplane/common/status.h"
#include "dataplane/engine/engine_types.h"
#include "server/request_mapping.h"

namespace braid::server {

grpc::StatusCode ToGrpcCode(common::StatusCode code);
grpc::Status ToGrpc(const common::Status& status);

void ToProto(const engine::DeviceStatus& device, v1::Device* out);
void ToProto(const engine::VqpStatus& vqp, v1::VirtualQpInfo* out);
void ToProto(const engine::RegionStatus& region, v1::RegionInfo* out);
void ToProto(const engine::TransferResult& result, v1::TransferCompletion* out);
void ToProto(const engine::Notification& n, v1::Notification* out);
void ToProto(const engine::EngineEvent& e, v1::Event* out);

}  // namespace braid::server

#endif  // BRAID_SERVER_PROTO_MAPPING_H_
