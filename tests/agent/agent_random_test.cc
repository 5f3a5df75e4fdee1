// Randomized API test: seeded random sequences of every RPC, valid and invalid, against two agents
// (cancelled streams, destroy and deregister under load, forged recovery requests, drains and
// broken QPs included). After every step both agents are alive and SERVING and no call was
// answered UNKNOWN, INTERNAL or UNAVAILABLE; every operation of a Transfer stream that was not
// cancelled got exactly one completion. At the end, after cleanup: nothing listed, fds and
// threads at their baseline, and a transfer whose bytes are compared works.
//
// The same with three clients at once, each with its own sequence, on the same agents.
//
// BRAID_RANDOM_SEED picks the seed (default 1), BRAID_RANDOM_SECONDS the length (default 35 s, 20 s
// for the three clients; 15 and 10 s under sanitizers).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/agent/agent_harness.h"

namespace braid::testing {
namespace {

using Clock = std::chrono::steady_clock;

class RandomApi {
 public:
  RandomApi(AgentProcess& a, AgentProcess& b, uint64_t seed) : agents_{&a, &b}, rng_(seed) {}

  // One random step.
  void Step() {
    const int kind = Pick(0, 99);
    if (kind < 8)
      CreateOne();
    else if (kind < 18)
      CreatePair();
    else if (kind < 22)
      ConnectRandom();
    else if (kind < 25)
      ConnectGarbage();
    else if (kind < 32)
      DestroyRandom();
    else if (kind < 40)
      RegisterRandom();
    else if (kind < 46)
      DeregisterRandom();
    else if (kind < 62)
      Transfers(false);
    else if (kind < 68)
      Transfers(true);
    else if (kind < 73)
      DestroyUnderLoad();
    else if (kind < 79)
      WatchAndCancel();
    else if (kind < 84)
      ForgedRecovery();
    else if (kind < 88)
      DrainAndUndrain();
    else if (kind < 92)
      BreakQp();
    else
      ReadOnly();
  }

