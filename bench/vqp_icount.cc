// vqp_icount: exact operation counts for callgrind (bench/vqp_instructions.sh). For each shape it
// runs 40 rounds of 256 virtual WRs: PostOnly posts them, PollOnly collects their completions.
// Callgrind collects inside one of the two functions; instructions / operations is the figure.
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/testutil/null_vqp_bed.h"

using braid::vqp::VirtualCq;
using braid::vqp::VirtualQp;
using braid::vqp::VirtualSendWr;
using braid::vqp::VirtualWc;

extern "C" __attribute__((noinline)) void PostOnly(VirtualQp* q, const VirtualSendWr* wr, int n) {
  for (int i = 0; i < n; ++i) (void)q->PostSend(*wr);
}

extern "C" __attribute__((noinline)) void PollOnly(VirtualCq* cq, VirtualWc* out, int n) {
  int got = 0;
  while (got < n) got += *cq->Poll(std::span<VirtualWc>(out, static_cast<size_t>(n - got)));
}

extern "C" __attribute__((noinline)) void RawPostPoll(braid::testing::NullQp* qp,
                                                      braid::testing::NullCq* cq, ibv_send_wr* wr,
                                                      int n) {
  ibv_wc wc;
  ibv_send_wr* bad = nullptr;
  for (int i = 0; i < n; ++i) {
    (void)qp->PostSend(wr, &bad);
    (void)cq->Poll(std::span<ibv_wc>(&wc, 1));
  }
}

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "1frag_4qp";
  constexpr int kRounds = 40, kBatch = 256;
  if (shape == "raw") {
    braid::testing::NullBaseline base;
    RawPostPoll(base.qp.get(), base.cq, &base.wr, kRounds * kBatch);
    std::printf("ops %d physical %d\n", kRounds * kBatch, kRounds * kBatch);
    return 0;
  }
  braid::vqp::VirtualQpConfig c;
  c.num_qps = shape.find("1qp") != std::string::npos ? 1 : 4;
  c.fragment_size = 4096;
  c.qp_capacity = 1024;
  c.max_virtual_wrs = 1024;
  const uint64_t bytes = shape.find("16frag") != std::string::npos ? 16 * 4096 : 4096;
  braid::testing::NullVqpBed bed(1, c);
  if (!bed.status().ok()) return 1;
  const VirtualSendWr wr = bed.Write(1, bytes);
  static VirtualWc out[kBatch];
  for (int r = 0; r < kRounds; ++r) {
    PostOnly(&bed.vqp(), &wr, kBatch);
    PollOnly(&bed.cq(), out, kBatch);
  }
  std::printf("ops %d physical %llu\n", kRounds * kBatch,
              static_cast<unsigned long long>(bed.vqp().counters().fragments_posted));
  return 0;
}
