// ListenOnUnixSocket: the listening socket of one of the agent's Unix socket paths (the gRPC
// socket, the session socket), taken without taking it from anyone. A socket file left by an
// earlier run that nothing serves any more is replaced; a path some process still serves on (a
// second braidd started with the same config) or that is not a socket at all (a config typo
// naming a real file) is refused by name and left as it is. The socket is made 0660.
//
// Threading: a plain function, called at start-up.
#ifndef BRAID_SERVER_UNIX_SOCKET_H_
#define BRAID_SERVER_UNIX_SOCKET_H_

#include <string>
#include <string_view>

#include "dataplane/common/result.h"
#include "dataplane/common/unique_fd.h"

namespace braid::server {

// A listening, non-blocking, close-on-exec socket of `type` (SOCK_STREAM, SOCK_SEQPACKET) bound to
// `path`. `what` names the socket in messages ("Unix socket", "session socket").
common::Result<common::UniqueFd> ListenOnUnixSocket(const std::string& path, int type,
                                                    std::string_view what);

}  // namespace braid::server

#endif  // BRAID_SERVER_UNIX_SOCKET_H_
