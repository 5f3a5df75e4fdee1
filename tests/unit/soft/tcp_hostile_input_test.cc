// A soft NIC on the TCP link under hostile input: garbage, truncated and oversized frames and
// segments, and attaches naming unknown or foreign QPs, are refused and counted, and the NIC keeps
// serving its other QPs.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "dataplane/soft/link_auth.h"
#include "dataplane/soft/soft_provider.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/wire_format.h"
#include "tests/testutil/rc_connect.h"
#include "tests/testutil/test_port.h"

namespace braid::soft {
namespace {

const uint16_t kPort = testing::TestPort(2);

class TcpHostileInputTest : public ::testing::Test {
 protected:
  explicit TcpHostileInputTest(TcpFabricOptions options = {.port = kPort}) : fabric_(options) {}
  void SetUp() override {
    for (const char* name : {"soft0", "soft1"}) {
      auto d = provider_.OpenDevice(name);
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      devices_.push_back(std::move(d).value());
      pds_.push_back(std::move(devices_.back()->AllocPd()).value());
      cqs_.push_back(std::move(devices_.back()->CreateCq(256)).value());
    }
    a_.assign(1 << 16, 0);
    b_.assign(1 << 16, 0);
    mr_a_ = std::move(pds_[0]->RegisterMemory(a_.data(), a_.size(), 0xF)).value();
    mr_b_ = std::move(pds_[1]->RegisterMemory(b_.data(), b_.size(), 0xF)).value();
    qa_ = NewQp(0);
    qb_ = NewQp(1);
    ASSERT_TRUE(testing::ConnectRc(*qa_, devices_[0]->info(), *qb_, devices_[1]->info()).ok());
  }
  void TearDown() override {
    for (int fd : open_fds_) close(fd);
    extra_.clear();
    qa_.reset();
    qb_.reset();
    mr_a_.reset();
    mr_b_.reset();
    cqs_.clear();
    pds_.clear();
    devices_.clear();
  }
  std::unique_ptr<verbs::Qp> NewQp(int d) {
    return std::move(pds_[d]->CreateQp({cqs_[d].get(), cqs_[d].get(), {}, false})).value();
  }
  void Pump(int rounds = 2000) {
    for (int i = 0; i < rounds; ++i) fabric_.Progress();
  }
  // A raw client of soft1, accepted: its fd, and the challenge soft1 sent it.
  int Open(wire::Challenge* challenge) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(kPort);
    addr.sin_addr.s_addr = htonl(0x7f000002);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    Pump();  // accepted: the challenge is on its way
    wire::ChallengeBytes bytes{};
    EXPECT_EQ(recv(fd, bytes.data(), bytes.size(), MSG_WAITALL),
              static_cast<ssize_t>(bytes.size()));
    EXPECT_EQ(wire::DecodeChallenge(bytes, challenge), wire::DecodeError::kOk);
    return fd;
  }
  // `bytes`, with the attach they start with (if any) signed with `key` for `challenge`.
  static std::vector<uint8_t> Signed(std::vector<uint8_t> bytes, const wire::Challenge& challenge,
                                     const verbs::LinkKey& key) {
    constexpr size_t kAt = wire::kSegmentHeaderBytes;
    wire::Hello h;
    if (bytes.size() >= kAt + wire::kHelloBytes &&
        wire::DecodeHello(std::span(bytes).subspan(kAt), &h) == wire::DecodeError::kOk) {
      SignHello(key, challenge, &h);
      wire::HelloBytes b;
      wire::EncodeHello(h, &b);
      std::copy(b.begin(), b.end(), bytes.begin() + kAt);
    }
    return bytes;
  }
  static std::vector<uint8_t> Segment(wire::SegmentType type, uint32_t dst, uint32_t src,
                                      const std::vector<uint8_t>& body, uint32_t length) {
    wire::SegmentHeaderBytes h;
    wire::EncodeSegmentHeader({type, wire::DetachReason::kClosed, dst, src, length}, &h);
    std::vector<uint8_t> out(h.begin(), h.end());
    out.insert(out.end(), body.begin(), body.end());
    return out;
  }
  // A data segment for `dst` from `src` carrying `body` (declaring `length` bytes, if set).
  static std::vector<uint8_t> Data(uint32_t dst, uint32_t src, const std::vector<uint8_t>& body,
                                   uint32_t length = 0) {
    return Segment(wire::SegmentType::kData, dst, src, body,
                   length ? length : static_cast<uint32_t>(body.size()));
  }
  // Reads one segment header from `fd`.
  static wire::Segment ReadSegment(int fd) {
    wire::SegmentHeaderBytes bytes{};
    EXPECT_EQ(recv(fd, bytes.data(), bytes.size(), MSG_WAITALL),
              static_cast<ssize_t>(bytes.size()));
    wire::Segment seg;
    EXPECT_EQ(wire::DecodeSegmentHeader(bytes, &seg), wire::DecodeError::kOk);
    return seg;
  }
  void Send(int fd, const std::vector<uint8_t>& bytes, bool close_after) {
    ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
    Pump();
    if (close_after)
      close(fd);
    else
      open_fds_.push_back(fd);
    Pump();
  }
  // A raw client to soft1; sends `bytes` (a hello in them signed with `key`) and closes.
  void Attack(const std::vector<uint8_t>& bytes, bool close_after = true,
              const verbs::LinkKey& key = {}) {
    wire::Challenge challenge;
    const int fd = Open(&challenge);
    Send(fd, Signed(bytes, challenge, key), close_after);
  }
  // An attach segment: the hello of the caller's QP `src_qpn` to the callee's `dst_qpn`.
  std::vector<uint8_t> Hello(uint32_t src_ipv4, uint32_t src_qpn, uint32_t dst_qpn,
                             uint32_t dst_send_psn = 0, uint64_t epoch = 0) {
    wire::Hello h;
    h.epoch = epoch;
    h.src_gid = verbs::Gid::FromIpv4(src_ipv4);
    h.src_qpn = src_qpn;
    h.dst_qpn = dst_qpn;
    h.dst_send_psn = dst_send_psn;
    wire::HelloBytes b;
    wire::EncodeHello(h, &b);
    return Segment(wire::SegmentType::kAttach, dst_qpn, src_qpn, {b.begin(), b.end()},
                   static_cast<uint32_t>(b.size()));
  }
  // The legitimate QP pair still moves data.
  void ExpectStillServing(uint64_t id) {
    for (size_t i = 0; i < 4096; ++i) a_[i] = static_cast<uint8_t>(i * 7 + id);
    ASSERT_TRUE(testing::PostRdma(*qa_, IBV_WR_RDMA_WRITE, reinterpret_cast<uint64_t>(a_.data()),
                                  4096, mr_a_->lkey(), reinterpret_cast<uint64_t>(b_.data()),
                                  mr_b_->rkey(), id)
                    .ok());
    ibv_wc wc[4];
    int got = 0;
    for (int i = 0; i < 200000 && got == 0; ++i) got = *cqs_[0]->Poll(wc);
    ASSERT_EQ(got, 1);
    EXPECT_EQ(wc[0].status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc[0].wr_id, id);
    EXPECT_EQ(std::memcmp(a_.data(), b_.data(), 4096), 0);
  }

