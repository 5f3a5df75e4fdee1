// The session socket's messages: a reply the agent sent just before closing is received even when
// the request it answered was still unread (the agent refusing a connection answers and closes
// without reading it) or could not even be sent (it closed first), and a side that closed with
// nothing sent reads as closed.
#include "dataplane/session/session_wire.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "dataplane/common/unique_fd.h"

namespace braid::session {
namespace {

struct Pair {
  common::UniqueFd agent, client;
};

Pair SeqpacketPair() {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
  return {common::UniqueFd(fds[0]), common::UniqueFd(fds[1])};
}

TEST(SessionWireTest, AReplySentBeforeACloseThatLeftTheRequestUnreadIsStillReceived) {
  Pair p = SeqpacketPair();
  WireReply refusal;
  refusal.op = static_cast<uint16_t>(WireOp::kOpenSession);
  refusal.code = static_cast<uint32_t>(common::StatusCode::kNoResource);
  ASSERT_TRUE(SendMessage(p.agent.get(), &refusal, sizeof(refusal), {}).ok());
  WireRequest request;
  request.op = static_cast<uint16_t>(WireOp::kOpenSession);
  ASSERT_TRUE(SendMessage(p.client.get(), &request, sizeof(request), {}).ok());
  p.agent.reset();  // the request unread: the client's side is reset
  WireReply got;
  std::vector<int> fds;
  const common::Status s = ReceiveMessage(p.client.get(), &got, sizeof(got), &fds);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got.code, refusal.code);
  EXPECT_TRUE(fds.empty());
  // Then the socket reads as closed.
  const common::Status after = ReceiveMessage(p.client.get(), &got, sizeof(got), &fds);
  EXPECT_EQ(after.code(), common::StatusCode::kIoError) << after.ToString();
}

TEST(SessionWireTest, ASideClosedWithNothingSentReadsAsClosed) {
  for (const bool request_unread : {false, true}) {
    Pair p = SeqpacketPair();
    if (request_unread) {
      WireRequest request;
      ASSERT_TRUE(SendMessage(p.client.get(), &request, sizeof(request), {}).ok());
    }
    p.agent.reset();
    WireReply got;
    std::vector<int> fds;
    const common::Status s = ReceiveMessage(p.client.get(), &got, sizeof(got), &fds);
    EXPECT_EQ(s.code(), common::StatusCode::kIoError) << request_unread << ": " << s.ToString();
  }
}

// The refusal was on its way before the client's request: the request finds the socket closed, and
// the client still reports the agent's reason, not only that the socket is gone (an SDK client
// refused past the agent's connection limit under load saw "the other side of the session socket
// is gone").
TEST(SessionWireTest, ARefusalSentAndClosedBeforeTheRequestIsReportedAsTheRefusal) {
  Pair p = SeqpacketPair();
  WireReply refusal;
  refusal.op = static_cast<uint16_t>(WireOp::kOpenSession);
  refusal.code = static_cast<uint32_t>(common::StatusCode::kNoResource);
  std::strncpy(refusal.message, "uid 0 holds 100 connections, its limit", sizeof(refusal.message));
  ASSERT_TRUE(SendMessage(p.agent.get(), &refusal, sizeof(refusal), {}).ok());
  p.agent.reset();
  WireRequest request;
  request.op = static_cast<uint16_t>(WireOp::kOpenSession);
  std::vector<int> fds;
  const common::Result<WireReply> r = Exchange(p.client.get(), request, -1, &fds);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), common::StatusCode::kNoResource) << r.status().ToString();
  EXPECT_NE(r.status().ToString().find("its limit"), std::string::npos) << r.status().ToString();
  // Nothing queued: the closed socket itself.
  const common::Result<WireReply> again = Exchange(p.client.get(), request, -1, &fds);
  EXPECT_EQ(again.status().code(), common::StatusCode::kIoError) << again.status().ToString();
}

}  // namespace
}  // namespace braid::session