  // Both agents alive and SERVING (the health loop samples every 100 ms: waited for a moment).
  void CheckAlive(int step) {
    for (AgentProcess* agent : agents_) {
      ASSERT_EQ(kill(agent->pid(), 0), 0) << agent->id() << " died at step " << step;
      int health = -1;
      for (int i = 0; i < 30 && health != 1; ++i) {
        health = HealthStatus(agent->channel());
        if (health != 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ASSERT_EQ(health, 1) << agent->id() << " not SERVING after step " << step << " (" << last_
                           << ")";
    }
  }

  const std::map<std::string, int>& codes() const { return codes_; }

 private:
  struct Vqp {
    v1::VirtualQpInfo info;
    int agent;
    bool connected = false;
  };
  struct Pair {
    uint64_t ids[2];  // on agent 0 and agent 1
  };

  int Pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  uint64_t Pick64() { return rng_(); }
  bool Chance(int percent) { return Pick(0, 99) < percent; }
  v1::Agent::Stub& Stub(int agent) { return agents_[agent]->stub(); }

  // Records an answer; a well-formed request never gets UNKNOWN or INTERNAL, and a call never
  // UNAVAILABLE (an operation may: its QPs failed).
  void Check(const char* what, const grpc::Status& s, bool operation = false) {
    last_ = what;
    ++codes_[std::string(what) + " " + std::to_string(s.error_code())];
    EXPECT_NE(s.error_code(), grpc::StatusCode::UNKNOWN) << what << ": " << s.error_message();
    EXPECT_NE(s.error_code(), grpc::StatusCode::INTERNAL) << what << ": " << s.error_message();
    if (!operation) {
      EXPECT_NE(s.error_code(), grpc::StatusCode::UNAVAILABLE) << what << ": " << s.error_message();
    }
    EXPECT_LE(s.error_message().size(), 600u) << what << ": a message quotes input at length";
  }

  std::string RandomName() {
    static const char* kNames[] = {"soft0", "soft1", "soft2", "", "mlx5_0"};
    if (Chance(5)) return std::string(static_cast<size_t>(Pick(200, 3000)), 'x');
    return kNames[Pick(0, 4)];
  }

  // A random id: mostly one that exists, sometimes one that does not.
  uint64_t SomeVqpId(int agent) {
    std::vector<uint64_t> ids;
    for (const auto& [id, v] : vqps_) {
      if (v.agent == agent) ids.push_back(v.info.vqp_id());
    }
    if (ids.empty() || Chance(10))
      return Chance(50) ? Pick64() : static_cast<uint64_t>(Pick(0, 50));
    return ids[static_cast<size_t>(Pick(0, static_cast<int>(ids.size()) - 1))];
  }
  const v1::RegionInfo* SomeRegion(int agent) {
    auto& list = regions_[agent];
    if (list.empty()) return nullptr;
    return &list[static_cast<size_t>(Pick(0, static_cast<int>(list.size()) - 1))];
  }

  uint64_t Key(int agent, uint64_t id) const { return (uint64_t(agent) << 63) | id; }

  bool Create(int agent, v1::Scheme scheme, uint32_t qps, v1::VirtualQpInfo* out) {
    grpc::ClientContext ctx;
    v1::CreateVirtualQpRequest r;
    r.set_scheme(scheme);
    r.set_num_qps(qps);
    if (Chance(10)) r.add_devices(RandomName());
    if (Chance(10)) r.set_max_virtual_wrs(static_cast<uint32_t>(Pick(0, 70000)));
    if (Chance(10)) r.set_qp_capacity(static_cast<uint32_t>(Pick(0, 5000)));
    if (Chance(5)) r.set_fragment_size(Pick64() % (2ull << 30));
    if (Chance(5)) r.set_label(std::string(static_cast<size_t>(Pick(0, 500)), 'l'));
    const grpc::Status s = Stub(agent).CreateVirtualQp(&ctx, r, out);
    Check("CreateVirtualQp", s);
    if (s.ok()) vqps_[Key(agent, out->vqp_id())] = Vqp{*out, agent};
    return s.ok();
  }

  void CreateOne() {
    v1::VirtualQpInfo info;
    const uint32_t qps = Chance(15) ? static_cast<uint32_t>(Pick(0, 200)) : Pick(1, 8);
    (void)Create(Pick(0, 1), Chance(50) ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB, qps, &info);
  }

  bool Connect(int agent, uint64_t vqp_id, const v1::BusinessCard& card) {
    grpc::ClientContext ctx;
    v1::ConnectVirtualQpRequest r;
    r.set_vqp_id(vqp_id);
    *r.mutable_remote_card() = card;
    v1::VirtualQpInfo out;
    const grpc::Status s = Stub(agent).ConnectVirtualQp(&ctx, r, &out);
    Check("ConnectVirtualQp", s);
    if (s.ok()) vqps_[Key(agent, vqp_id)].connected = true;
    return s.ok();
  }

  void CreatePair() {
    const v1::Scheme scheme = Chance(50) ? v1::SCHEME_SPRAY : v1::SCHEME_DQPLB;
    const uint32_t qps = static_cast<uint32_t>(Pick(1, 8));
    v1::VirtualQpInfo v[2];
    for (int i = 0; i < 2; ++i) {
      grpc::ClientContext ctx;
      v1::CreateVirtualQpRequest r;
      r.set_scheme(scheme);
      r.set_num_qps(qps);
      const grpc::Status s = Stub(i).CreateVirtualQp(&ctx, r, &v[i]);
      Check("CreateVirtualQp", s);
      if (!s.ok()) return;
      vqps_[Key(i, v[i].vqp_id())] = Vqp{v[i], i};
    }
    if (Connect(0, v[0].vqp_id(), v[1].card()) && Connect(1, v[1].vqp_id(), v[0].card())) {
      pairs_.push_back(Pair{{v[0].vqp_id(), v[1].vqp_id()}});
    }
  }

  // Connects a VQP with the card of any VQP of the other agent (often wrong: a mismatch, an
  // already connected VQP, a card already used).
  void ConnectRandom() {
    const int agent = Pick(0, 1);
    std::vector<const Vqp*> theirs;
    for (const auto& [k, v] : vqps_) {
      if (v.agent != agent) theirs.push_back(&v);
    }
    if (theirs.empty()) return;
    const Vqp& other = *theirs[static_cast<size_t>(Pick(0, static_cast<int>(theirs.size()) - 1))];
    (void)Connect(agent, SomeVqpId(agent), other.info.card());
  }

  void ConnectGarbage() {
    v1::BusinessCard card;
    card.set_version(static_cast<uint32_t>(Pick(0, 3)));
    card.set_vqp_id(Pick64());
    card.set_scheme(static_cast<v1::Scheme>(Pick(0, 3)));
    const int devices = Pick(0, 3);
    for (int d = 0; d < devices; ++d) {
      auto* dev = card.add_devices();
      dev->set_name(RandomName());
      dev->set_gid(std::string(static_cast<size_t>(Pick(0, 20)), static_cast<char>(Pick(0, 255))));
    }
    const int qps = Pick(0, 10);
    for (int q = 0; q < qps; ++q) {
      auto* qp = card.add_data_qps();
      qp->set_device_index(static_cast<uint32_t>(Pick(0, 4)));
      qp->set_qp_num(static_cast<uint32_t>(Pick64()));
      qp->set_psn(static_cast<uint32_t>(Pick64()));
      qp->set_mtu(static_cast<uint32_t>(Pick(0, 7)));
    }
    if (Chance(50))
      *card.mutable_message_qp() = card.data_qps_size() > 0 ? card.data_qps(0) : v1::QpCard();
    card.set_fragment_size(Chance(50) ? 512 << 10 : Pick64());
    card.set_qp_capacity(static_cast<uint32_t>(Pick(0, 5000)));
    card.set_max_virtual_wrs(static_cast<uint32_t>(Pick(0, 70000)));
    card.set_control_endpoint(Chance(50) ? "127.0.0.1:1" : RandomName());
    card.set_control_addr(Pick64());
    card.set_epoch(Pick64());
    card.set_incarnation(Pick64());
    const int agent = Pick(0, 1);
    (void)Connect(agent, SomeVqpId(agent), card);
  }

  void Destroy(int agent, uint64_t id) {
    grpc::ClientContext ctx;
    v1::DestroyVirtualQpRequest r;
    r.set_vqp_id(id);
    v1::DestroyVirtualQpResponse out;
    const grpc::Status s = Stub(agent).DestroyVirtualQp(&ctx, r, &out);
    Check("DestroyVirtualQp", s);
    if (s.ok()) {
      vqps_.erase(Key(agent, id));
      std::erase_if(pairs_, [&](const Pair& p) { return p.ids[agent] == id; });
    }
  }

  void DestroyRandom() {
    const int agent = Pick(0, 1);
    Destroy(agent, SomeVqpId(agent));
  }

  // Registers a region (mostly granted to a VQP at once), or grants or revokes one's access.
  void RegisterRandom() {
    const int agent = Pick(0, 1);
    grpc::ClientContext ctx;
    v1::RegionInfo* some =
        regions_[agent].empty()
            ? nullptr
            : &regions_[agent][static_cast<size_t>(Pick(0, int(regions_[agent].size()) - 1))];
    if (some != nullptr && Chance(30)) {
      // Mostly a VQP the region is granted to (revoking it), else any.
      const uint64_t vqp = some->grants_size() > 0 && Chance(60)
                               ? some->grants(Pick(0, some->grants_size() - 1)).vqp_id()
                               : SomeVqpId(agent);
      if (Chance(70)) {
        v1::GrantAccessRequest r;
        r.set_region_id(some->region_id());
        r.set_vqp_id(vqp);
        v1::RemoteRegion grant;
        const grpc::Status s = Stub(agent).GrantAccess(&ctx, r, &grant);
        Check("GrantAccess", s);
        if (s.ok()) *some->add_grants() = grant;
      } else {
        v1::RevokeAccessRequest r;
        r.set_region_id(some->region_id());
        r.set_vqp_id(vqp);
        v1::RevokeAccessResponse out;
        const grpc::Status s = Stub(agent).RevokeAccess(&ctx, r, &out);
        Check("RevokeAccess", s);  // its grant stays listed here: a revoked key is tried too
      }
      return;
    }
    v1::RegisterMemoryRequest r;
    r.set_length(Chance(5) ? (Chance(50) ? 0 : Pick64()) : uint64_t(Pick(1, 256)) << 12);
    if (Chance(5)) r.set_label(std::string(static_cast<size_t>(Pick(0, 300)), 'r'));
    if (Chance(70)) r.add_grant_vqp_ids(SomeVqpId(agent));
    v1::RegionInfo out;
    const grpc::Status s = Stub(agent).RegisterMemory(&ctx, r, &out);
    Check("RegisterMemory", s);
    if (s.ok()) regions_[agent].push_back(out);
  }

  void Deregister(int agent, uint64_t id) {
    grpc::ClientContext ctx;
    v1::DeregisterMemoryRequest r;
    r.set_region_id(id);
    v1::DeregisterMemoryResponse out;
    const grpc::Status s = Stub(agent).DeregisterMemory(&ctx, r, &out);
    Check("DeregisterMemory", s);
    if (s.ok()) {
      std::erase_if(regions_[agent], [id](const v1::RegionInfo& r) { return r.region_id() == id; });
    }
  }

  void DeregisterRandom() {
    const int agent = Pick(0, 1);
    const v1::RegionInfo* r = SomeRegion(agent);
    Deregister(agent, r != nullptr && !Chance(10) ? r->region_id() : Pick64() % 1000);
  }

  // Random operations on a random pair (or on anything): mostly valid, some out of range.
  std::vector<v1::TransferOp> RandomOps(int* from) {
    std::vector<v1::TransferOp> ops;
    *from = Pick(0, 1);
    const int to = 1 - *from;
    uint64_t vqp = SomeVqpId(*from);
    if (!pairs_.empty() && Chance(85)) {
      vqp = pairs_[static_cast<size_t>(Pick(0, static_cast<int>(pairs_.size()) - 1))].ids[*from];
    }
    const v1::RegionInfo* local = SomeRegion(*from);
    const v1::RegionInfo* remote = SomeRegion(to);
    const int n = Pick(1, 300);
    for (int i = 0; i < n; ++i) {
      v1::TransferOp r;
      r.set_op_id(static_cast<uint64_t>(i));
      r.set_vqp_id(vqp);
      r.set_op(static_cast<v1::Op>(Pick(Chance(3) ? 0 : 1, 3)));
      if (local != nullptr) r.set_local_region_id(local->region_id());
      if (remote != nullptr && remote->grants_size() > 0) {
        *r.mutable_remote() = remote->grants(Pick(0, remote->grants_size() - 1));
      }
      const uint64_t room = local != nullptr && remote != nullptr
                                ? std::min(local->length(), remote->length())
                                : 4096;
      const uint64_t len = Chance(5) ? Pick64() % (room * 2 + 1) : 1 + Pick64() % room;
      r.set_length(len);
      if (len <= room) {
        r.set_local_offset(Pick64() % (room - len + 1));
        r.set_remote_offset(Pick64() % (room - len + 1));
      }
      if (Chance(3)) r.set_remote_offset(Pick64());
      r.set_imm(static_cast<uint32_t>(Pick64()));
      r.set_timeout_ms(Chance(20) ? static_cast<uint32_t>(Pick(1, 200)) : 5000);
      ops.push_back(r);
    }
    return ops;
  }

  // Runs `ops` on one stream; checks every completion's code and that each operation completes
  // once unless `cancel_after_ms` >= 0 cancelled the stream.
  void RunStream(int from, const std::vector<v1::TransferOp>& ops, int cancel_after_ms) {
    grpc::ClientContext ctx;
    auto stream = Stub(from).Transfer(&ctx);
    v1::TransferResponse response;
    if (!stream->Read(&response)) {
      Check("Transfer", stream->Finish());
      return;
    }
    std::thread canceller;
    if (cancel_after_ms >= 0) {
      canceller = std::thread([&ctx, cancel_after_ms] {
        std::this_thread::sleep_for(std::chrono::milliseconds(cancel_after_ms));
        ctx.TryCancel();
      });
    }
    std::thread writer([&] {
      // Messages of 1 to 8 operations, in turn.
      for (size_t i = 0, n = 1; i < ops.size(); i += n, n = n % 8 + 1) {
        v1::TransferRequest request;
        for (size_t j = i; j < std::min(ops.size(), i + n); ++j) *request.add_ops() = ops[j];
        if (!stream->Write(request)) break;
      }
      stream->WritesDone();
    });
    std::map<uint64_t, int> seen;
    while (stream->Read(&response)) {
      for (const v1::TransferCompletion& c : response.completions()) {
        ++seen[c.op_id()];
        Check("Transfer operation",
              grpc::Status(static_cast<grpc::StatusCode>(c.code()), c.message()), true);
      }
    }
    writer.join();
    if (canceller.joinable()) canceller.join();
    const grpc::Status s = stream->Finish();
    if (cancel_after_ms >= 0 && s.error_code() == grpc::StatusCode::CANCELLED) return;
    Check("Transfer", s);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(seen.size(), ops.size()) << "every operation completes";
    for (const auto& [op, n] : seen) EXPECT_EQ(n, 1) << "operation " << op;
  }

  void Transfers(bool cancel) {
    int from = 0;
    const std::vector<v1::TransferOp> ops = RandomOps(&from);
    RunStream(from, ops, cancel ? Pick(0, 30) : -1);
  }

  // A Transfer stream on a pair while its VQP is destroyed or its region deregistered.
  void DestroyUnderLoad() {
    if (pairs_.empty()) return;
    int from = 0;
    std::vector<v1::TransferOp> ops = RandomOps(&from);
    const Pair pair = pairs_[static_cast<size_t>(Pick(0, static_cast<int>(pairs_.size()) - 1))];
    for (auto& op : ops) op.set_vqp_id(pair.ids[from]);
    const int delay = Pick(0, 20);
    const bool destroy = Chance(60);
    const int agent = Chance(70) ? from : 1 - from;
    const v1::RegionInfo* region = SomeRegion(agent);
    const uint64_t region_id = region != nullptr ? region->region_id() : 0;
    std::thread load([&] { RunStream(from, ops, -1); });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    if (destroy) {
      Destroy(agent, pair.ids[agent]);
    } else if (region_id != 0) {
      Deregister(agent, region_id);
    }
    load.join();
  }

  // Opens a watch stream, reads its first message, waits a moment and cancels it.
  template <typename Response, typename Open>
  void WatchThenCancel(const char* what, Open open) {
    grpc::ClientContext ctx;
    auto reader = open(ctx);
    Response response;
    if (reader->Read(&response)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(Pick(0, 5)));
      ctx.TryCancel();
      while (reader->Read(&response)) {
      }
    }
    const grpc::Status s = reader->Finish();
    if (s.error_code() != grpc::StatusCode::CANCELLED) Check(what, s);
  }

  void WatchAndCancel() {
    const int agent = Pick(0, 1);
    if (Chance(50)) {
      v1::WatchNotificationsRequest r;
      r.set_vqp_id(SomeVqpId(agent));
      WatchThenCancel<v1::WatchNotificationsResponse>(
          "WatchNotifications",
          [&](grpc::ClientContext& ctx) { return Stub(agent).WatchNotifications(&ctx, r); });
    } else {
      WatchThenCancel<v1::WatchEventsResponse>("WatchEvents", [&](grpc::ClientContext& ctx) {
        return Stub(agent).WatchEvents(&ctx, {});
      });
    }
  }

  // Recovery requests nobody entitled sent: random identities, or a real VQP with a wrong one.
  void ForgedRecovery() {
    const int agent = Pick(0, 1);
    grpc::ClientContext ctx;
    v1::RecoverQpRequest r;
    r.set_vqp_id(SomeVqpId(agent));
    r.set_qp_index(static_cast<uint32_t>(Pick(0, 10)));
    r.mutable_qp()->set_qp_num(static_cast<uint32_t>(Pick64()) & 0xFFFFFF);
    r.mutable_qp()->set_psn(static_cast<uint32_t>(Pick64()) & 0xFFFFFF);
    r.mutable_qp()->set_mtu(static_cast<uint32_t>(Pick(0, 6)));
    r.mutable_qp()->set_device_index(static_cast<uint32_t>(Pick(0, 3)));
    r.set_epoch(Pick64());
    r.set_from_endpoint(Chance(50) ? "127.0.0.1:1" : RandomName());
    r.set_to_incarnation(Pick64());
    r.set_from_vqp_id(Pick64());
    r.set_from_incarnation(Pick64());
    v1::RecoverQpResponse out;
    const grpc::Status s = Stub(agent).RecoverQp(&ctx, r, &out);
    Check("RecoverQp", s);
    EXPECT_FALSE(s.ok()) << "a forged recovery request was accepted";
  }

  void DrainAndUndrain() {
    const int agent = Pick(0, 1);
    const std::string device = Chance(85) ? (Chance(50) ? "soft0" : "soft1") : RandomName();
    {
      grpc::ClientContext ctx;
      v1::DrainDeviceRequest r;
      r.set_device(device);
      v1::Device out;
      Check("DrainDevice", Stub(agent).DrainDevice(&ctx, r, &out));
    }
    if (Chance(50)) Transfers(false);  // work while one device is drained
    grpc::ClientContext ctx;
    v1::DrainDeviceRequest r;
    r.set_device(device);
    v1::Device out;
    Check("UndrainDevice", Stub(agent).UndrainDevice(&ctx, r, &out));
  }

  void BreakQp() {
    const int agent = Pick(0, 1);
    grpc::ClientContext ctx;
    v1::InjectFaultRequest r;
    r.set_kind(Chance(90) ? v1::FAULT_KIND_BREAK_QP : static_cast<v1::FaultKind>(Pick(0, 9)));
    if (r.kind() == v1::FAULT_KIND_DEVICE_DOWN || r.kind() == v1::FAULT_KIND_STALL_ENGINE) {
      r.set_kind(v1::FAULT_KIND_BREAK_QP);  // their effect on health is tested elsewhere
    }
    r.set_vqp_id(SomeVqpId(agent));
    r.set_qp_index(static_cast<uint32_t>(Pick(0, 9)));
    r.set_device(RandomName());
    v1::InjectFaultResponse out;
    Check("InjectFault", Stub(agent).InjectFault(&ctx, r, &out));
  }

  // A unary call whose answer is only checked.
  template <typename Response, typename Call>
  void Ask(const char* what, Call call) {
    grpc::ClientContext ctx;
    Response out;
    Check(what, call(ctx, out));
  }

  void ReadOnly() {
    const int agent = Pick(0, 1);
    v1::Agent::Stub& stub = Stub(agent);
    Ask<v1::AgentInfo>("GetInfo",
                       [&](auto& ctx, auto& out) { return stub.GetInfo(&ctx, {}, &out); });
    Ask<v1::ListDevicesResponse>(
        "ListDevices", [&](auto& ctx, auto& out) { return stub.ListDevices(&ctx, {}, &out); });
    Ask<v1::ListVirtualQpsResponse>("ListVirtualQps", [&](auto& ctx, auto& out) {
      return stub.ListVirtualQps(&ctx, {}, &out);
    });
    Ask<v1::ListRegionsResponse>(
        "ListRegions", [&](auto& ctx, auto& out) { return stub.ListRegions(&ctx, {}, &out); });
    v1::GetVirtualQpRequest r;
    r.set_vqp_id(SomeVqpId(agent));
    Ask<v1::VirtualQpInfo>("GetVirtualQp",
                           [&](auto& ctx, auto& out) { return stub.GetVirtualQp(&ctx, r, &out); });
  }

  AgentProcess* agents_[2];
  std::mt19937_64 rng_;
  std::map<uint64_t, Vqp> vqps_;  // by Key(agent, id)
  std::vector<Pair> pairs_;
  std::vector<v1::RegionInfo> regions_[2];
  std::map<std::string, int> codes_;
  const char* last_ = "";
};

// A connected pair moves 1 MiB both ways; the bytes are compared.
void VerifiedTransfer(AgentProcess& a, AgentProcess& b, uint64_t seed) {
  const v1::VirtualQpInfo va = CreateVqp(a.stub(), v1::SCHEME_SPRAY, 4);
  const v1::VirtualQpInfo vb = CreateVqp(b.stub(), v1::SCHEME_SPRAY, 4);
  ConnectPair(a.stub(), va, b.stub(), vb);
  const v1::RegionInfo ra = Register(a.stub(), 1 << 20);
  const v1::RegionInfo rb = Register(b.stub(), 1 << 20, "", {vb.vqp_id()});
  MappedRegion src(ra.path(), ra.length()), dst(rb.path(), rb.length());
  FillPattern(src.data(), src.size(), seed);
  const TransferRun run = RunTransfers(a.stub(), MiBWrites(va.vqp_id(), ra, rb, 1, 1));
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.completions.size(), 1u);
  EXPECT_EQ(run.completions[0].code(), 0) << run.completions[0].message();
  EXPECT_EQ(Checksum(dst.data(), dst.size()), Checksum(src.data(), src.size()));
}

// What each agent holds once everything is released, and the check that it holds it again.
class Baseline {
 public:
  // After a first transfer (gRPC opens some fds lazily). A channel an agent opens to its peer for
  // a recovery is closed after 5 s without use: not part of it.
  Baseline(AgentProcess& a, AgentProcess& b, uint64_t seed) : agents_{&a, &b} {
    VerifiedTransfer(a, b, seed);
    ReleaseEverything(a.stub());
    ReleaseEverything(b.stub());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    for (int i = 0; i < 2; ++i) {
      fds_[i] = OpenFds(agents_[i]->pid());
      fd_targets_[i] = FdTargets(agents_[i]->pid());
      threads_[i] = OwnThreads(agents_[i]->pid());
      thread_names_[i] = ThreadNames(agents_[i]->pid());
    }
  }

