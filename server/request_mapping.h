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

#include <string>
#include <string_view>
#include <utility>

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

// A list's pages (ListVirtualQps, ListRegions): at most `page_size` entries (0: kDefaultPageSize;
// more than kMaxPageSize is taken as kMaxPageSize), at most about kMaxPageBytes serialized. The
// token is the id the next page starts after, in decimal; a token this agent did not write is an
// INVALID_ARGUMENT.
inline constexpr uint32_t kDefaultPageSize = 500;
inline constexpr uint32_t kMaxPageSize = 1000;
inline constexpr size_t kMaxPageBytes = 2 << 20;
common::Result<engine::ListPage> PageFromProto(uint32_t page_size, std::string_view page_token);
inline std::string PageToken(uint64_t next_after) {  // "" for 0: the last page
  return next_after == 0 ? std::string() : std::to_string(next_after);
}

// Adds `list`'s entries (each written by `write(item, &info)`) to `out` as far as `max_bytes` of
// them serialized allow, one at least; returns the token of the page after.
template <typename T, typename Write, typename Info>
std::string FillPage(const engine::Listed<T>& list, Write&& write, size_t max_bytes,
                     google::protobuf::RepeatedPtrField<Info>* out) {
  size_t bytes = 0;
  uint64_t last = 0;
  for (const T& item : list.items) {
    Info info;
    write(item, &info);
    bytes += info.ByteSizeLong();
    // The page is full: the next starts after the last entry it holds.
    if (bytes > max_bytes && last != 0) return PageToken(last);
    *out->Add() = std::move(info);
    last = item.id;
  }
  return PageToken(list.next_after);
}

}  // namespace braid::server

#endif  // BRAID_SERVER_REQUEST_MAPPING_H_
