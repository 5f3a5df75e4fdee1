// BusinessCard: what one side of a VQP tells the other to connect.
//
// A plain, versioned struct; its protobuf form lives in proto/braid/v1/business_card.proto and the
// mapping in server/. QP i pairs with the peer's QP i. Validate() checks one card on its own;
// CheckPeerCards() checks that two cards can connect (same scheme, sizes and QP counts). Neither
// ever aborts: bad input is a Status.
#ifndef BRAID_DATAPLANE_VQP_BUSINESS_CARD_H_
#define BRAID_DATAPLANE_VQP_BUSINESS_CARD_H_

#include <infiniband/verbs.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/common/status.h"
#include "dataplane/verbs/gid.h"
#include "dataplane/verbs/qp_params.h"
#include "dataplane/vqp/vqp_types.h"

namespace braid::vqp {

// Bounds of a card's strings: a device name as the verbs library names devices
// (IBV_SYSFS_NAME_MAX), a host:port endpoint, and an identity as long as a SPIFFE ID may be.
inline constexpr size_t kMaxDeviceNameBytes = 64;
inline constexpr size_t kMaxEndpointBytes = 1024;
inline constexpr size_t kMaxIdentityBytes = 2048;

struct DeviceCard {
  std::string name;
  verbs::Gid gid;
  uint16_t lid = 0;
  uint32_t control_rkey = 0;  // rkey of the VQP's control region on this device
};

struct QpCard {
  uint32_t device_index = 0;  // into BusinessCard::devices
  uint8_t port = 1;
  uint32_t qp_num = 0;
  uint32_t psn = 0;
  // An ibv_mtu code (1 = 256 B ... 5 = 4096 B), kept as an integer so a card parsed from the wire
  // can hold any value until Validate() rejects it.
  uint8_t mtu = IBV_MTU_4096;
};

struct BusinessCard {
  static constexpr uint32_t kVersion = 1;

  uint32_t version = kVersion;
  uint64_t vqp_id = 0;
  uint64_t epoch = 0;  // bumped on every reconnect
  Scheme scheme = Scheme::kSpray;
  uint64_t fragment_size = kDefaultFragmentSize;
  uint32_t qp_capacity = 0;
  uint32_t max_virtual_wrs = 0;
  std::string control_endpoint;  // the agent's gRPC endpoint, for coordinated recovery
  // The agent process that issued the card (random per start): with vqp_id, the VQP's identity.
  // A restarted agent reuses VQP ids but never an incarnation, so nothing of a previous life can
  // reach a new VQP.
  uint64_t incarnation = 0;
  // The issuing agent's identity as its peers authenticate it ("" when it calls without TLS): a
  // VQP connected with this card accepts recovery requests from that identity only.
  std::string agent_identity;
  // Random per VQP. The two cards' secrets make the connection's link key (LinkKeyOf), which a
  // soft NIC's caller must prove it knows: only who saw both cards can attach to the QPs. (The
  // control plane carries cards over TLS; with plaintext gRPC the secret is as open as the card.)
  verbs::LinkKey link_secret{};
  std::vector<DeviceCard> devices;
  uint64_t control_addr = 0;  // the VQP's control region (target of fence READs)
  std::vector<QpCard> data_qps;
  std::optional<QpCard> message_qp;  // present iff there is more than one data QP

  common::Status Validate() const;
};

// The link key of a connection between the VQPs of cards `a` and `b` (the same both ways).
verbs::LinkKey LinkKeyOf(const BusinessCard& a, const BusinessCard& b);

// Both cards valid and able to connect with each other.
common::Status CheckPeerCards(const BusinessCard& local, const BusinessCard& remote);

}  // namespace braid::vqp

#endif  // BRAID_DATAPLANE_VQP_BUSINESS_CARD_H_
