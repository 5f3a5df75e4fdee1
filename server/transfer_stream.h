// TransferStream: one Transfer call (braid.v1.Agent/Transfer) on gRPC's callback API.
//
// Reads messages of one or more operations and submits them to the engine; the engine delivers
// each result into the stream's TransferSink, and the StreamRelay (or the completion of the
// previous write) makes the stream write what is queued, many completions per message. While
// `window` operations are outstanding (read, not yet written back) it reads no more, so HTTP/2
// flow control holds the client back; a message carries at most `window` operations (more, or
// none, ends the stream with INVALID_ARGUMENT once what was accepted has completed). Every
// accepted operation's result is written before the stream ends, also at shutdown (the engine
// completes what is left); a cancelled client is told nothing. Operations reach the engine in the
// order they were read, one command per message; when its command queue is full (a stalled engine)
// the message is held and reading stops until the engine, taking commands again, rings the relay.
// No thread of its own, no sleeping in gRPC's threads.
// Threading: gRPC's reactions and the relay's OnReady, serialized by one mutex that is never held
// while calling into gRPC (whose reactions may run inline).
// Ownership: gRPC owns the reactor (it deletes itself in OnDone); the relay and the reactor share
// the Link, which outlives whichever goes first.
#ifndef BRAID_SERVER_TRANSFER_STREAM_H_
#define BRAID_SERVER_TRANSFER_STREAM_H_

#include <memory>

#include "braid/v1/agent.grpc.pb.h"
#include "dataplane/engine/engine.h"
#include "server/authenticator.h"
#include "server/caller_budget.h"
#include "server/stream_relay.h"

namespace braid::server {

// Starts a Transfer stream for an admitted caller, with the window `window` leases it (held until
// the stream is destroyed).
grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferResponse>* StartTransferStream(
    engine::Engine& engine, StreamRelay& relay, const Caller& caller, CallerBudget::Lease window,
    bool shutting_down);

}  // namespace braid::server

#endif  // BRAID_SERVER_TRANSFER_STREAM_H_
