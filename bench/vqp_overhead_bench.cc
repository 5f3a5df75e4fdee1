// vqp_overhead: what the virtual layer adds on top of the provider, over a null provider whose
// sends complete the moment they are posted.
//
//   raw/post_poll          one ibv_send_wr posted and its WC polled on a NullQp (the baseline)
//   post/<shape>           VirtualQp::PostSend per virtual WR (its fragments posted)
//   complete/<shape>       VirtualCq::Poll per aggregated physical completion
//   dqplb_receive          one DQPLB message received: fragment + tail arrivals to one VirtualWc
//   spray_write_imm        post + complete of a SPRAY write-with-imm (data + notify)
//
// The timed bodies are the non-inlined BraidBench* functions, so `bench/vqp_instructions.sh`
// can count their instructions with callgrind (--toggle-collect).
#include <arpa/inet.h>
#include <benchmark/benchmark.h>

#include <cstring>

#include "tests/testutil/null_vqp_bed.h"

namespace braid {
namespace {

using testing::NullVqpBed;
using vqp::VirtualQpConfig;
using vqp::VirtualWc;

constexpr int kBatch = 256;

VirtualQpConfig Config(vqp::Scheme scheme, uint32_t qps) {
  VirtualQpConfig c;
  c.scheme = scheme;
  c.num_qps = qps;
  c.fragment_size = 4096;
  c.qp_capacity = 1024;
  c.max_virtual_wrs = 1024;
  return c;
}

}  // namespace
}  // namespace braid

// Timed bodies (extern "C", never inlined: callgrind toggles on their names).
extern "C" __attribute__((noinline)) int BraidBenchPostBatch(braid::vqp::VirtualQp* q,
                                                             const braid::vqp::VirtualSendWr* wr,
                                                             int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) ok += q->PostSend(*wr).ok();
  return ok;
}

extern "C" __attribute__((noinline)) int BraidBenchPollAll(braid::vqp::VirtualCq* cq,
                                                           braid::vqp::VirtualWc* out, int want) {
  int got = 0;
  while (got < want) {
    auto n = cq->Poll(std::span<braid::vqp::VirtualWc>(out, static_cast<size_t>(want - got)));
    if (!n.ok()) return -1;
    got += *n;
  }
  return got;
}

extern "C" __attribute__((noinline)) int BraidBenchRawPostPoll(braid::testing::NullQp* qp,
                                                               braid::testing::NullCq* cq,
                                                               ibv_send_wr* wr, ibv_wc* wc) {
  ibv_send_wr* bad = nullptr;
  if (!qp->PostSend(wr, &bad).ok()) return -1;
  return *cq->Poll(std::span<ibv_wc>(wc, 1));
}

