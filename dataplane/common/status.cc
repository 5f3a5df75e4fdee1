#include "dataplane/common/status.h"

#include <cstring>

namespace braid::common {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kNoResource: return "NoResource";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kOutOfRange: return "OutOfRange";
    case StatusCode::kNotFound: return "NotFound";
    case StatusCode::kAlreadyExists: return "AlreadyExists";
    case StatusCode::kFailedPrecondition: return "FailedPrecondition";
    case StatusCode::kNotSupported: return "NotSupported";
    case StatusCode::kPermissionDenied: return "PermissionDenied";
    case StatusCode::kDeadlineExceeded: return "DeadlineExceeded";
    case StatusCode::kCancelled: return "Cancelled";
    case StatusCode::kQpError: return "QpError";
    case StatusCode::kDeviceError: return "DeviceError";
    case StatusCode::kCqOverflow: return "CqOverflow";
    case StatusCode::kIoError: return "IoError";
    case StatusCode::kInternal: return "Internal";
  }
  return "Unknown";
}

Status::Status(const Status& other)
    : code_(other.code_), msg_(other.msg_ ? std::make_unique<std::string>(*other.msg_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) {
    code_ = other.code_;
    msg_ = other.msg_ ? std::make_unique<std::string>(*other.msg_) : nullptr;
  }
  return *this;
}

Status Status::FromErrno(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  msg += " (errno=" + std::to_string(err) + ")";
  StatusCode code = StatusCode::kIoError;
  switch (err) {
    case EINVAL: code = StatusCode::kInvalidArgument; break;
    case ENOMEM:
    case EAGAIN: code = StatusCode::kNoResource; break;
    case ENOENT:
    case ENODEV: code = StatusCode::kNotFound; break;
    case EPERM:
    case EACCES: code = StatusCode::kPermissionDenied; break;
    case EOPNOTSUPP: code = StatusCode::kNotSupported; break;
    default: break;
  }
  // A message explains an errno; keep it even for kNoResource (this is the slow path).
  Status s(code, msg);
  return s;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code_));
  if (msg_) {
    out += ": ";
    out += *msg_;
  }
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  if (msg_) {
    msg += ": ";
    msg += *msg_;
  }
  return Status(code_, msg);
}

}  // namespace braid::common
