// A provider under test: devices to open and, where the link allows it, control over delivery.
// The conformance suite runs the same tests on every harness (sim link, TCP link, rdma-core).
#ifndef BRAID_TESTS_CONFORMANCE_HARNESS_H_
#define BRAID_TESTS_CONFORMANCE_HARNESS_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/verbs/provider.h"

namespace braid::testing {

// Delivery control over the link between QPs; a path is named by the QP that sends on it.
class LinkControl {
 public:
  virtual ~LinkControl() = default;
  virtual common::Status Hold(const verbs::Qp& qp, bool hold) = 0;
  virtual common::Status DropNext(const verbs::Qp& qp, int count) = 0;
  virtual common::Status Break(const verbs::Qp& qp) = 0;
  virtual common::Status Repair(const verbs::Qp& qp) = 0;
  // Nanoseconds on the link's clock (virtual for the sim link).
  virtual uint64_t NowNs() const = 0;
  // True when the clock is virtual (exact timings); false on wall-clock links (scheduling slack).
  virtual bool virtual_time() const { return false; }
};

// Link control over a TcpFabric's connections (QPs of this process).
class TcpLinkControl : public LinkControl {
 public:
  explicit TcpLinkControl(soft::TcpFabric* fabric);
  common::Status Hold(const verbs::Qp& qp, bool hold) override;
  common::Status DropNext(const verbs::Qp& qp, int count) override;
  common::Status Break(const verbs::Qp& qp) override;
  common::Status Repair(const verbs::Qp& qp) override;
  uint64_t NowNs() const override;

 private:
  soft::TcpFabric* fabric_;
};

class Harness {
 public:
  virtual ~Harness() = default;
  // Empty when the harness can run here; otherwise why it cannot (the test is skipped).
  virtual std::string SkipReason() = 0;
  // Opens the devices; at least 2, ideally 4 (two per side).
  virtual common::Status Open() = 0;
  virtual int num_devices() const = 0;
  virtual verbs::Device& device(int index) = 0;
  // One bounded step of link progress (a no-op where hardware makes progress by itself).
  virtual void Progress() = 0;
  // nullptr when the link cannot be controlled (real hardware).
  virtual LinkControl* link() = 0;
  // True when error completions carry the soft provider's poison values.
  virtual bool poisons_undefined_fields() const = 0;
  // Memory for device `device`'s test buffer, when it must live somewhere particular (shared with
  // another process); nullptr: the fixture allocates it.
  virtual uint8_t* EndpointBuffer(int device, size_t bytes) {
    (void)device;
    (void)bytes;
    return nullptr;
  }
};

struct HarnessFactory {
  std::string name;
  std::function<std::unique_ptr<Harness>()> make;
};

// gtest prints a parameter by its name.
inline void PrintTo(const HarnessFactory& factory, std::ostream* os) { *os << factory.name; }

// The in-memory link with four soft NICs on 127.0.0.1-4.
HarnessFactory SimHarness(uint64_t seed, bool reorder);
// The soft provider over real TCP sockets between soft NICs on 127.0.0.1-4 of this process.
HarnessFactory TcpLoopbackHarness(uint16_t port);
// The soft provider over TCP between two processes: devices 1 and 3 live in a forked child.
HarnessFactory TcpTwoProcessHarness(uint16_t port);
// rdma-core; skipped where it lists no active device.
HarnessFactory IbverbsHarness();
// Every harness the conformance suite runs on.
std::vector<HarnessFactory> AllHarnesses();

}  // namespace braid::testing

#endif  // BRAID_TESTS_CONFORMANCE_HARNESS_H_
