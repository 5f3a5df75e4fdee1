#include "dataplane/soft_verbs/shim_state.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace braid::soft {

int ErrnoOf(const common::Status& s) {
  switch (s.code()) {
    case common::StatusCode::kOk:
      return 0;
    case common::StatusCode::kNoResource:
      return ENOMEM;
    case common::StatusCode::kInvalidArgument:
    case common::StatusCode::kOutOfRange:
    case common::StatusCode::kFailedPrecondition:
      return EINVAL;
    case common::StatusCode::kNotFound:
      return ENODEV;
    case common::StatusCode::kAlreadyExists:
      return EEXIST;
    case common::StatusCode::kNotSupported:
      return EOPNOTSUPP;
    case common::StatusCode::kPermissionDenied:
      return EACCES;
    default:
      return EIO;
  }
}

ShimState& ShimState::Get() {
  static ShimState* state = new ShimState();  // never destroyed: programs call verbs at exit
  return *state;
}

ShimState::ShimState() {
  if (const char* port = std::getenv("BRAID_SOFT_PORT")) {
    port_ = static_cast<uint16_t>(std::strtoul(port, nullptr, 10));
  }
  const char* env = std::getenv("BRAID_SOFT_NICS");
  if (env == nullptr) return;
  std::stringstream list(env);
  std::string item;
  while (std::getline(list, item, ',')) {
    // An entry that cannot serve is left out of the device list, saying why (as libibverbs
    // warns about a driver it cannot load).
    common::Result<std::vector<SoftNicConfig>> one = [&]() {
      common::Result<SoftNicConfig> parsed = ParseSoftNic(item);
      if (!parsed.ok()) return common::Result<std::vector<SoftNicConfig>>(parsed.status());
      return ResolveSoftNics({std::move(parsed).value()});
    }();
    if (!one.ok()) {
      std::fprintf(stderr, "libbraid_verbs: BRAID_SOFT_NICS: %s; left out\n",
                   std::string(one.status().message()).c_str());
      continue;
    }
    SoftNicConfig nic = std::move(one->front());
    auto d = std::make_unique<ShimDevice>();
    std::memset(&d->dev, 0, sizeof(d->dev));
    d->dev.node_type = IBV_NODE_CA;
    d->dev.transport_type = IBV_TRANSPORT_IB;
    std::snprintf(d->dev.name, sizeof(d->dev.name), "%s", nic.name.c_str());
    std::snprintf(d->dev.dev_name, sizeof(d->dev.dev_name), "uverbs%zu", devices_.size());
    std::snprintf(d->dev.dev_path, sizeof(d->dev.dev_path), "/sys/class/infiniband_verbs/%s",
                  d->dev.dev_name);
    std::snprintf(d->dev.ibdev_path, sizeof(d->dev.ibdev_path), "/sys/class/infiniband/%s",
                  d->dev.name);
    d->name = nic.name;
    d->ipv4 = nic.ipv4;
    device_list_.push_back(d.get());
    devices_.push_back(std::move(d));
    nics_.push_back(std::move(nic));
  }
}

common::Result<verbs::Device*> ShimState::Open(const std::string& name) {
  auto it = open_.find(name);
  if (it != open_.end()) {
    ++it->second.contexts;
    return it->second.device.get();
  }
  if (!fabric_) {
    TcpFabricOptions options;
    options.port = port_;
    fabric_ = std::make_unique<TcpFabric>(options);
    provider_ = std::make_unique<SoftProvider>(SoftProviderOptions{nics_, fabric_.get()});
  }
  BRAID_ASSIGN_OR_RETURN(std::unique_ptr<verbs::Device> device, provider_->OpenDevice(name));
  verbs::Device* out = device.get();
  open_[name] = Open_{std::move(device), 1};
  if (!progress_.joinable()) {
    stop_ = false;
    progress_ = std::thread([this] { Progress(); });
  }
  return out;
}

void ShimState::Close(const std::string& name, std::unique_lock<std::mutex>& lock) {
  auto it = open_.find(name);
  if (it == open_.end() || --it->second.contexts > 0) return;
  open_.erase(it);
  if (!open_.empty()) return;
  stop_ = true;
  std::thread thread = std::move(progress_);
  lock.unlock();
  if (thread.joinable()) thread.join();
  lock.lock();
  if (open_.empty()) {
    provider_.reset();
    fabric_.reset();
  }
}

namespace {
uint64_t MonotonicNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
constexpr uint64_t kProgramPollingNs = 50000;
}  // namespace

void ShimState::NotePoll() { last_poll_ns_ = MonotonicNs(); }

void ShimState::Arm(ShimCq* cq) {
  if (!cq->armed) armed_.push_back(cq);
  cq->armed = true;
}

void ShimState::Disarm(ShimCq* cq) {
  cq->armed = false;
  std::erase(armed_, cq);
}

// Moves the fabric while the program does not call in, and delivers completion events: a CQ
// armed by ibv_req_notify_cq whose wakeup fd fired becomes one event on its channel.
void ShimState::Progress() {
  for (;;) {
    int wait_fd = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      if (armed_.empty() && MonotonicNs() - last_poll_ns_ < kProgramPollingNs) {
        wait_fd = -1;  // the program's own polls move the fabric: look again in a moment
      } else {
        wait_fd = fabric_->wait_fd();
      }
    }
    if (wait_fd < 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      fabric_->Progress();
      for (size_t i = 0; i < armed_.size();) {
        ShimCq* cq = armed_[i];
        pollfd p{cq->impl->wakeup_fd(), POLLIN, 0};
        if (cq->channel == nullptr || poll(&p, 1, 0) != 1) {
          ++i;
          continue;
        }
        (void)cq->impl->ConsumeWakeup();
        cq->armed = false;
        armed_.erase(armed_.begin() + static_cast<std::ptrdiff_t>(i));
        cq->channel->events.push_back(cq);
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t w = write(cq->channel->channel.fd, &one, sizeof(one));
      }
      wait_fd = fabric_->wait_fd();
    }
    // Sockets wake us at once; the timeout bounds how late a retransmission timer fires.
    pollfd p{wait_fd, POLLIN, 0};
    poll(&p, 1, 2);
  }
}

}  // namespace braid::soft