  TcpFabric fabric_;
  SoftProvider provider_{{{{"soft0", "127.0.0.1"}, {"soft1", "127.0.0.2"}}, &fabric_}};
  std::vector<std::unique_ptr<verbs::Device>> devices_;
  std::vector<std::unique_ptr<verbs::ProtectionDomain>> pds_;
  std::vector<std::unique_ptr<verbs::Cq>> cqs_;
  std::vector<uint8_t> a_, b_;
  std::unique_ptr<verbs::MemoryRegion> mr_a_, mr_b_;
  std::unique_ptr<verbs::Qp> qa_, qb_;
  std::vector<std::unique_ptr<verbs::Qp>> extra_;
  std::vector<int> open_fds_;
};

TEST_F(TcpHostileInputTest, BadHellosAreRefusedAndCounted) {
  ExpectStillServing(1);
  const TcpFabricStats base = fabric_.stats();
  // Garbage in an attach segment.
  Attack(Segment(wire::SegmentType::kAttach, 6, 5, std::vector<uint8_t>(wire::kHelloBytes, 0xAB),
                 wire::kHelloBytes));
  EXPECT_EQ(fabric_.stats().hellos_refused, base.hellos_refused + 1);
  const std::vector<uint8_t> hello = Hello(0x7f000001, 5, 6);
  Attack({hello.begin(), hello.begin() + 26});  // truncated, then closed
  EXPECT_EQ(fabric_.stats().frames_refused, base.frames_refused + 1);
  Attack(Hello(0x7f000001, 0x100, 0xABCDE));  // unknown QPN
  EXPECT_EQ(fabric_.stats().hellos_refused, base.hellos_refused + 2);
  Attack(Hello(0x7f000009, 0x222, qb_->qp_num()));  // a QP already connected elsewhere
  EXPECT_EQ(fabric_.stats().hellos_refused, base.hellos_refused + 3);
  // A hello contradicting its segment (another QP named in each).
  std::vector<uint8_t> crossed = Hello(0x7f000001, 0x100, 0x200);
  crossed[4] = 0x7F;
  Attack(crossed);
  EXPECT_EQ(fabric_.stats().hellos_refused, base.hellos_refused + 4);
  // The refusals are answered on the connection: an attach naming an unknown QP is detached.
  wire::Challenge challenge;
  const int fd = Open(&challenge);
  Send(fd, Hello(0x7f000001, 0x101, 0xABCDF), /*close_after=*/false);
  const wire::Segment answer = ReadSegment(fd);
  EXPECT_EQ(answer.type, wire::SegmentType::kDetach);
  EXPECT_EQ(answer.reason, wire::DetachReason::kRefused);
  EXPECT_EQ(answer.dst_qpn, 0x101u);
  ExpectStillServing(2);
}

// The caller's hello states the PSN it expects this side to send first; a mismatch with what the
// QP sends (known at its RTS) means the two were not connected alike: refused and counted.
TEST_F(TcpHostileInputTest, HelloWithTheWrongPsnIsRefused) {
  for (const uint32_t expected : {uint32_t{123}, uint32_t{456}}) {
    auto q = NewQp(1);
    ASSERT_TRUE(q->ToInit({}).ok());
    verbs::QpRtrParams rtr;
    rtr.remote = {verbs::Gid::FromIpv4(0x7f000001), 0, 0x99, 0};
    ASSERT_TRUE(q->ToRtr(rtr).ok());
    const uint64_t before = fabric_.stats().hellos_refused;
    Attack(Hello(0x7f000001, 0x99, q->qp_num(), expected), /*close_after=*/false);
    ASSERT_TRUE(q->ToRts({.sq_psn = 456}).ok());
    Pump();
    EXPECT_EQ(fabric_.stats().hellos_refused, before + (expected == 456 ? 0 : 1)) << expected;
    extra_.push_back(std::move(q));
  }
  ExpectStillServing(3);
}

// Issue 5: the hello carries the connection epoch of the caller's RTR; a callee connected with
// another epoch (a caller from an earlier incarnation of the pair) refuses it and keeps waiting:
// the caller with the right epoch is accepted afterwards.
TEST_F(TcpHostileInputTest, HelloOfAnotherEpochIsRefused) {
  auto q = NewQp(1);
  ASSERT_TRUE(q->ToInit({}).ok());
  verbs::QpRtrParams rtr;
  rtr.remote = {verbs::Gid::FromIpv4(0x7f000001), 0, 0x98, 0};
  rtr.epoch = 7;
  ASSERT_TRUE(q->ToRtr(rtr).ok());
  ASSERT_TRUE(q->ToRts({.sq_psn = 456}).ok());
  const uint64_t before = fabric_.stats().hellos_refused;
  for (const uint64_t stale : {uint64_t{6}, uint64_t{0}, uint64_t{8}}) {
    Attack(Hello(0x7f000001, 0x98, q->qp_num(), 456, stale), /*close_after=*/false);
  }
  EXPECT_EQ(fabric_.stats().hellos_refused, before + 3);
  Attack(Hello(0x7f000001, 0x98, q->qp_num(), 456, 7), /*close_after=*/false);
  EXPECT_EQ(fabric_.stats().hellos_refused, before + 3);  // the right epoch: accepted
  extra_.push_back(std::move(q));
  ExpectStillServing(4);
}

// A caller must prove it knows the connection's link key: a hello signed with another key, or a
// signed hello recorded from another connection (another challenge), is refused and counted, and
// the QP keeps waiting for the caller that knows the key.
TEST_F(TcpHostileInputTest, AHelloThatDoesNotProveTheLinkKeyIsRefused) {
  auto q = NewQp(1);
  ASSERT_TRUE(q->ToInit({}).ok());
  verbs::QpRtrParams rtr;
  rtr.remote = {verbs::Gid::FromIpv4(0x7f000001), 0, 0x97, 0};
  rtr.link_key.fill(0x5C);
  ASSERT_TRUE(q->ToRtr(rtr).ok());
  ASSERT_TRUE(q->ToRts({.sq_psn = 456}).ok());
  const std::vector<uint8_t> hello = Hello(0x7f000001, 0x97, q->qp_num(), 456);
  const TcpFabricStats before = fabric_.stats();
  verbs::LinkKey wrong{};
  wrong.fill(0x5C);
  wrong[31] ^= 1;
  Attack(hello, /*close_after=*/false, wrong);
  wire::Challenge first, second;
  const int fd1 = Open(&first);
  const int fd2 = Open(&second);
  Send(fd2, Signed(hello, first, rtr.link_key), /*close_after=*/false);  // a replay elsewhere
  EXPECT_EQ(fabric_.stats().hellos_unauthenticated, before.hellos_unauthenticated + 2);
  EXPECT_EQ(fabric_.stats().hellos_refused, before.hellos_refused + 2);
  Send(fd1, Signed(hello, first, rtr.link_key), /*close_after=*/false);  // the right caller
  EXPECT_EQ(fabric_.stats().hellos_refused, before.hellos_refused + 2);
  // Attached: the QP says so, and what it sends now comes out on that connection.
  const wire::Segment attached = ReadSegment(fd1);
  EXPECT_EQ(attached.type, wire::SegmentType::kAttached);
  EXPECT_EQ(attached.dst_qpn, 0x97u);
  ASSERT_TRUE(testing::PostRdma(*q, IBV_WR_RDMA_WRITE, reinterpret_cast<uint64_t>(b_.data()), 16,
                                mr_b_->lkey(), 0x1000, 0x1234, 77)
                  .ok());
  Pump();
  const wire::Segment data = ReadSegment(fd1);
  EXPECT_EQ(data.type, wire::SegmentType::kData);
  EXPECT_EQ(data.length, wire::kFrameHeaderBytes + 16);
  wire::FrameHeaderBytes frame{};
  ASSERT_EQ(recv(fd1, frame.data(), frame.size(), MSG_WAITALL), static_cast<ssize_t>(frame.size()));
  PacketHeader header;
  ASSERT_EQ(wire::DecodeFrameHeader(frame, &header), wire::DecodeError::kOk);
  EXPECT_EQ(header.dst_qpn, 0x97u);
  EXPECT_EQ(header.src_qpn, q->qp_num());
  extra_.push_back(std::move(q));
  ExpectStillServing(5);
}

TEST_F(TcpHostileInputTest, BadFramesAreRefusedAndTheConnectionClosed) {
  auto header = [](uint32_t dst, uint32_t payload_len) {
    PacketHeader h;
    h.type = PacketType::kRequest;
    h.opcode = IBV_WR_RDMA_WRITE;
    h.src_qpn = 0x77;
    h.dst_qpn = dst;
    h.length = payload_len;
    h.payload_len = payload_len;
    wire::FrameHeaderBytes b;
    wire::EncodeFrameHeader(h, &b);
    return std::vector<uint8_t>(b.begin(), b.end());
  };
  const std::vector<uint8_t> small = header(0, 16);
  const std::vector<std::vector<uint8_t>> bad = {
      std::vector<uint8_t>(64, 0x5A),       // garbage
      header(0, (1u << 31) + 1),            // oversized payload
      {small.begin(), small.begin() + 30},  // truncated, then closed
      header(0xBEEF, 16),                   // another QP's frame
      {},                                   // a garbage segment header
  };
  const uint64_t base = fabric_.stats().frames_refused;
  for (size_t i = 0; i < bad.size(); ++i) {
    // A QP of soft1 waiting for its caller (127.0.0.1, QPN 0x77): the attacker impersonates it.
    auto q = NewQp(1);
    ASSERT_TRUE(q->ToInit({}).ok());
    verbs::QpRtrParams rtr;
    rtr.remote = {verbs::Gid::FromIpv4(0x7f000001), 0, 0x77, 0};
    ASSERT_TRUE(q->ToRtr(rtr).ok());
    std::vector<uint8_t> bytes = Hello(0x7f000001, 0x77, q->qp_num());
    std::vector<uint8_t> frame = bad[i];
    if (i != 3 && frame.size() >= 20) {  // address the frame to this QP (except the foreign one)
      const uint32_t dst = q->qp_num();
      std::memcpy(frame.data() + 16, &dst, 4);
    }
    // In a data segment of the pair (the truncated one declares a whole header).
    const std::vector<uint8_t> segment =
        frame.empty() ? std::vector<uint8_t>(wire::kSegmentHeaderBytes, 0x5A)
                      : Data(q->qp_num(), 0x77, frame, i == 2 ? wire::kFrameHeaderBytes : 0);
    bytes.insert(bytes.end(), segment.begin(), segment.end());
    Attack(bytes);
    EXPECT_EQ(fabric_.stats().frames_refused, base + i + 1) << "case " << i;
    extra_.push_back(std::move(q));
    ExpectStillServing(10 + i);
  }
}

// Soft NIC 1 with a 1 s time to join and room for 4 connections that have not.
class TcpUnjoinedTest : public TcpHostileInputTest {
 protected:
  TcpUnjoinedTest()
      : TcpHostileInputTest({.port = kPort, .join_timeout_ns = 1'000'000'000, .max_unjoined = 4}) {}
  // Whether soft1 closed `fd` (end of file; the challenge was read).
  static bool Closed(int fd) {
    char byte;
    return recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
  }
};

// Connections that never attach (a port scan, a flood of idle sockets) each held one of the
// agent's descriptors for as long as their sender liked: 5,000 of them took 5,000. Now past the
// cap the oldest is closed for each new one, and the rest when their time to join is up, while
// a QP pair connecting meanwhile joins and keeps serving.
TEST_F(TcpUnjoinedTest, ConnectionsThatNeverAttachAreCappedAndClosedWhenTheirTimeIsUp) {
  // soft0's connection to soft1 was accepted first and joined: neither the cap (which closes the
  // oldest) nor the time limit touches it.
  ExpectStillServing(1);
  const TcpFabricStats base = fabric_.stats();
  std::vector<int> idle;
  for (int i = 0; i < 10; ++i) {
    wire::Challenge challenge;
    idle.push_back(Open(&challenge));
    open_fds_.push_back(idle.back());
  }
  Pump();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Closed(idle[i]), i < 6) << "connection " << i;
  EXPECT_EQ(fabric_.stats().connections_unjoined, base.connections_unjoined + 6);
  ExpectStillServing(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Pump();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(Closed(idle[i])) << "connection " << i;
  EXPECT_EQ(fabric_.stats().connections_unjoined, base.connections_unjoined + 10);
  ExpectStillServing(3);
}

}  // namespace
}  // namespace braid::soft
