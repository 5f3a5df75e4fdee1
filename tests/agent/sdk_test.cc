// The client SDK against real agents: a session's futures, callbacks and notifications; deadline,
// cancellation and an agent restart mid-transfer each end in a clear error, never a hang; and
// after each test the agents hold no VQP and no region (nothing leaked). Each runs on both of a
// session's paths: the gRPC Transfer stream (agents reached over TCP) and a local session's
// rings (agents reached over their Unix sockets, whose sessions TransferSession and
// NotificationStream pick by themselves).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "braid/agent_client.h"
#include "braid/connection.h"
#include "braid/notifications.h"
#include "braid/transfer_session.h"
#include "tests/agent/sdk_fixture.h"

namespace braid::testing {
namespace {

using client::AgentClient;
using client::TransferOp;
using client::TransferSession;
using Clock = std::chrono::steady_clock;

TEST_P(SdkTest, FuturesCallbacksAndNotifications) {
  {
    auto conn = client::Connect(a_, b_, {.scheme = v1::SCHEME_DQPLB, .num_qps = 4});
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto src = a_->RegisterMemory(64 * kMiB, "src");
    auto dst = b_->RegisterMemory(64 * kMiB, "dst", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    FillPattern((*src)->data(), 64 * kMiB, 11);
    std::mutex mu;
    std::vector<v1::Notification> notes;
    auto watch =
        client::NotificationStream::Open(b_, (*conn)->vqp_b(), [&](const v1::Notification& n) {
          std::lock_guard<std::mutex> l(mu);
          notes.push_back(n);
        });
    ASSERT_TRUE(watch.ok()) << watch.status().ToString();
    EXPECT_STREQ((*watch)->path(), GetParam() ? "ring" : "grpc");
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    EXPECT_EQ(session->window(), 1024u);  // the ring's size, or the agent's window
    std::vector<std::future<client::TransferResult>> futures;
    for (uint64_t i = 0; i < 48; ++i) futures.push_back(session->Submit(Op(**src, To(**dst), i)));
    std::atomic<int> callbacks{0};
    for (uint64_t i = 48; i < 64; ++i) {
      session->Submit(Op(**src, To(**dst), i), [&](client::TransferResult r) {
        EXPECT_TRUE(r.status.ok()) << r.status.ToString();
        ++callbacks;
      });
    }
    for (auto& f : futures) {
      auto r = f.get();
      EXPECT_TRUE(r.status.ok()) << r.status.ToString();
      EXPECT_EQ(r.wc_status, "success");
      EXPECT_EQ(r.bytes, kMiB);
    }
    ASSERT_TRUE(session->Flush(std::chrono::seconds(10)).ok());
    EXPECT_EQ(callbacks.load(), 16);
    EXPECT_EQ(std::memcmp((*src)->data(), (*dst)->data(), 64 * kMiB), 0);
    for (int i = 0; i < 500; ++i) {
      std::lock_guard<std::mutex> l(mu);
      if (notes.size() >= 64) break;
      mu.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      mu.lock();
    }
    std::lock_guard<std::mutex> l(mu);
    ASSERT_EQ(notes.size(), 64u);
    for (uint32_t i = 0; i < 64; ++i) EXPECT_EQ(notes[i].imm(), i);
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// Waits up to 10 s for `done`.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000 && !done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// A stream ends when it falls too far behind: on the ring, whose size the stream chose (4 here),
// with kNoResource after what the ring held; the gRPC stream's buffer is the agent's (16,384),
// which a dozen writes do not fill. A stream also ends, OK, when its VQP is destroyed. Another
// stream of the same VQP hears everything throughout.
TEST_P(SdkTest, ANotificationStreamEndsWhenItFallsBehindOrItsVqpGoes) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 2});
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto src = a_->RegisterMemory(kMiB, "src");
    auto dst = b_->RegisterMemory(kMiB, "dst", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<int> slow_heard{0}, fair_heard{0};
    std::atomic<bool> slow_busy{false};
    auto slow = client::NotificationStream::Open(b_, (*conn)->vqp_b(),
                                                 [&](const v1::Notification&) {
                                                   slow_busy = true;
                                                   released.wait();
                                                   ++slow_heard;
                                                 },
                                                 {.ring_entries = 4});
    auto fair = client::NotificationStream::Open(b_, (*conn)->vqp_b(),
                                                 [&](const v1::Notification&) { ++fair_heard; });
    ASSERT_TRUE(slow.ok() && fair.ok());
    EXPECT_STREQ((*slow)->path(), GetParam() ? "ring" : "grpc");
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    for (uint64_t i = 0; i < 12; ++i) {
      auto r = session->Submit(Op(**src, To(**dst), i, 4096)).get();
      ASSERT_TRUE(r.status.ok()) << r.status.ToString();
      // The slow reader holds the first alone before the rest come: had it taken the second with
      // it from the ring (a slow wake-up, as under ASan), it would have heard one more.
      if (i == 0) {
        ASSERT_TRUE(Eventually([&] { return slow_busy.load(); }));
      }
    }
    ASSERT_TRUE(Eventually([&] { return fair_heard.load() == 12; })) << fair_heard.load();
    release.set_value();
    if (GetParam()) {
      ASSERT_TRUE(Eventually([&] { return (*slow)->ended(); }));
      EXPECT_EQ((*slow)->status().code(), common::StatusCode::kNoResource)
          << (*slow)->status().ToString();
      EXPECT_NE((*slow)->status().message().find("fell behind"), std::string::npos);
      EXPECT_EQ(slow_heard.load(), 4) << "the first, then the three the ring held";
    } else {
      ASSERT_TRUE(Eventually([&] { return slow_heard.load() == 12; })) << slow_heard.load();
      EXPECT_FALSE((*slow)->ended());
    }
    EXPECT_FALSE((*fair)->ended());
    conn->reset();  // destroys both VQPs
    ASSERT_TRUE(Eventually([&] { return (*fair)->ended(); }));
    EXPECT_TRUE((*fair)->status().ok()) << (*fair)->status().ToString();
    EXPECT_EQ(fair_heard.load(), 12);
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// SubmitBatch: many small operations in one message (gRPC) or one doorbell (ring), more than the
// window holds, each completing once with its bytes; an operation the agent refuses (a region it
// does not know) fails alone, NOT_FOUND, saying what was wrong, on either path.
TEST_P(SdkTest, ABatchCompletesEachOperationOnceAndARefusedOneFailsAloneSayingWhy) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 4});
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto src = a_->RegisterMemory(16 * kMiB, "src");
    auto dst = b_->RegisterMemory(16 * kMiB, "dst", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    FillPattern((*src)->data(), 16 * kMiB, 21);
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    constexpr uint64_t kOps = 4096;  // 4 KiB each: the whole 16 MiB, beyond either window
    std::vector<TransferOp> ops;
    for (uint64_t i = 0; i < kOps; ++i) {
      TransferOp op = Op(**src, To(**dst), i, 4096);
      op.op = v1::OP_WRITE;
      ops.push_back(op);
    }
    TransferOp bad = Op(**src, To(**dst), 0, 4096);
    bad.local_region = 999999;
    ops.insert(ops.begin() + 100, bad);
    std::vector<std::future<client::TransferResult>> futures = session->SubmitBatch(ops);
    ASSERT_EQ(futures.size(), kOps + 1);
    std::set<uint64_t> ids;
    for (size_t i = 0; i < futures.size(); ++i) {
      client::TransferResult r = futures[i].get();
      ids.insert(r.op_id);
      if (i == 100) {
        EXPECT_EQ(r.status.code(), common::StatusCode::kNotFound) << r.status.ToString();
        EXPECT_NE(r.status.message().find("region"), std::string::npos) << r.status.message();
        continue;
      }
      ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.ToString();
      EXPECT_EQ(r.bytes, 4096u);
    }
    EXPECT_EQ(ids.size(), kOps + 1) << "each operation has its own id and completes once";
    EXPECT_EQ(std::memcmp((*src)->data(), (*dst)->data(), 16 * kMiB), 0);
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// Results flow back while operations still arrive, so gRPC finishes writes on one thread while it
// reads the next operation on another: the agent must still start each session's operations in
// the order they were sent. Four sessions at once keep gRPC's threads busy on two cores. Each
// receiver's notifications show the order (DQPLB delivers in posting order).
TEST_P(SdkTest, ASessionsOperationsStartInTheOrderItSentThem) {
  constexpr uint32_t kOps = 10000;
  constexpr int kSessions = 4;
  {
    auto src = a_->RegisterMemory(4 * kMiB, "src");
    ASSERT_TRUE(src.ok());
    struct Flow {
      std::unique_ptr<client::Connection> conn;
      std::unique_ptr<client::Region> dst;
      std::unique_ptr<client::NotificationStream> watch;
      std::unique_ptr<TransferSession> session;
      std::mutex mu;
      std::vector<uint32_t> imms;
      std::atomic<uint32_t> succeeded{0};
    };
    std::vector<std::unique_ptr<Flow>> flows;
    for (int k = 0; k < kSessions; ++k) {
      auto f = std::make_unique<Flow>();
      auto conn = client::Connect(a_, b_, {.scheme = v1::SCHEME_DQPLB, .num_qps = 4});
      ASSERT_TRUE(conn.ok()) << conn.status().ToString();
      f->conn = std::move(*conn);
      auto dst = b_->RegisterMemory(4 * kMiB, "dst", {f->conn->vqp_b()});
      ASSERT_TRUE(dst.ok()) << dst.status().ToString();
      f->dst = std::move(*dst);
      Flow* raw = f.get();
      auto watch =
          client::NotificationStream::Open(b_, f->conn->vqp_b(), [raw](const v1::Notification& n) {
            std::lock_guard<std::mutex> l(raw->mu);
            raw->imms.push_back(n.wc_status() == "success" ? n.imm() : UINT32_MAX);
          });
      ASSERT_TRUE(watch.ok()) << watch.status().ToString();
      f->watch = std::move(*watch);
      f->session = OpenSession(f->conn->vqp_a());
      ASSERT_NE(f->session, nullptr);
      flows.push_back(std::move(f));
    }
    std::vector<std::thread> senders;
    for (auto& f : flows) {
      senders.emplace_back([&, raw = f.get()] {
        for (uint32_t i = 0; i < kOps; ++i) {
          raw->session->Submit(Op(**src, To(*raw->dst), i, 4096), [raw](client::TransferResult r) {
            if (r.status.ok()) ++raw->succeeded;
          });
        }
      });
    }
    for (auto& t : senders) t.join();
    for (auto& f : flows) {
      ASSERT_TRUE(f->session->Flush(std::chrono::seconds(60)).ok());
      EXPECT_EQ(f->succeeded.load(), kOps);
      for (int i = 0; i < 1000; ++i) {
        {
          std::lock_guard<std::mutex> l(f->mu);
          if (f->imms.size() >= kOps) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::lock_guard<std::mutex> l(f->mu);
      ASSERT_EQ(f->imms.size(), kOps);
      uint32_t out_of_place = 0, first = UINT32_MAX;
      for (uint32_t i = 0; i < kOps; ++i) {
        if (f->imms[i] != i && out_of_place++ == 0) first = i;
      }
      EXPECT_EQ(out_of_place, 0u) << "VQP " << f->conn->vqp_a() << ": the first notification "
                                  << "out of place is #" << first << ": immediate "
                                  << f->imms[first];
    }
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// The engine stalls for a second while 20 sessions keep 256 operations each in flight: 5,120,
// more than its command queue holds (4,096). Each stream then holds the operation the queue
// refused and reads no further until the engine, running again, tells it there is room. Every
// operation succeeds, and each session's operations still arrive in the order it sent them.
TEST(SdkStall, AStalledEnginesFullQueueHoldsOperationsAndRunsThemInOrderAfter) {
  constexpr int kSessions = 20;
  constexpr uint32_t kOps = 400;
  auto pa = AgentProcess::Spawn({"stall-a", {TestNicIp(0, 0)}, 0, /*fault_injection=*/true});
  auto pb = AgentProcess::Spawn({"stall-b", {TestNicIp(1, 0)}, 2});
  ASSERT_TRUE(pa && pb);
  auto a = AgentClient::Open(Target(0));
  auto b = AgentClient::Open(Target(2));
  ASSERT_TRUE(a.ok() && b.ok());
  auto conn = client::Connect(*a, *b, {.scheme = v1::SCHEME_DQPLB, .num_qps = 2});
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  auto src = (*a)->RegisterMemory(4 * kMiB, "src");
  auto dst = (*b)->RegisterMemory(4 * kMiB, "dst", {(*conn)->vqp_b()});
  ASSERT_TRUE(src.ok() && dst.ok());
  std::mutex mu;
  std::vector<uint32_t> imms;
  auto watch =
      client::NotificationStream::Open(*b, (*conn)->vqp_b(), [&](const v1::Notification& n) {
        std::lock_guard<std::mutex> l(mu);
        imms.push_back(n.wc_status() == "success" ? n.imm() : UINT32_MAX);
      });
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  std::vector<std::unique_ptr<TransferSession>> sessions;
  for (int k = 0; k < kSessions; ++k) {
    auto session = TransferSession::Open(*a, (*conn)->vqp_a());
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    sessions.push_back(std::move(*session));
  }
  {
    grpc::ClientContext ctx;
    v1::InjectFaultRequest request;
    request.set_kind(v1::FAULT_KIND_STALL_ENGINE);
    request.set_duration_ms(1000);
    v1::InjectFaultResponse out;
    ASSERT_TRUE(pa->stub().InjectFault(&ctx, request, &out).ok());
  }
  std::atomic<uint32_t> succeeded{0};
  std::vector<std::thread> senders;
  for (int k = 0; k < kSessions; ++k) {
    senders.emplace_back([&, k] {
      for (uint32_t i = 0; i < kOps; ++i) {
        TransferOp op;
        op.op = v1::OP_WRITE_WITH_IMM;
        op.local_region = (*src)->id();
        op.local_offset = (i % 1024) * 4096;
        op.remote = (*dst)->info().grants(0);
        op.remote_offset = op.local_offset;
        op.length = 4096;
        op.imm = static_cast<uint32_t>(k) << 16 | i;
        op.timeout = std::chrono::seconds(30);
        sessions[static_cast<size_t>(k)]->Submit(op, [&](client::TransferResult r) {
          if (r.status.ok()) ++succeeded;
        });
      }
    });
  }
  for (auto& t : senders) t.join();
  for (auto& s : sessions) ASSERT_TRUE(s->Flush(std::chrono::seconds(60)).ok());
  EXPECT_EQ(succeeded.load(), kSessions * kOps);
  EXPECT_GE(MetricSum(ScrapeMetrics(pa->metrics_port()), "braid_engine_command_queue_full_total"),
            1)
      << "the stall never filled the engine's command queue: the test proves nothing";
  for (int i = 0; i < 1000; ++i) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (imms.size() >= kSessions * kOps) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(imms.size(), kSessions * kOps);
  std::vector<uint32_t> next(kSessions, 0);
  uint32_t out_of_order = 0;
  for (uint32_t imm : imms) {
    ASSERT_NE(imm, UINT32_MAX) << "a message failed at the receiver";
    const uint32_t k = imm >> 16;
    ASSERT_LT(k, static_cast<uint32_t>(kSessions));
    if ((imm & 0xFFFF) != next[k]) ++out_of_order;
    next[k] = (imm & 0xFFFF) + 1;
  }
  EXPECT_EQ(out_of_order, 0u);
}

TEST_P(SdkTest, ADeadlineEndsATransferThatCannotFinish) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 2});
    ASSERT_TRUE(conn.ok());
    auto src = a_->RegisterMemory(4 * kMiB);
    auto dst = b_->RegisterMemory(4 * kMiB, "", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(StopProcess(pb_->pid()));  // the peer acknowledges nothing
    TransferOp op = Op(**src, To(**dst), 0);
    op.timeout = std::chrono::milliseconds(300);
    const auto t0 = Clock::now();
    auto r = session->Submit(op).get();
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    kill(pb_->pid(), SIGCONT);
    EXPECT_EQ(r.status.code(), common::StatusCode::kDeadlineExceeded) << r.status.ToString();
    EXPECT_NE(r.status.message().find("missed its deadline"), std::string::npos)
        << r.status.message();
    EXPECT_GE(waited, 0.29);
    EXPECT_LT(waited, 2.0);
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

TEST_P(SdkTest, CancelEndsEveryTransferInFlightAtOnce) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 2});
    ASSERT_TRUE(conn.ok());
    auto src = a_->RegisterMemory(16 * kMiB);
    auto dst = b_->RegisterMemory(16 * kMiB, "", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    ASSERT_TRUE(StopProcess(pb_->pid()));
    std::vector<std::future<client::TransferResult>> futures;
    for (uint64_t i = 0; i < 10; ++i) futures.push_back(session->Submit(Op(**src, To(**dst), i)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto t0 = Clock::now();
    session->Cancel();
    for (auto& f : futures) {
      auto r = f.get();
      EXPECT_EQ(r.status.code(), common::StatusCode::kCancelled) << r.status.ToString();
    }
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 0.5);
    auto late = session->Submit(Op(**src, To(**dst), 11)).get();
    EXPECT_EQ(late.status.code(), common::StatusCode::kCancelled);
    kill(pb_->pid(), SIGCONT);  // the agent's own copies of those writes drain
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

TEST_P(SdkTest, AnAgentRestartMidTransferIsAClearErrorAndConnectWorksAfter) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 4});
    ASSERT_TRUE(conn.ok());
    auto dst = b_->RegisterMemory(64 * kMiB, "", {(*conn)->vqp_b()});
    ASSERT_TRUE(dst.ok());
    std::vector<std::future<client::TransferResult>> futures;
    {
      auto src = a_->RegisterMemory(64 * kMiB);
      ASSERT_TRUE(src.ok());
      auto session = OpenSession((*conn)->vqp_a());
      ASSERT_NE(session, nullptr);
      std::thread killer([this] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        pa_->Kill(SIGKILL);  // the session's own agent dies mid-stream
      });
      const auto t0 = Clock::now();
      int failed = 0;
      for (uint64_t i = 0; i < 4096; ++i) {
        futures.push_back(session->Submit(Op(**src, To(**dst), i)));
        if (futures.size() > 300) {  // keep memory bounded: reap the oldest
          auto r = futures.front().get();
          futures.erase(futures.begin());
          if (!r.status.ok()) {
            ++failed;
            break;
          }
        }
      }
      for (auto& f : futures) failed += f.get().status.ok() ? 0 : 1;
      killer.join();
      EXPECT_GT(failed, 0);
      EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10.0);
      auto after = session->Submit(Op(**src, To(**dst), 0)).get();
      EXPECT_EQ(after.status.code(), common::StatusCode::kIoError) << after.status.ToString();
      EXPECT_NE(after.status.message().find(TargetA()), std::string::npos)
          << after.status.message();
    }  // the region's and the connection's cleanup on the dead agent fail quietly
    (*conn)->Release();
    ASSERT_TRUE(b_->DestroyVqp((*conn)->vqp_b()).ok());
    // The agent comes back; the orchestrator's Connect works again.
    pa_ = AgentProcess::Spawn(SpecOfA());
    ASSERT_TRUE(pa_);
    auto again = AgentClient::Open(TargetA());
    ASSERT_TRUE(again.ok());
    a_ = *again;
    auto conn2 = client::Connect(a_, b_, {.num_qps = 4});
    ASSERT_TRUE(conn2.ok()) << conn2.status().ToString();
    auto src2 = a_->RegisterMemory(4 * kMiB);
    ASSERT_TRUE(src2.ok());
    auto session2 = OpenSession((*conn2)->vqp_a());
    ASSERT_NE(session2, nullptr);
    auto granted = (*dst)->Grant((*conn2)->vqp_b());
    ASSERT_TRUE(granted.ok()) << granted.status().ToString();
    auto r = session2->Submit(Op(**src2, *granted, 0)).get();
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

// With ClientOptions::hold, what a client creates lives at most as long as the client: once it is
// destroyed (its Hold call ends), the agents destroy the VQPs it connected, released or not, while
// a client without a lease keeps what it makes.
TEST_P(SdkTest, WhatAHoldingClientCreatesGoesWithIt) {
  client::ClientOptions hold;
  hold.hold = true;
  auto ha = AgentClient::Open(TargetA(), hold);
  auto hb = AgentClient::Open(TargetB(), hold);
  ASSERT_TRUE(ha.ok() && hb.ok()) << ha.status().ToString() << hb.status().ToString();
  ASSERT_NE((*ha)->lease(), 0u);
  EXPECT_EQ(a_->lease(), 0u);
  {
    auto held = client::Connect(*ha, *hb, {.num_qps = 2});
    ASSERT_TRUE(held.ok()) << held.status().ToString();
    (*held)->Release();
    auto src = (*ha)->RegisterMemory(kMiB);
    auto dst = (*hb)->RegisterMemory(kMiB, "", {(*held)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    auto session = TransferSession::Open(*ha, (*held)->vqp_a());
    ASSERT_TRUE(session.ok());
    for (uint64_t i = 0; i < 8; ++i) {
      EXPECT_TRUE((*session)->Submit(Op(**src, To(**dst), i, 4096)).get().status.ok());
    }
  }
  auto kept = client::Connect(a_, b_, {.num_qps = 2});
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(a_->ListVqps()->size(), 2u);
  ha->reset();  // the last references: the Hold calls end
  hb->reset();
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while ((a_->ListVqps()->size() > 1 || b_->ListVqps()->size() > 1) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto left_a = a_->ListVqps();
  auto left_b = b_->ListVqps();
  ASSERT_EQ(left_a->size(), 1u);
  ASSERT_EQ(left_b->size(), 1u);
  EXPECT_EQ((*left_a)[0].vqp_id(), (*kept)->vqp_a());
  EXPECT_EQ((*left_b)[0].vqp_id(), (*kept)->vqp_b());
}

// EndHold gives back what the lease holds before it returns, while the client and a region it
// registered are still referenced; creating more through that client is then refused, saying why.
TEST_P(SdkTest, EndHoldGivesBackWhatTheLeaseHoldsBeforeItReturns) {
  client::ClientOptions hold;
  hold.hold = true;
  auto ha = AgentClient::Open(TargetA(), hold);
  ASSERT_TRUE(ha.ok()) << ha.status().ToString();
  auto held = client::Connect(*ha, b_, {.num_qps = 1});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  (*held)->Release();
  const uint64_t peer = (*held)->vqp_b();
  auto region = (*ha)->RegisterMemory(kMiB);
  ASSERT_TRUE(region.ok());
  // Enough more that giving them back takes a while: none may be left when EndHold returns.
  std::vector<std::unique_ptr<client::Region>> more;
  for (int i = 0; i < 24; ++i) {
    ASSERT_TRUE((*ha)->CreateVqp({.num_qps = 2}).ok());
    auto r = (*ha)->RegisterMemory(64 << 10);
    ASSERT_TRUE(r.ok());
    more.push_back(std::move(*r));
  }
  ASSERT_EQ(a_->ListVqps()->size(), 25u);
  ASSERT_EQ(a_->ListRegions()->size(), 25u);
  const common::Status ended = (*ha)->EndHold();
  ASSERT_TRUE(ended.ok()) << ended.ToString();
  EXPECT_EQ(a_->ListVqps()->size(), 0u);  // at once, not after a wait
  EXPECT_EQ(a_->ListRegions()->size(), 0u);
  auto refused = (*ha)->CreateVqp({.num_qps = 1});
  EXPECT_EQ(refused.status().code(), common::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().ToString().find("ended its lease"), std::string::npos)
      << refused.status().ToString();
  EXPECT_TRUE((*ha)->EndHold().ok());  // again: nothing to do
  region->reset();                     // its deregistration finds the region gone (best effort)
  EXPECT_TRUE(b_->DestroyVqp(peer).ok());
}

// Times the SDK's own threads of this process (named "braid-...") went to sleep and woke: the
// voluntary context switches in /proc/self/task/*/status.
uint64_t SdkThreadWakeups() {
  uint64_t total = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (!std::getline(comm, name) || !name.starts_with("braid-")) continue;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.starts_with("voluntary_ctxt_switches:")) total += std::stoull(line.substr(24));
    }
  }
  return total;
}

// A session and a notification stream that have nothing to do wake none of the SDK's threads (its
// reader, its deadline watchdog, the stream's reader): a process holding many idle sessions pays
// nothing for them. They still wake at once for work: an op submitted after the idle spell
// completes, and closing them returns promptly.
TEST_P(SdkTest, AnIdleSessionAndNotificationStreamWakeNoThread) {
  {
    auto conn = client::Connect(a_, b_, {.num_qps = 2});
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto src = a_->RegisterMemory(kMiB, "src");
    auto dst = b_->RegisterMemory(kMiB, "dst", {(*conn)->vqp_b()});
    ASSERT_TRUE(src.ok() && dst.ok());
    std::atomic<int> heard{0};
    auto watch = client::NotificationStream::Open(b_, (*conn)->vqp_b(),
                                                  [&](const v1::Notification&) { ++heard; });
    ASSERT_TRUE(watch.ok()) << watch.status().ToString();
    auto session = OpenSession((*conn)->vqp_a());
    ASSERT_NE(session, nullptr);
    EXPECT_TRUE(session->Submit(Op(**src, To(**dst), 0)).get().status.ok());
    // The watchdog looks every 20 ms for a second after the last op, then sleeps.
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    const uint64_t before = SdkThreadWakeups();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const uint64_t wakeups = SdkThreadWakeups() - before;
    // Polling every 10 ms (the readers) and 20 ms (the watchdog) made about 125 here.
    EXPECT_LE(wakeups, 2u) << "idle SDK threads woke " << wakeups << " times in 500 ms";
    const auto t0 = Clock::now();
    EXPECT_TRUE(session->Submit(Op(**src, To(**dst), 1)).get().status.ok());
    EXPECT_TRUE(Eventually([&] { return heard.load() == 2; })) << heard.load();
    session.reset();
    watch->reset();
    EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(500)) << "an idle session woke late";
  }
  ExpectNothingHeld(*a_);
  ExpectNothingHeld(*b_);
}

INSTANTIATE_TEST_SUITE_P(Paths, SdkTest, ::testing::Bool(), PathName);

}  // namespace
}  // namespace braid::testing
