#include "dataplane/soft/soft_cq.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "dataplane/soft/link.h"

namespace braid::soft {

SoftCq::SoftCq(Fabric* fabric, int capacity, uint32_t max_capacity, int event_fd)
    : fabric_(fabric),
      max_capacity_(max_capacity),
      ring_(std::make_unique_for_overwrite<ibv_wc[]>(static_cast<size_t>(capacity))),
      size_(static_cast<uint64_t>(capacity)),
      event_fd_(event_fd) {}

SoftCq::~SoftCq() {
  if (event_fd_ >= 0) close(event_fd_);
}

common::Result<int> SoftCq::Poll(std::span<ibv_wc> out) {
  if (count_ < out.size()) fabric_->Progress();
  int n = 0;
  while (count_ > 0 && static_cast<size_t>(n) < out.size()) {
    out[n++] = ring_[head_ % size_];
    ++head_;
    --count_;
  }
  if (n == 0 && overflowed_) {
    return common::Status::CqOverflow("completion queue overflowed: completions were lost");
  }
  return n;
}

bool SoftCq::Push(const ibv_wc& wc) {
  if (count_ == size_) {
    overflowed_ = true;
    return false;
  }
  ring_[(head_ + count_) % size_] = wc;
  ++count_;
  if (armed_) {
    armed_ = false;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(event_fd_, &one, sizeof(one));
  }
  return true;
}

bool SoftCq::PushError(uint64_t wr_id, ibv_wc_status status, uint32_t qp_num) {
  ibv_wc wc{};
  wc.wr_id = wr_id;
  wc.status = status;
  wc.opcode = static_cast<ibv_wc_opcode>(kPoisonOpcode);
  wc.byte_len = kPoisonByteLen;
  wc.imm_data = kPoisonImm;
  wc.wc_flags = kPoisonWcFlags;
  wc.qp_num = qp_num;
  return Push(wc);
}

common::Status SoftCq::Resize(int entries) {
  if (entries <= 0 || static_cast<uint32_t>(entries) > max_capacity_) {
    return common::Status::InvalidArgument("CQ size must be in [1, max_cqe]");
  }
  if (static_cast<uint64_t>(entries) < count_) {
    return common::Status::InvalidArgument("the CQ holds more completions than the new size");
  }
  auto ring = std::make_unique_for_overwrite<ibv_wc[]>(static_cast<size_t>(entries));
  for (uint64_t i = 0; i < count_; ++i) ring[i] = ring_[(head_ + i) % size_];
  ring_ = std::move(ring);
  size_ = static_cast<uint64_t>(entries);
  head_ = 0;
  return common::Status::Ok();
}

common::Status SoftCq::RequestNotify() {
  // As on an HCA, entries already queued raise no event: poll once more after arming.
  armed_ = true;
  fabric_->SendHeldFrames();  // no pass may come to send them while the poller sleeps
  return common::Status::Ok();
}

common::Status SoftCq::ConsumeWakeup() {
  uint64_t value = 0;
  if (read(event_fd_, &value, sizeof(value)) < 0 && errno != EAGAIN) {
    return common::Status::FromErrno(errno, "read(cq eventfd)");
  }
  return common::Status::Ok();
}

}  // namespace braid::soft
