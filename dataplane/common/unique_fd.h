// UniqueFd: one owned file descriptor, closed when the object goes (as std::unique_ptr for fds).
// Threading: a value; any thread.
#ifndef BRAID_DATAPLANE_COMMON_UNIQUE_FD_H_
#define BRAID_DATAPLANE_COMMON_UNIQUE_FD_H_

#include <unistd.h>

namespace braid::common {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives the descriptor up without closing it.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_UNIQUE_FD_H_
