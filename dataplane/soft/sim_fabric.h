// SimFabric: the in-memory link between soft devices of one process, for deterministic tests.
//
// Every connected QP has a channel (its outbound path). Within a channel packets stay in order (as
// on one RC path); across channels, and so across QPs and soft NICs, the fabric interleaves them
// at random from `seed` (or in global send order with reorder = false). Time is virtual: a packet
// is due `delay` ns after it was sent, and when nothing is due the fabric jumps to the next due
// packet or QP timer (RNR back-off, ACK timeout), so timeouts cost no wall-clock time.
// A held packet is neither delivered nor lost, and time stands still while any packet is held:
// a test may hold a path for as long as it likes without provoking timeouts.
//
// Faults: drop (the next N packets of a path, or at random), break (a QP pair's paths lose
// everything until repaired: the requester sees RETRY_EXC_ERR after timeout × (retry_cnt + 1)),
// NIC down (every path to or from that soft NIC loses everything), delay per path or per NIC, and
// a send rate per NIC (packets serialise on its wire).
// Paths are named by the QP that sends on them; QP controls apply once the QP is in RTR.
//
// Driving: Cq::Poll and Qp::Post* on any attached device run Progress(), a bounded step; tests may
// also call Progress() / RunUntilIdle() themselves.
// Threading: one thread for the fabric and everything attached to it. Deterministic: the same
// seed and the same sequence of calls give the same deliveries.
#ifndef BRAID_DATAPLANE_SOFT_SIM_FABRIC_H_
#define BRAID_DATAPLANE_SOFT_SIM_FABRIC_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string_view>
#include <vector>

#include "dataplane/soft/link.h"
#include "dataplane/verbs/provider.h"

namespace braid::soft {

struct SimFabricOptions {
  uint64_t seed = 1;
  bool reorder = true;    // interleave paths at random; false: global send order
  uint64_t delay_ns = 0;  // default one-way delay of every path
  int max_deliveries_per_progress = 64;
  bool auto_advance_time = true;  // jump virtual time when nothing is due
  uint64_t qp_window_bytes = 0;   // every path's Channel::window_bytes; 0: no bound
};

class SimFabric final : public Fabric {
 public:
  explicit SimFabric(SimFabricOptions options = {});
  ~SimFabric() override;
  SimFabric(const SimFabric&) = delete;
  SimFabric& operator=(const SimFabric&) = delete;

  // Fabric.
  common::Status Attach(SoftDevice* device) override;
  void Detach(SoftDevice* device) override;
  common::Result<std::unique_ptr<Channel>> OpenChannel(SoftDevice* local, uint32_t local_qpn,
                                                       const verbs::QpRtrParams& rtr) override;
  uint64_t NowNs() const override { return now_ns_; }
  void Progress() override;

  // Delivery control. `qp` must be a connected soft QP (else kNotFound).
  common::Status HoldQp(const verbs::Qp& qp, bool hold);
  // Packets the QP has sent that are still on its path (held or not yet due); 0 if not connected.
  size_t PacketsOnPath(const verbs::Qp& qp) const;
  common::Status HoldNic(std::string_view nic, bool hold);
  common::Status DropNext(const verbs::Qp& qp, int count);
  void SetDropRate(double probability);
  common::Status SetQpDelay(const verbs::Qp& qp, uint64_t delay_ns);
  common::Status SetNicDelay(std::string_view nic, uint64_t delay_ns);
  // The NIC sends at most `bytes_per_second` (0: no limit): each packet it sends takes its
  // payload's time on the wire after the previous one, then the path's delay (a shaped link).
  common::Status SetNicRate(std::string_view nic, uint64_t bytes_per_second);
  // Faults.
  common::Status BreakQp(const verbs::Qp& qp);  // both directions of the QP's connection
  common::Status RepairQp(const verbs::Qp& qp);
  common::Status SetNicUp(std::string_view nic, bool up);

  // Runs Progress() until nothing is in flight and no timer is pending, at most `max_rounds`
  // times. Returns true when it became idle.
  bool RunUntilIdle(int max_rounds = 100000);
  void AdvanceTime(uint64_t ns) { now_ns_ += ns; }
  size_t in_flight() const;
  uint64_t delivered() const { return delivered_; }
  uint64_t dropped() const { return dropped_; }

 private:
  class SimChannel;
  struct NicState {
    SoftDevice* device = nullptr;
    bool held = false;
    bool down = false;
    uint64_t delay_ns = 0;
    uint64_t bytes_per_second = 0;
    uint64_t busy_until_ns = 0;  // the wire is busy sending until then
  };
  friend class SimChannel;

  std::unique_ptr<Packet> Acquire();
  void Recycle(std::unique_ptr<Packet> packet);
  void Enqueue(SimChannel* channel, std::unique_ptr<Packet> packet);
  void RemoveChannel(SimChannel* channel);
  SimChannel* FindChannel(const verbs::Qp& qp) const;
  SimChannel* FindPeerChannel(const SimChannel& channel) const;
  NicState* FindNic(std::string_view name);
  NicState* FindNicByGid(const verbs::Gid& gid);
  NicState* FindNicByDevice(const SoftDevice* device);
  bool Ready(const SimChannel& c) const;
  bool Held(const SimChannel& c) const;
  SimChannel* PickReady();
  bool FireDueTimers();
  bool DeliverDue(int* budget);
  bool AdvanceToNextEvent();

  SimFabricOptions options_;
  std::mt19937_64 rng_;
  double drop_rate_ = 0;
  uint64_t now_ns_ = 0;
  uint64_t send_seq_ = 0;
  uint64_t delivered_ = 0;
  uint64_t dropped_ = 0;
  std::vector<NicState> nics_;
  std::vector<SimChannel*> channels_;
  std::vector<SimChannel*> ready_scratch_;
  std::vector<std::unique_ptr<Packet>> pool_;
};

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_SIM_FABRIC_H_
