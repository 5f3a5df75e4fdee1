#include "dataplane/soft/wire_format.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <random>

namespace braid::soft::wire {
namespace {

PacketHeader Sample(PacketType type) {
  PacketHeader h;
  h.type = type;
  h.src_qpn = 0x123456;
  h.dst_qpn = 0x000101;
  h.psn = 0xFFFFFE;
  h.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  h.length = 4096;
  h.payload_len = type == PacketType::kRequest || type == PacketType::kReadResponse ? 4096 : 0;
  h.remote_addr = 0x7f00'1234'5678'9abcull;
  h.rkey = 0xCAFE80;
  h.imm_data = htonl(0xA1B2C3D4);
  h.compare_add = 0x1111222233334444ull;
  h.swap = 0x5555666677778888ull;
  h.nak = NakCode::kRemoteAccess;
  h.rnr_timer = 12;
  h.atomic_orig = type == PacketType::kAtomicResponse ? 0x9999ull : 0;
  return h;
}

TEST(WireFormatTest, FrameHeaderRoundTripsEveryType) {
  for (PacketType type : {PacketType::kRequest, PacketType::kAck, PacketType::kNak,
                          PacketType::kReadResponse, PacketType::kAtomicResponse}) {
    const PacketHeader in = Sample(type);
    FrameHeaderBytes bytes;
    EncodeFrameHeader(in, &bytes);
    PacketHeader out;
    ASSERT_EQ(DecodeFrameHeader(bytes, &out), DecodeError::kOk) << static_cast<int>(type);
    EXPECT_EQ(out.type, in.type);
    EXPECT_EQ(out.src_qpn, in.src_qpn);
    EXPECT_EQ(out.dst_qpn, in.dst_qpn);
    EXPECT_EQ(out.psn, in.psn);
    EXPECT_EQ(out.length, in.length);
    EXPECT_EQ(out.payload_len, in.payload_len);
    EXPECT_EQ(out.remote_addr, in.remote_addr);
    EXPECT_EQ(out.rkey, in.rkey);
    EXPECT_EQ(out.imm_data, in.imm_data) << "immediate carried verbatim (network order)";
    EXPECT_EQ(out.nak, in.nak);
    EXPECT_EQ(out.rnr_timer, in.rnr_timer);
    EXPECT_EQ(out.swap, in.swap);
    if (type == PacketType::kAtomicResponse) {
      EXPECT_EQ(out.atomic_orig, in.atomic_orig);
    } else {
      EXPECT_EQ(out.compare_add, in.compare_add);
    }
  }
}

TEST(WireFormatTest, EveryMalformedHeaderIsRefusedWithItsReason) {
  FrameHeaderBytes good;
  EncodeFrameHeader(Sample(PacketType::kRequest), &good);
  PacketHeader out;
  EXPECT_EQ(DecodeFrameHeader(std::span(good.data(), 63), &out), DecodeError::kTruncated);
  struct Case {
    size_t offset;
    uint8_t value;
    DecodeError expected;
  };
  const Case cases[] = {
      {0, 0x00, DecodeError::kBadMagic},   {4, 0x07, DecodeError::kBadVersion},
      {6, 0x09, DecodeError::kBadType},    {8, 0x09, DecodeError::kBadType},
      {9, 0x63, DecodeError::kBadOpcode},  {10, 0x0F, DecodeError::kBadNak},
      {31, 0x80, DecodeError::kOversized}, {22, 0xFF, DecodeError::kBadLength},
  };
  for (const Case& c : cases) {
    FrameHeaderBytes bad = good;
    bad[c.offset] = c.value;
    if (c.offset == 22) bad[23] = 0xFF;  // psn above 24 bits
    EXPECT_EQ(DecodeFrameHeader(bad, &out), c.expected) << "offset " << c.offset;
  }
  PacketHeader ack = Sample(PacketType::kAck);
  ack.payload_len = 10;  // an ACK carries no payload
  FrameHeaderBytes bad;
  EncodeFrameHeader(ack, &bad);
  EXPECT_EQ(DecodeFrameHeader(bad, &out), DecodeError::kBadLength);
}

TEST(WireFormatTest, HelloRoundTripAndRefusal) {
  Hello in;
  in.src_gid = *verbs::Gid::ParseIpv4("127.0.0.3");
  in.src_qpn = 0x101;
  in.dst_qpn = 0x102;
  in.dst_send_psn = 0xABCDEF;
  in.epoch = 7;
  for (size_t i = 0; i < in.mac.size(); ++i) in.mac[i] = static_cast<uint8_t>(i * 5 + 1);
  HelloBytes bytes;
  EncodeHello(in, &bytes);
  Hello out;
  ASSERT_EQ(DecodeHello(bytes, &out), DecodeError::kOk);
  EXPECT_EQ(out.src_gid, in.src_gid);
  EXPECT_EQ(out.src_qpn, in.src_qpn);
  EXPECT_EQ(out.dst_qpn, in.dst_qpn);
  EXPECT_EQ(out.dst_send_psn, in.dst_send_psn);
  EXPECT_EQ(out.epoch, 7u);
  EXPECT_EQ(out.mac, in.mac);
  FrameHeaderBytes frame;
  EncodeFrameHeader(Sample(PacketType::kAck), &frame);
  std::array<uint8_t, kHelloBytes> padded{};
  std::copy(frame.begin(), frame.end(), padded.begin());
  EXPECT_EQ(DecodeHello(padded, &out), DecodeError::kBadType) << "a frame is not a hello";
  EXPECT_EQ(DecodeHello(std::span(bytes.data(), 10), &out), DecodeError::kTruncated);
}

// Seeded garbage: the parser never crashes and whatever it accepts is in range.
TEST(WireFormatTest, GarbageNeverCrashesTheParser) {
  std::mt19937_64 rng(99);
  FrameHeaderBytes good;
  EncodeFrameHeader(Sample(PacketType::kRequest), &good);
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    FrameHeaderBytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (i % 4 == 0) {
      for (auto& x : b) x = static_cast<uint8_t>(rng());
    }
    PacketHeader h;
    const size_t len = rng() % 8 == 0 ? rng() % 64 : 64;
    if (DecodeFrameHeader(std::span(b.data(), len), &h) == DecodeError::kOk) {
      ++accepted;
      ASSERT_LE(static_cast<int>(h.type), static_cast<int>(PacketType::kAtomicResponse));
      ASSERT_LE(h.payload_len, kMaxPayload);
      ASSERT_LE(h.psn, kPsnMask);
    }
  }
  EXPECT_GT(accepted, 0) << "some mutations keep a valid header";
}

}  // namespace
}  // namespace braid::soft::wire