namespace braid {
namespace {

void BM_RawPostPoll(benchmark::State& state) {
  testing::NullBaseline base;
  ibv_wc wc;
  for (auto _ : state) {
    benchmark::DoNotOptimize(BraidBenchRawPostPoll(base.qp.get(), base.cq, &base.wr, &wc));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawPostPoll)->Name("raw/post_poll");

// A bed over the null provider, or nullptr after reporting why to the benchmark.
std::unique_ptr<NullVqpBed> MakeBed(benchmark::State& state, const VirtualQpConfig& config) {
  auto bed = std::make_unique<NullVqpBed>(1, config);
  if (bed->status().ok()) return bed;
  state.SkipWithError(bed->status().ToString().c_str());
  return nullptr;
}

struct Shape {
  vqp::Scheme scheme;
  uint32_t qps;
  uint64_t bytes;  // 4096 per fragment
  ibv_wr_opcode opcode;
};

// Post-only: kBatch virtual WRs per timed batch; the completions are drained untimed.
void BM_Post(benchmark::State& state, Shape shape) {
  auto made = MakeBed(state, Config(shape.scheme, shape.qps));
  if (!made) return;
  NullVqpBed& bed = *made;
  const vqp::VirtualSendWr wr = bed.Write(1, shape.bytes, shape.opcode);
  VirtualWc out[kBatch];
  for (auto _ : state) {
    if (BraidBenchPostBatch(&bed.vqp(), &wr, kBatch) != kBatch) {
      state.SkipWithError("post failed");
      break;
    }
    state.PauseTiming();
    BraidBenchPollAll(&bed.cq(), out, kBatch);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["ns_per_post"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Complete-only: the posts are untimed; the poll that aggregates every physical completion into
// kBatch virtual completions is timed. Reported per physical completion.
void BM_Complete(benchmark::State& state, Shape shape) {
  auto made = MakeBed(state, Config(shape.scheme, shape.qps));
  if (!made) return;
  NullVqpBed& bed = *made;
  const vqp::VirtualSendWr wr = bed.Write(1, shape.bytes, shape.opcode);
  VirtualWc out[kBatch];
  const uint64_t frags_before = bed.vqp().counters().fragments_posted;
  for (auto _ : state) {
    state.PauseTiming();
    BraidBenchPostBatch(&bed.vqp(), &wr, kBatch);
    state.ResumeTiming();
    benchmark::DoNotOptimize(BraidBenchPollAll(&bed.cq(), out, kBatch));
  }
  const double physical = static_cast<double>(bed.vqp().counters().fragments_posted - frags_before);
  state.counters["physical_per_virtual"] =
      physical / static_cast<double>(state.iterations() * kBatch);
  state.counters["ns_per_physical_completion"] =
      benchmark::Counter(physical, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// One DQPLB message arriving on a 4-QP receiver: a WRITE_WITH_IMM fragment and a tail.
void BM_DqplbReceive(benchmark::State& state) {
  auto made = MakeBed(state, Config(vqp::Scheme::kDqplb, 4));
  if (!made) return;
  NullVqpBed& bed = *made;
  VirtualWc out[4];
  uint32_t seq = 0;
  struct {
    uint64_t bytes;
    uint32_t imm;
    uint32_t flags;
  } tail{4096, htonl(7), 0};
  for (auto _ : state) {
    (void)bed.vqp().PostRecv({.wr_id = seq});
    bed.qp(static_cast<int>(seq % 4))
        .DeliverRecv(IBV_WC_RECV_RDMA_WITH_IMM, htonl(seq & 0xFFFFFF), 4096);
    ++seq;
    bed.qp(static_cast<int>(seq % 4))
        .DeliverRecv(IBV_WC_RECV, htonl((seq & 0xFFFFFF) | (1u << 31)), 16, &tail, sizeof(tail));
    ++seq;
    if (BraidBenchPollAll(&bed.cq(), out, 1) != 1 || out[0].status != IBV_WC_SUCCESS) {
      state.SkipWithError("receive failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DqplbReceive)->Name("dqplb_receive/4qp");

void BM_SprayWriteImm(benchmark::State& state) {
  NullVqpBed bed(1, Config(vqp::Scheme::kSpray, 4));
  const vqp::VirtualSendWr wr = bed.Write(1, 4096, IBV_WR_RDMA_WRITE_WITH_IMM);
  VirtualWc out[4];
  for (auto _ : state) {
    BraidBenchPostBatch(&bed.vqp(), &wr, 1);
    if (BraidBenchPollAll(&bed.cq(), out, 1) != 1) {
      state.SkipWithError("completion failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SprayWriteImm)->Name("spray_write_imm/4qp");

const Shape k1Qp{vqp::Scheme::kSpray, 1, 4096, IBV_WR_RDMA_WRITE};
const Shape k4Qp{vqp::Scheme::kSpray, 4, 4096, IBV_WR_RDMA_WRITE};
const Shape k16Frag{vqp::Scheme::kSpray, 4, 16 * 4096, IBV_WR_RDMA_WRITE};
BENCHMARK_CAPTURE(BM_Post, write_1frag_1qp, k1Qp)->Name("post/write_1frag_1qp");
BENCHMARK_CAPTURE(BM_Post, write_1frag_4qp, k4Qp)->Name("post/write_1frag_4qp");
BENCHMARK_CAPTURE(BM_Post, write_16frag_4qp, k16Frag)->Name("post/write_16frag_4qp");
BENCHMARK_CAPTURE(BM_Complete, write_1frag_1qp, k1Qp)->Name("complete/write_1frag_1qp");
BENCHMARK_CAPTURE(BM_Complete, write_1frag_4qp, k4Qp)->Name("complete/write_1frag_4qp");
BENCHMARK_CAPTURE(BM_Complete, write_16frag_4qp, k16Frag)->Name("complete/write_16frag_4qp");

}  // namespace
}  // namespace braid

BENCHMARK_MAIN();
