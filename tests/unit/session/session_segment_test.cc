// SessionSegment: the client attaches to what the agent created and both see the same rings; a
// descriptor that is not a sealed segment of the right layout is refused before anything in it is
// trusted.
#include "dataplane/session/session_segment.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>

namespace braid::session {
namespace {

TEST(SessionSegmentTest, TheClientSeesTheAgentsRingsAtTheSameOffsets) {
  auto agent = SessionSegment::Create({256, 1024, 64});
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  const SegmentHeader& l = (*agent)->layout();
  EXPECT_EQ(l.sq_control % 64, 0u);
  EXPECT_EQ(l.cq_control % 64, 0u);
  EXPECT_EQ(l.nq_control % 64, 0u);
  EXPECT_GE(l.nq_control, l.cq_ring + 1024 * sizeof(CompletionEntry));
  EXPECT_GE(l.total_bytes, l.nq_ring + 64 * sizeof(NotifyEntry));
  auto client = SessionSegment::Attach(dup((*agent)->fd()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ(std::memcmp(&l, &(*client)->layout(), sizeof(l)), 0);
  // A completion the agent pushes is what the client pops.
  SpscRing<CompletionEntry> cq = (*agent)->CompletionRing();
  SpscRing<CompletionEntry> mine = (*client)->CompletionRing();
  CompletionEntry c{};
  c.user_data = 99;
  c.length = 4096;
  ASSERT_EQ(cq.Push(std::span(&c, 1)), 1u);
  std::array<CompletionEntry, 2> out;
  ASSERT_EQ(mine.Pop(out), 1u);
  EXPECT_EQ(out[0].user_data, 99u);
  EXPECT_EQ(out[0].length, 4096u);
  // And so is a notification.
  SpscRing<NotifyEntry> nq = (*agent)->NotifyRing();
  SpscRing<NotifyEntry> heard = (*client)->NotifyRing();
  NotifyEntry n{};
  n.vqp_id = 5;
  n.imm = 0xabcd;
  n.kind = static_cast<uint8_t>(NotifyKind::kNotification);
  ASSERT_EQ(nq.Push(std::span(&n, 1)), 1u);
  std::array<NotifyEntry, 2> got;
  ASSERT_EQ(heard.Pop(got), 1u);
  EXPECT_EQ(got[0].vqp_id, 5u);
  EXPECT_EQ(got[0].imm, 0xabcdu);
}

TEST(SessionSegmentTest, RingSizesThatAreNotPowersOfTwoAreRefused) {
  EXPECT_FALSE(SessionSegment::Create({100, 64, 64}).ok());
  EXPECT_FALSE(SessionSegment::Create({64, 1, 64}).ok());
  EXPECT_FALSE(SessionSegment::Create({64, kMaxRingEntries * 2, 64}).ok());
  EXPECT_FALSE(SessionSegment::Create({64, 64, 0}).ok());
  EXPECT_FALSE(SessionSegment::Create({64, 64, 48}).ok());
}

// The agent's segment cannot be shrunk under its mapping (a client that could would make the
// engine fault on its next access).
TEST(SessionSegmentTest, ItsSizeIsSealed) {
  auto agent = SessionSegment::Create({8, 8, 64});
  ASSERT_TRUE(agent.ok());
  EXPECT_NE(ftruncate((*agent)->fd(), 0), 0);
  EXPECT_EQ(errno, EPERM);
}

int Memfd(const void* bytes, size_t n, size_t size, bool seal) {
  const int fd = memfd_create("not-a-segment", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return fd;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      (n > 0 && pwrite(fd, bytes, n, 0) != static_cast<ssize_t>(n)) ||
      (seal && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(SessionSegmentTest, AttachRefusesWhatIsNotASealedSegmentOfItsLayout) {
  const SegmentHeader good = SessionSegment::Layout({64, 64, 64});
  struct Case {
    const char* what;
    SegmentHeader header;
    size_t size;
    bool seal;
  };
  SegmentHeader bad_magic = good;
  bad_magic.magic ^= 1;
  SegmentHeader bad_version = good;
  bad_version.version = 99;
  SegmentHeader bad_ring = good;
  bad_ring.sq_entries = 63;
  SegmentHeader bad_notify = good;
  bad_notify.nq_entries = 128;  // the rest of the layout is for 64
  SegmentHeader bad_offset = good;
  bad_offset.cq_ring = good.total_bytes * 4;  // beyond the mapping
  const Case cases[] = {
      {"unsealed", good, good.total_bytes, false},
      {"too short for its header", good, 16, true},
      {"wrong magic", bad_magic, good.total_bytes, true},
      {"wrong version", bad_version, good.total_bytes, true},
      {"ring size not a power of two", bad_ring, good.total_bytes, true},
      {"an offset beyond the segment", bad_offset, good.total_bytes, true},
      {"a notification ring its layout does not have", bad_notify, good.total_bytes, true},
      {"shorter than its rings", good, good.total_bytes - 64, true},
  };
  for (const Case& k : cases) {
    const int fd = Memfd(&k.header, std::min(sizeof(k.header), k.size), k.size, k.seal);
    ASSERT_GE(fd, 0) << k.what;
    auto s = SessionSegment::Attach(fd);
    EXPECT_FALSE(s.ok()) << k.what;
    if (!s.ok()) {
      EXPECT_EQ(s.status().code(), common::StatusCode::kInvalidArgument) << k.what;
    }
  }
  const int fd = Memfd(&good, sizeof(good), good.total_bytes, true);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(SessionSegment::Attach(fd).ok()) << "the same bytes, well formed";
}

}  // namespace
}  // namespace braid::session
