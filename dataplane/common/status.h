// Status: the one error value of Braid.
//
// What: a code plus an optional message. OK is free (no allocation); so is kNoResource, the
// back-pressure code returned on the hot path (queue full, no credit): it never carries a message.
// Every other error carries a message, allocated once when the error is made.
// Codes are grouped by how much the failure takes down (cf. UCX's status ranges): the operation,
// the QP, the device, or the agent.
// Thread safety: a Status is a value; const methods are safe from any thread.
#ifndef BRAID_DATAPLANE_COMMON_STATUS_H_
#define BRAID_DATAPLANE_COMMON_STATUS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace braid::common {

enum class StatusCode : uint8_t {
  kOk = 0,
  // Back-pressure: retry later. Never allocates.
  kNoResource,
  // Operation-level: the request is wrong; nothing changed.
  kInvalidArgument,
  kOutOfRange,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kNotSupported,
  kPermissionDenied,
  kDeadlineExceeded,
  kCancelled,
  // QP-level: this QP can carry no more work.
  kQpError,
  // Device-level: the device (or the CQ shared by its QPs) failed.
  kDeviceError,
  kCqOverflow,
  // Agent-level.
  kIoError,
  kInternal,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status Ok() { return Status(); }
  static Status NoResource() { return Status(StatusCode::kNoResource); }
  // Back-pressure that says which resource is short (control paths only: it allocates).
  static Status NoResource(std::string_view msg) { return {StatusCode::kNoResource, msg}; }
  static Status InvalidArgument(std::string_view msg) {
    return {StatusCode::kInvalidArgument, msg};
  }
  static Status OutOfRange(std::string_view msg) { return {StatusCode::kOutOfRange, msg}; }
  static Status NotFound(std::string_view msg) { return {StatusCode::kNotFound, msg}; }
  static Status AlreadyExists(std::string_view msg) { return {StatusCode::kAlreadyExists, msg}; }
  static Status FailedPrecondition(std::string_view msg) {
    return {StatusCode::kFailedPrecondition, msg};
  }
  static Status NotSupported(std::string_view msg) { return {StatusCode::kNotSupported, msg}; }
  static Status PermissionDenied(std::string_view msg) {
    return {StatusCode::kPermissionDenied, msg};
  }
  static Status DeadlineExceeded(std::string_view msg) {
    return {StatusCode::kDeadlineExceeded, msg};
  }
  static Status Cancelled(std::string_view msg) { return {StatusCode::kCancelled, msg}; }
  static Status QpError(std::string_view msg) { return {StatusCode::kQpError, msg}; }
  static Status DeviceError(std::string_view msg) { return {StatusCode::kDeviceError, msg}; }
  static Status CqOverflow(std::string_view msg) { return {StatusCode::kCqOverflow, msg}; }
  static Status IoError(std::string_view msg) { return {StatusCode::kIoError, msg}; }
  static Status Internal(std::string_view msg) { return {StatusCode::kInternal, msg}; }
  // A code carried across a boundary (a reply on the session socket) with its message.
  static Status FromCode(StatusCode code, std::string_view msg) {
    return code == StatusCode::kOk ? Status() : Status(code, msg);
  }
  // An errno value from a system or rdma-core call, with what was being done.
  static Status FromErrno(int err, std::string_view what);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  // Empty for OK and kNoResource.
  std::string_view message() const { return msg_ ? std::string_view(*msg_) : std::string_view(); }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;
  // Returns a copy whose message is "<context>: <message>" (same code).
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message() == b.message();
  }

 private:
  explicit Status(StatusCode code) : code_(code) {}
  Status(StatusCode code, std::string_view msg)
      : code_(code), msg_(std::make_unique<std::string>(msg)) {}

  StatusCode code_ = StatusCode::kOk;
  std::unique_ptr<std::string> msg_;
};

}  // namespace braid::common

// Evaluates `expr` (a Status); returns it from the enclosing function when it is not OK.
#define BRAID_RETURN_IF_ERROR(expr)                 \
  do {                                              \
    ::braid::common::Status braid_status_ = (expr); \
    if (!braid_status_.ok()) return braid_status_;  \
  } while (0)

#endif  // BRAID_DATAPLANE_COMMON_STATUS_H_
