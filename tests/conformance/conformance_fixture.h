// The fixture every provider conformance test uses: per device a PD, a send CQ, a receive CQ and a
// registered 1 MiB buffer; helpers to connect QP pairs, post work and poll.
#ifndef BRAID_TESTS_CONFORMANCE_CONFORMANCE_FIXTURE_H_
#define BRAID_TESTS_CONFORMANCE_CONFORMANCE_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "tests/conformance/harness.h"
#include "tests/testutil/rc_connect.h"

namespace braid::testing {

inline constexpr size_t kBufferBytes = 1 << 20;
inline constexpr unsigned int kAllAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                           IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

struct Endpoint {
  verbs::Device* device = nullptr;
  std::unique_ptr<verbs::ProtectionDomain> pd;
  std::unique_ptr<verbs::Cq> send_cq;
  std::unique_ptr<verbs::Cq> recv_cq;
  std::vector<uint64_t> storage;  // 8-byte aligned for atomics
  uint8_t* external = nullptr;    // or memory the harness provides (shared with another process)
  std::unique_ptr<verbs::MemoryRegion> mr;

  uint8_t* data() {
    return external != nullptr ? external : reinterpret_cast<uint8_t*>(storage.data());
  }
  uint64_t addr(size_t offset = 0) { return reinterpret_cast<uint64_t>(data() + offset); }
  ibv_sge Sge(size_t offset, uint32_t length) { return {addr(offset), length, mr->lkey()}; }
};

struct QpOptions : RcOptions {
  verbs::QpCaps caps;
  bool sq_sig_all = false;
};

struct QpPair {
  std::unique_ptr<verbs::Qp> a;
  std::unique_ptr<verbs::Qp> b;
  Endpoint* ea = nullptr;
  Endpoint* eb = nullptr;
};

inline std::string HarnessName(const ::testing::TestParamInfo<HarnessFactory>& info) {
  return info.param.name;
}

class ConformanceTest : public ::testing::TestWithParam<HarnessFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;

  Endpoint& ep(int index) { return *endpoints_[static_cast<size_t>(index)]; }
  // Creates and connects a QP on device `a` with one on device `b` (RESET→INIT→RTR→RTS).
  QpPair& Connect(int a, int b, const QpOptions& options = {});
  // Creates a QP that stays in RESET.
  std::unique_ptr<verbs::Qp> CreateQp(int device, const QpOptions& options = {});

  // Polls until `count` completions arrived or the round budget is spent.
  std::vector<ibv_wc> Poll(verbs::Cq& cq, size_t count, int max_rounds = 200000);
  // Polls `rounds` times and returns whatever arrived.
  std::vector<ibv_wc> Drain(verbs::Cq& cq, int rounds = 2000);
  void ProgressRounds(int rounds);

  static common::Status PostSend(verbs::Qp& qp, ibv_wr_opcode opcode, ibv_sge* sge, int num_sge,
                                 uint64_t remote_addr, uint32_t rkey, uint64_t wr_id,
                                 unsigned int flags = IBV_SEND_SIGNALED, uint32_t imm = 0);
  static common::Status PostAtomic(verbs::Qp& qp, ibv_wr_opcode opcode, ibv_sge* sge,
                                   uint64_t remote_addr, uint32_t rkey, uint64_t compare_add,
                                   uint64_t swap, uint64_t wr_id);
  static common::Status PostRecv(verbs::Qp& qp, ibv_sge* sge, int num_sge, uint64_t wr_id);

  // Checks the fields an error completion may not be trusted for hold poison (soft provider).
  void ExpectUndefinedFieldsPoisoned(const ibv_wc& wc);
  LinkControl* RequireLink();

  std::unique_ptr<Harness> harness_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<std::unique_ptr<QpPair>> pairs_;
};

}  // namespace braid::testing

#define ASSERT_OK(expr)                                \
  do {                                                 \
    const ::braid::common::Status braid_s_ = (expr);   \
    ASSERT_TRUE(braid_s_.ok()) << braid_s_.ToString(); \
  } while (0)

#define EXPECT_OK(expr)                                \
  do {                                                 \
    const ::braid::common::Status braid_s_ = (expr);   \
    EXPECT_TRUE(braid_s_.ok()) << braid_s_.ToString(); \
  } while (0)

#define REQUIRE_LINK_CONTROL()       \
  LinkControl* link = RequireLink(); \
  if (link == nullptr) GTEST_SKIP() << "needs a link the test can control (sim)"

#endif  // BRAID_TESTS_CONFORMANCE_CONFORMANCE_FIXTURE_H_
