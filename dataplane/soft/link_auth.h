// Link authentication of the soft TCP link: the caller of a connection proves it knows the
// connection's link key (verbs::QpRtrParams::link_key, shared out of band through the control
// plane) by a MAC over its hello's fields and the callee's fresh nonce, so a host that can reach a
// soft NIC's port but did not get the business cards cannot attach to a QP, and a recorded hello
// is worth nothing on another connection.
// MAC = HMAC-SHA-256(link key, hello fields (64 bytes) || nonce (24 bytes)).
// Threading: pure functions.
#ifndef BRAID_DATAPLANE_SOFT_LINK_AUTH_H_
#define BRAID_DATAPLANE_SOFT_LINK_AUTH_H_

#include <array>
#include <cstdint>

#include "dataplane/soft/wire_format.h"
#include "dataplane/verbs/qp_params.h"

namespace braid::soft {

// A fresh random nonce (the kernel's random source).
wire::Challenge NewChallenge();
// Sets `hello->mac` for `key` and `challenge`.
void SignHello(const verbs::LinkKey& key, const wire::Challenge& challenge, wire::Hello* hello);
// True when `hello`'s MAC is right for `key` and `challenge` (compared in constant time).
bool HelloAuthentic(const verbs::LinkKey& key, const wire::Challenge& challenge,
                    const wire::Hello& hello);

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_LINK_AUTH_H_
