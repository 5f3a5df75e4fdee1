#include "dataplane/soft/link_auth.h"

#include <gtest/gtest.h>

namespace braid::soft {
namespace {

wire::Hello SampleHello() {
  wire::Hello h;
  h.src_gid = verbs::Gid::FromIpv4(0x7f000001);
  h.src_qpn = 0x11;
  h.dst_qpn = 0x22;
  h.dst_send_psn = 0x333;
  h.epoch = 4;
  return h;
}

TEST(LinkAuthTest, OnlyTheKeyAndTheChallengeSignedForMakeAnAuthenticHello) {
  verbs::LinkKey key{};
  key.fill(0x42);
  const wire::Challenge challenge = NewChallenge();
  wire::Hello hello = SampleHello();
  SignHello(key, challenge, &hello);
  EXPECT_TRUE(HelloAuthentic(key, challenge, hello));
  // Survives the wire.
  wire::HelloBytes bytes;
  wire::EncodeHello(hello, &bytes);
  wire::Hello decoded;
  ASSERT_EQ(wire::DecodeHello(bytes, &decoded), wire::DecodeError::kOk);
  EXPECT_TRUE(HelloAuthentic(key, challenge, decoded));

  verbs::LinkKey other = key;
  other[0] ^= 0x80;
  EXPECT_FALSE(HelloAuthentic(other, challenge, hello)) << "another key";
  wire::Challenge replayed = NewChallenge();
  EXPECT_NE(replayed.nonce, challenge.nonce) << "nonces repeat";
  EXPECT_FALSE(HelloAuthentic(key, replayed, hello)) << "another connection's challenge";
  for (int field = 0; field < 4; ++field) {
    wire::Hello tampered = hello;
    if (field == 0) tampered.src_qpn ^= 1;
    if (field == 1) tampered.dst_qpn ^= 1;
    if (field == 2) tampered.dst_send_psn ^= 1;
    if (field == 3) tampered.epoch ^= 1;
    EXPECT_FALSE(HelloAuthentic(key, challenge, tampered)) << "field " << field;
  }
  wire::ChallengeBytes cb;
  wire::EncodeChallenge(challenge, &cb);
  wire::Challenge back;
  ASSERT_EQ(wire::DecodeChallenge(cb, &back), wire::DecodeError::kOk);
  EXPECT_EQ(back.nonce, challenge.nonce);
  EXPECT_EQ(wire::DecodeChallenge(std::span(cb.data(), 8), &back), wire::DecodeError::kTruncated);
  EXPECT_EQ(wire::DecodeChallenge(bytes, &back), wire::DecodeError::kBadType) << "a hello";
}

}  // namespace
}  // namespace braid::soft
