// A veth pair made for a test (root only), one end holding an address: taking that end down is a
// NIC's link going down (a soft NIC's port follows the interface that holds its address).
// Removed on destruction.
#ifndef BRAID_TESTS_TESTUTIL_VETH_LINK_H_
#define BRAID_TESTS_TESTUTIL_VETH_LINK_H_

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <utility>

namespace braid::testing {

class VethLink {
 public:
  // `name` (at most 14 characters) holds `address`/32; its peer is `name` + "p". Both ends up
  // and `name` operationally up (a veth is, a moment after both ends are; a soft NIC's port reads
  // down until then: IFF_RUNNING), or not ok() after 5 s.
  VethLink(std::string name, std::string address)
      : name_(std::move(name)), address_(std::move(address)) {
    ok_ = getuid() == 0 && Ip("link add " + name_ + " type veth peer name " + name_ + "p") &&
          Ip("addr add " + address_ + "/32 dev " + name_) && Ip("link set " + name_ + "p up") &&
          Ip("link set " + name_ + " up") && OperUpWithin(std::chrono::seconds(5));
  }
  ~VethLink() { Ip("link del " + name_); }
  VethLink(const VethLink&) = delete;
  VethLink& operator=(const VethLink&) = delete;
  // False when it could not be made (not root, no veth support).
  bool ok() const { return ok_; }
  const std::string& address() const { return address_; }
  bool Set(bool up) { return Ip("link set " + name_ + (up ? " up" : " down")); }

 private:
  bool OperUpWithin(std::chrono::seconds limit) const {
    const auto until = std::chrono::steady_clock::now() + limit;
    do {
      std::ifstream operstate("/sys/class/net/" + name_ + "/operstate");
      std::string state;
      if (operstate >> state && state == "up") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < until);
    return false;
  }
  static bool Ip(const std::string& args) {
    return std::system(("ip " + args + " 2>/dev/null").c_str()) == 0;
  }
  std::string name_, address_;
  bool ok_ = false;
};

}  // namespace braid::testing

#endif  // BRAID_TESTS_TESTUTIL_VETH_LINK_H_
