// Post + poll on one soft QP over the in-memory link (SimFabric): the cost of the soft RC logic
// and the sim link per operation, the baseline the virtual-QP layer's overhead is measured against.
#include <benchmark/benchmark.h>

#include "tests/testutil/sim_testbed.h"

namespace braid {
namespace {

using testing::SimTestbed;

ibv_send_wr MakeWr(ibv_wr_opcode op, ibv_sge* sge, uint64_t remote, uint32_t rkey) {
  ibv_send_wr wr{};
  wr.opcode = op;
  wr.sg_list = sge;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = remote;
  wr.wr.rdma.rkey = rkey;
  return wr;
}

// One signaled operation at a time: post, then poll until its completion.
void BM_PostPollOne(benchmark::State& state, ibv_wr_opcode op) {
  const auto bytes = static_cast<uint32_t>(state.range(0));
  SimTestbed tb(2, 1 << 20, {.reorder = false});
  auto pair = tb.Connect(0, 1);
  if (!pair.ok()) {
    state.SkipWithError(pair.status().ToString().c_str());
    return;
  }
  ibv_sge sge = tb.nic(0).Sge(0, bytes);
  ibv_send_wr wr = MakeWr(op, &sge, tb.nic(1).addr(0), tb.nic(1).mr->rkey());
  ibv_send_wr* bad = nullptr;
  ibv_wc wc[4];
  for (auto _ : state) {
    if (!pair->a->PostSend(&wr, &bad).ok()) {
      state.SkipWithError("post failed");
      break;
    }
    int got = 0;
    while (got == 0) got = *tb.nic(0).cq->Poll(wc);
    if (wc[0].status != IBV_WC_SUCCESS) {
      state.SkipWithError("completion failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * bytes);
  pair->a.reset();
  pair->b.reset();
}

// A window of `depth` operations in flight: post a chain, poll them all.
void BM_PostPollWindow(benchmark::State& state) {
  const auto bytes = static_cast<uint32_t>(state.range(0));
  const int depth = static_cast<int>(state.range(1));
  SimTestbed tb(2, 1 << 24, {.reorder = false});
  auto pair = tb.Connect(0, 1);
  std::vector<ibv_sge> sges(depth);
  std::vector<ibv_send_wr> wrs(depth);
  for (int i = 0; i < depth; ++i) {
    sges[i] = tb.nic(0).Sge(static_cast<size_t>(i) * bytes % (1 << 23), bytes);
    wrs[i] = MakeWr(IBV_WR_RDMA_WRITE, &sges[i], tb.nic(1).addr(sges[i].addr - tb.nic(0).addr()),
                    tb.nic(1).mr->rkey());
    wrs[i].next = i + 1 < depth ? &wrs[i + 1] : nullptr;
  }
  ibv_send_wr* bad = nullptr;
  ibv_wc wc[64];
  for (auto _ : state) {
    if (!pair->a->PostSend(wrs.data(), &bad).ok()) {
      state.SkipWithError("post failed");
      break;
    }
    int got = 0;
    while (got < depth) got += *tb.nic(0).cq->Poll(wc);
  }
  state.SetItemsProcessed(state.iterations() * depth);
  state.SetBytesProcessed(state.iterations() * depth * bytes);
  pair->a.reset();
  pair->b.reset();
}

BENCHMARK_CAPTURE(BM_PostPollOne, write, IBV_WR_RDMA_WRITE)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK_CAPTURE(BM_PostPollOne, read, IBV_WR_RDMA_READ)->Arg(64)->Arg(4096);
BENCHMARK(BM_PostPollWindow)->Args({4096, 16})->Args({4096, 64})->Args({1 << 20, 8});

}  // namespace
}  // namespace braid

BENCHMARK_MAIN();