  // Cleanup through the API, then nothing may be left, and a new transfer works.
  void ExpectHeldAgain(uint64_t seed) {
    for (AgentProcess* agent : agents_) ReleaseEverything(agent->stub());
    for (int i = 0; i < 2; ++i) {
      AgentProcess& agent = *agents_[i];
      size_t f = 0, t = 0;
      for (int tries = 0; tries < 100; ++tries) {
        f = OpenFds(agent.pid());
        t = OwnThreads(agent.pid());
        if (f <= fds_[i] && t <= threads_[i]) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::printf("%s: fds %zu -> %zu, threads %zu -> %zu\n", agent.id().c_str(), fds_[i], f,
                  threads_[i], t);
      EXPECT_EQ(f, fds_[i]) << agent.id();
      if (f != fds_[i]) {
        for (const std::string& target : FdTargets(agent.pid())) {
          const auto& before = fd_targets_[i];
          if (std::find(before.begin(), before.end(), target) == before.end()) {
            std::printf("  %s holds %s (not at the baseline)\n", agent.id().c_str(),
                        target.c_str());
          }
        }
      }
      EXPECT_EQ(t, threads_[i]) << agent.id() << " (threads besides gRPC's callback executor)";
      EXPECT_LE(ExecutorThreads(agent.pid()), MaxExecutorThreads()) << agent.id();
      if (t != threads_[i]) {
        std::string before, now;
        for (const auto& n : thread_names_[i]) before += n + ", ";
        for (const auto& n : ThreadNames(agent.pid())) now += n + ", ";
        std::printf("  %s threads before: %s\n  now: %s\n", agent.id().c_str(), before.c_str(),
                    now.c_str());
      }
    }
    VerifiedTransfer(*agents_[0], *agents_[1], seed);
    for (AgentProcess* agent : agents_) ReleaseEverything(agent->stub());
  }

 private:
  AgentProcess* agents_[2];
  size_t fds_[2] = {};
  std::vector<std::string> fd_targets_[2];
  size_t threads_[2] = {};
  std::vector<std::string> thread_names_[2];
};

uint64_t SeedFromEnv() {
  const char* env = std::getenv("BRAID_RANDOM_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 1;
}

double SecondsFromEnv(double otherwise) {
  const char* env = std::getenv("BRAID_RANDOM_SECONDS");
  return env != nullptr ? std::atof(env) : otherwise;
}

// `clients` clients at once on the same two agents, each running its own random sequence (seeded
// `seed`, or `seed * 1000 + c` when there are several) for `seconds` (`sanitized_seconds` in a
// sanitizer build); then the cleanup check.
void RunRandomClients(const std::string& prefix, int clients, double seconds,
                      double sanitized_seconds) {
#ifdef BRAID_SANITIZED
  seconds = sanitized_seconds;
#else
  (void)sanitized_seconds;
#endif
  seconds = SecondsFromEnv(seconds);
  const uint64_t seed = SeedFromEnv();
  auto a = AgentProcess::Spawn({prefix + "-a", {TestNicIp(0, 0), TestNicIp(0, 1)}, 0, true});
  auto b = AgentProcess::Spawn({prefix + "-b", {TestNicIp(1, 0), TestNicIp(1, 1)}, 2, true});
  ASSERT_TRUE(a && b);
  Baseline baseline(*a, *b, seed);

  std::vector<std::unique_ptr<RandomApi>> apis;
  for (int c = 0; c < clients; ++c) {
    const uint64_t own = clients == 1 ? seed : seed * 1000 + static_cast<uint64_t>(c);
    apis.push_back(std::make_unique<RandomApi>(*a, *b, own));
  }
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  std::atomic<int> steps{0};
  std::vector<std::thread> threads;
  for (const auto& api : apis) {
    threads.emplace_back([&, api = api.get()] {
      for (int step = 0; Clock::now() < end && !::testing::Test::HasFailure(); ++step) {
        api->Step();
        api->CheckAlive(step);
        ++steps;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("seed %llu: %d steps of %d client(s) in %.0f s\n",
              static_cast<unsigned long long>(seed), steps.load(), clients, seconds);
  for (const auto& api : apis) {
    for (const auto& [what, n] : api->codes()) std::printf("  %-28s %d\n", what.c_str(), n);
  }
  ASSERT_FALSE(::testing::Test::HasFailure()) << "seed " << seed;
  baseline.ExpectHeldAgain(seed + 1);
}

TEST(AgentRandomApi, RandomCallSequencesNeverBreakTheAgentsOrLeaveAnythingBehind) {
  RunRandomClients("rand", 1, 35, 15);
}

// Three clients at once: one destroys, drains or breaks what another is using (ids are small
// numbers, and a random one may be another client's), cancels streams next to the others'
// transfers, and so on.
TEST(AgentRandomApi, SeveralClientsAtOnceWithRandomSequencesNeverBreakTheAgents) {
  RunRandomClients("rand3", 3, 20, 10);
}

}  // namespace
}  // namespace braid::testing
