// Result<T>: a T or a non-OK Status (GCC 12 has no std::expected in C++20 mode).
//
// Thread safety: a value type, like Status. Accessing value() of an error Result is a programming
// error checked in debug builds; callers test ok() first.
#ifndef BRAID_DATAPLANE_COMMON_RESULT_H_
#define BRAID_DATAPLANE_COMMON_RESULT_H_

#include <cassert>
#include <optional>
#include <utility>

#include "dataplane/common/status.h"

namespace braid::common {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result built from an OK Status carries no value");
    if (status_.ok()) status_ = Status::Internal("Result built from an OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;  // OK when value_ is set
};

}  // namespace braid::common

// `BRAID_ASSIGN_OR_RETURN(auto x, expr)`: evaluates a Result; returns its Status on error,
// otherwise binds the value.
#define BRAID_CONCAT_INNER_(a, b) a##b
#define BRAID_CONCAT_(a, b) BRAID_CONCAT_INNER_(a, b)
#define BRAID_ASSIGN_OR_RETURN(decl, expr) \
  BRAID_ASSIGN_OR_RETURN_IMPL_(BRAID_CONCAT_(braid_result_, __LINE__), decl, expr)
#define BRAID_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  decl = std::move(tmp).value()

#endif  // BRAID_DATAPLANE_COMMON_RESULT_H_
