// libFuzzer target: what a caller sends the control plane, parsed into the engine's types
// (server/request_mapping.h): a peer's business card, a VQP creation request, a transfer
// operation, a list's page. The first byte picks the message, the rest is its protobuf encoding.
// Whatever the bytes, parsing must not crash, and:
//  - a refusal says why in a bounded message (client input quoted, never echoed whole: a long
//    message overflows gRPC's metadata limit and the caller sees RESOURCE_EXHAUSTED instead);
//  - a card that parses is valid, can connect with its own copy (CheckPeerCards), and maps back
//    to a message that parses to the same card;
//  - a page that parses asks for 1 to kMaxPageSize entries, and its token is the one the agent
//    would write for where it starts.
// Seeds: tests/fuzz/control_seeds/*.txtpb (protobuf text, encoded by `make fuzz`).
#include <cstddef>
#include <cstdint>

#include "server/request_mapping.h"

namespace {

// The longest refusal: a field path and a value or two, with at most two quoted strings.
constexpr size_t kMaxMessage = 512;

void CheckRefusal(const braid::common::Status& s) {
  if (s.ok() || s.message().empty() || s.message().size() > kMaxMessage) __builtin_trap();
}

void CheckCard(const braid::v1::BusinessCard& message) {
  auto card = braid::server::FromProto(message);
  if (!card.ok()) return CheckRefusal(card.status());
  if (!card->Validate().ok() || !braid::vqp::CheckPeerCards(*card, *card).ok()) __builtin_trap();
  braid::v1::BusinessCard again;
  braid::server::ToProto(*card, &again);
  auto back = braid::server::FromProto(again);
  if (!back.ok()) __builtin_trap();
  braid::v1::BusinessCard third;
  braid::server::ToProto(*back, &third);
  if (again.SerializeAsString() != third.SerializeAsString()) __builtin_trap();
}

// A request that does not parse into the engine's type is refused with a bounded message.
template <typename Message>
void CheckRequest(const uint8_t* data, int bytes) {
  Message request;
  if (!request.ParseFromArray(data, bytes)) return;
  auto parsed = braid::server::FromProto(request);
  if (!parsed.ok()) CheckRefusal(parsed.status());
}

void CheckPage(const braid::v1::ListVirtualQpsRequest& request) {
  auto page = braid::server::PageFromProto(request.page_size(), request.page_token());
  if (!page.ok()) return CheckRefusal(page.status());
  if (page->limit == 0 || page->limit > braid::server::kMaxPageSize) __builtin_trap();
  if (braid::server::PageToken(page->after) != request.page_token()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int bytes = static_cast<int>(size - 1);
  switch (data[0] % 4) {
    case 0: {
      braid::v1::BusinessCard card;
      if (card.ParseFromArray(data + 1, bytes)) CheckCard(card);
      break;
    }
    case 1:
      CheckRequest<braid::v1::CreateVirtualQpRequest>(data + 1, bytes);
      break;
    case 2:
      CheckRequest<braid::v1::TransferOp>(data + 1, bytes);
      break;
    case 3: {
      braid::v1::ListVirtualQpsRequest request;
      if (request.ParseFromArray(data + 1, bytes)) CheckPage(request);
      break;
    }
  }
  return 0;
}
