#include "tests/conformance/conformance_fixture.h"

#include <chrono>
#include <cstring>

#include "dataplane/soft/soft_cq.h"

namespace braid::testing {

void ConformanceTest::SetUp() {
  harness_ = GetParam().make();
  const std::string reason = harness_->SkipReason();
  if (!reason.empty()) GTEST_SKIP() << "provider unavailable: " << reason;
  ASSERT_OK(harness_->Open());
  for (int i = 0; i < harness_->num_devices(); ++i) {
    auto e = std::make_unique<Endpoint>();
    e->device = &harness_->device(i);
    auto pd = e->device->AllocPd();
    ASSERT_TRUE(pd.ok()) << pd.status().ToString();
    e->pd = std::move(pd).value();
    auto scq = e->device->CreateCq(1024);
    auto rcq = e->device->CreateCq(1024);
    ASSERT_TRUE(scq.ok() && rcq.ok());
    e->send_cq = std::move(scq).value();
    e->recv_cq = std::move(rcq).value();
    e->external = harness_->EndpointBuffer(i, kBufferBytes);
    if (e->external != nullptr) {
      std::memset(e->external, 0, kBufferBytes);
    } else {
      e->storage.assign(kBufferBytes / 8, 0);
    }
    auto mr = e->pd->RegisterMemory(e->data(), kBufferBytes, kAllAccess);
    ASSERT_TRUE(mr.ok()) << mr.status().ToString();
    e->mr = std::move(mr).value();
    endpoints_.push_back(std::move(e));
  }
}

void ConformanceTest::TearDown() {
  pairs_.clear();  // QPs before CQs, MRs and PDs
  endpoints_.clear();
  harness_.reset();
}

std::unique_ptr<verbs::Qp> ConformanceTest::CreateQp(int device, const QpOptions& o) {
  Endpoint& e = ep(device);
  auto qp = e.pd->CreateQp(verbs::QpCreateParams{e.send_cq.get(), e.recv_cq.get(), o.caps,
                                                 o.sq_sig_all});
  EXPECT_TRUE(qp.ok()) << qp.status().ToString();
  return qp.ok() ? std::move(qp).value() : nullptr;
}

QpPair& ConformanceTest::Connect(int a, int b, const QpOptions& o) {
  auto pair = std::make_unique<QpPair>();
  pair->ea = &ep(a);
  pair->eb = &ep(b);
  pair->a = CreateQp(a, o);
  pair->b = CreateQp(b, o);
  if (pair->a && pair->b) {
    const common::Status st = ConnectRc(*pair->a, pair->ea->device->info(), *pair->b,
                                        pair->eb->device->info(), o);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  pairs_.push_back(std::move(pair));
  return *pairs_.back();
}

std::vector<ibv_wc> ConformanceTest::Poll(verbs::Cq& cq, size_t count, int max_rounds) {
  std::vector<ibv_wc> out;
  ibv_wc wc[16];
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; out.size() < count; ++round) {
    if (round >= max_rounds) {
      // Real hardware runs on wall-clock time: give it up to 5 s.
      if (harness_->link() != nullptr ||
          std::chrono::steady_clock::now() - start > std::chrono::seconds(5)) {
        break;
      }
    }
    const size_t want = std::min<size_t>(16, count - out.size());
    auto n = cq.Poll(std::span<ibv_wc>(wc, want));
    if (!n.ok()) break;
    out.insert(out.end(), wc, wc + *n);
  }
  return out;
}

std::vector<ibv_wc> ConformanceTest::Drain(verbs::Cq& cq, int rounds) {
  std::vector<ibv_wc> out;
  ibv_wc wc[16];
  for (int i = 0; i < rounds; ++i) {
    auto n = cq.Poll(wc);
    if (!n.ok()) break;
    out.insert(out.end(), wc, wc + *n);
  }
  return out;
}

void ConformanceTest::ProgressRounds(int rounds) {
  for (int i = 0; i < rounds; ++i) harness_->Progress();
}

common::Status ConformanceTest::PostSend(verbs::Qp& qp, ibv_wr_opcode opcode, ibv_sge* sge,
                                         int num_sge, uint64_t remote_addr, uint32_t rkey,
                                         uint64_t wr_id, unsigned int flags, uint32_t imm) {
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = opcode;
  wr.sg_list = sge;
  wr.num_sge = num_sge;
  wr.send_flags = flags;
  wr.imm_data = imm;
  wr.wr.rdma.remote_addr = remote_addr;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return qp.PostSend(&wr, &bad);
}

common::Status ConformanceTest::PostAtomic(verbs::Qp& qp, ibv_wr_opcode opcode, ibv_sge* sge,
                                           uint64_t remote_addr, uint32_t rkey,
                                           uint64_t compare_add, uint64_t swap, uint64_t wr_id) {
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = opcode;
  wr.sg_list = sge;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.atomic.remote_addr = remote_addr;
  wr.wr.atomic.rkey = rkey;
  wr.wr.atomic.compare_add = compare_add;
  wr.wr.atomic.swap = swap;
  ibv_send_wr* bad = nullptr;
  return qp.PostSend(&wr, &bad);
}

common::Status ConformanceTest::PostRecv(verbs::Qp& qp, ibv_sge* sge, int num_sge,
                                         uint64_t wr_id) {
  ibv_recv_wr wr{};
  wr.wr_id = wr_id;
  wr.sg_list = sge;
  wr.num_sge = num_sge;
  ibv_recv_wr* bad = nullptr;
  return qp.PostRecv(&wr, &bad);
}

void ConformanceTest::ExpectUndefinedFieldsPoisoned(const ibv_wc& wc) {
  EXPECT_NE(wc.status, IBV_WC_SUCCESS);
  if (!harness_->poisons_undefined_fields()) return;
  EXPECT_EQ(static_cast<uint32_t>(wc.opcode), soft::kPoisonOpcode);
  EXPECT_EQ(wc.byte_len, soft::kPoisonByteLen);
  EXPECT_EQ(wc.imm_data, soft::kPoisonImm);
}

LinkControl* ConformanceTest::RequireLink() { return harness_->link(); }

}  // namespace braid::testing
