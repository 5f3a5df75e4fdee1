// DecodeSubmit: a well-formed entry becomes a command field for field; each malformed field is
// refused by name, with a message that says what to send instead.
#include "dataplane/session/ring_entry.h"

#include <gtest/gtest.h>

#include <cstring>

namespace braid::session {
namespace {

SubmitEntry Good() {
  SubmitEntry e{};
  e.user_data = 77;
  e.vqp_id = 3;
  e.local_offset = 4096;
  e.remote_offset = 8192;
  e.length = 1 << 20;
  e.local_region = 5;
  e.remote_region = 6;
  e.imm = 0x1234;
  e.timeout_ms = 500;
  e.op = static_cast<uint8_t>(RingOp::kWriteWithImm);
  return e;
}

TEST(RingEntryTest, AWellFormedEntryBecomesItsCommand) {
  SubmitCommand c{};
  ASSERT_EQ(DecodeSubmit(Good(), &c), SubmitField::kNone);
  EXPECT_EQ(c.op, RingOp::kWriteWithImm);
  EXPECT_EQ(c.user_data, 77u);
  EXPECT_EQ(c.vqp_id, 3u);
  EXPECT_EQ(c.local_region, 5u);
  EXPECT_EQ(c.local_offset, 4096u);
  EXPECT_EQ(c.remote_region, 6u);
  EXPECT_EQ(c.remote_offset, 8192u);
  EXPECT_EQ(c.length, 1u << 20);
  EXPECT_EQ(c.imm, 0x1234u);
  EXPECT_EQ(c.timeout_ms, 500u);
}

TEST(RingEntryTest, EachMalformedFieldIsRefusedByName) {
  struct Case {
    void (*spoil)(SubmitEntry&);
    SubmitField field;
  };
  const Case cases[] = {
      {[](SubmitEntry& e) { e.op = 0; }, SubmitField::kOp},
      {[](SubmitEntry& e) { e.op = 5; }, SubmitField::kOp},
      {[](SubmitEntry& e) { e.flags = 1; }, SubmitField::kFlags},
      {[](SubmitEntry& e) { e.reserved[5] = 9; }, SubmitField::kReserved},
      {[](SubmitEntry& e) { e.length = 0; }, SubmitField::kLength},
      {[](SubmitEntry& e) { e.length = kMaxSubmitLength + 1; }, SubmitField::kLength},
      {[](SubmitEntry& e) { e.local_offset = UINT64_MAX - 10; }, SubmitField::kLocalRange},
      {[](SubmitEntry& e) { e.remote_offset = UINT64_MAX; }, SubmitField::kRemoteRange},
      {[](SubmitEntry& e) { e.op = static_cast<uint8_t>(RingOp::kRead); }, SubmitField::kImm},
      {[](SubmitEntry& e) { e.timeout_ms = kMaxTimeoutMs + 1; }, SubmitField::kTimeout},
  };
  for (const Case& k : cases) {
    SubmitEntry e = Good();
    k.spoil(e);
    SubmitCommand c{};
    const SubmitField got = DecodeSubmit(e, &c);
    EXPECT_EQ(got, k.field) << Describe(k.field);
    EXPECT_NE(Describe(got), Describe(SubmitField::kNone));
  }
  SubmitEntry read = Good();
  read.op = static_cast<uint8_t>(RingOp::kRead);
  read.imm = 0;
  SubmitCommand c{};
  EXPECT_EQ(DecodeSubmit(read, &c), SubmitField::kNone);
  EXPECT_EQ(c.op, RingOp::kRead);
  EXPECT_EQ(Describe(SubmitField::kOp),
            "unknown operation: use 1 (WRITE), 2 (READ), 3 (WRITE_WITH_IMM) or 4 (WATCH)");
}

SubmitEntry Watch() {
  SubmitEntry e{};
  e.user_data = 9;
  e.vqp_id = 3;
  e.op = static_cast<uint8_t>(RingOp::kWatch);
  return e;
}

TEST(RingEntryTest, AWatchNamesItsVqpAndNothingElse) {
  SubmitCommand c{};
  ASSERT_EQ(DecodeSubmit(Watch(), &c), SubmitField::kNone);
  EXPECT_EQ(c.op, RingOp::kWatch);
  EXPECT_EQ(c.user_data, 9u);
  EXPECT_EQ(c.vqp_id, 3u);
  struct Case {
    void (*spoil)(SubmitEntry&);
    SubmitField field;
  };
  const Case cases[] = {
      {[](SubmitEntry& e) { e.length = 8; }, SubmitField::kLength},
      {[](SubmitEntry& e) { e.local_region = 1; }, SubmitField::kLocalRange},
      {[](SubmitEntry& e) { e.local_offset = 64; }, SubmitField::kLocalRange},
      {[](SubmitEntry& e) { e.remote_region = 2; }, SubmitField::kRemoteRange},
      {[](SubmitEntry& e) { e.remote_offset = 64; }, SubmitField::kRemoteRange},
      {[](SubmitEntry& e) { e.imm = 7; }, SubmitField::kImm},
      {[](SubmitEntry& e) { e.timeout_ms = 10; }, SubmitField::kTimeout},
      {[](SubmitEntry& e) { e.flags = 1; }, SubmitField::kFlags},
  };
  for (const Case& k : cases) {
    SubmitEntry e = Watch();
    k.spoil(e);
    EXPECT_EQ(DecodeSubmit(e, &c), k.field) << Describe(k.field);
  }
}

}  // namespace
}  // namespace braid::session
