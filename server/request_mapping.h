// What callers send, as the engine's plain types: business cards (both ways: an agent hands out
// its own and parses its peer's), VQP creation requests, transfer operations and remote regions.
//
// Everything here is untrusted input. Parsing never aborts and allocates no more than the message
// holds: a malformed message (a GID of the wrong size, an unknown scheme, a value out of its
// field's range) is an INVALID_ARGUMENT naming the field, quoting client input at most
// common::kMaxQuoted characters. A card that parses is valid (BusinessCard::Validate) and maps back
// to the same message. libFuzzer target: tests/fuzz/control_request_fuzz.cc.
// Threading: pure functions.
#ifndef BRAID_SERVER_REQUEST_MAPPING_H_
#define BRAID_SERVER_REQUEST_MAPPING_H_

#include "braid/v1/agent.pb.h"
#include "braid/v1/business_card.pb.h"
#include "dataplane/common/result.h"
#include "dataplane/engine/engine_types.h"
#include "dataplane/vqp/business_card.h"

namespace braid::server {

void ToProto(const vqp::QpCard& qp, v1::QpCard* out);
common::Result<vqp::QpCard> FromProto(const v1::QpCard& qp, const char* field);
void ToProto(const vqp::BusinessCard& card, v1::BusinessCard* out);
common::Result<vqp::BusinessCard> FromProto(const v1::BusinessCard& card);

void ToProto(const engine::RemoteRegion& region, v1::RemoteRegion* out);
engine::RemoteRegion FromProto(const v1::RemoteRegion& region);
common::Result<engine::CreateVqpRequest> FromProto(const v1::CreateVirtualQpRequest& request);
common::Result<engine::TransferRequest> FromProto(const v1::TransferOp& op);

}  // namespace braid::server

#endif  // BRAID_SERVER_REQUEST_MAPPING_H_
