// Status and Result<T>: the way bad input is reported at a part's boundary.
// Bugs are not Statuses: they are CHECK failures (check.h).
#pragma once

#include <fmt/format.h>

#include <string>
#include <utility>
#include <variant>

namespace slimkv {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // a bad request, flag or spec
  kDataLoss,          // a malformed or truncated file
  kNotFound,          // a missing file, key or tensor
  kUnimplemented,     // a valid but unsupported feature (unknown architecture, tensor type)
  kResourceExhausted, // the KV pool or a queue is full
  kOutOfRange,        // a prompt longer than the context
  kInternal,
  kIo,                // an operating system call failed
  kCancelled,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "DataLoss: <message>"
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename... Args>
Status MakeStatus(StatusCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}
#define SLIMKV_ERROR_FN(Name, Code)                                        \
  template <typename... Args>                                              \
  Status Name(fmt::format_string<Args...> f, Args&&... args) {             \
    return Status(StatusCode::Code, fmt::format(f, std::forward<Args>(args)...)); \
  }
SLIMKV_ERROR_FN(InvalidArgument, kInvalidArgument)
SLIMKV_ERROR_FN(DataLoss, kDataLoss)
SLIMKV_ERROR_FN(NotFound, kNotFound)
SLIMKV_ERROR_FN(Unimplemented, kUnimplemented)
SLIMKV_ERROR_FN(ResourceExhausted, kResourceExhausted)
SLIMKV_ERROR_FN(OutOfRange, kOutOfRange)
SLIMKV_ERROR_FN(Internal, kInternal)
SLIMKV_ERROR_FN(IoError, kIo)
#undef SLIMKV_ERROR_FN

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace slimkv

#define SLIMKV_CONCAT_INNER(a, b) a##b
#define SLIMKV_CONCAT(a, b) SLIMKV_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not ok.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::slimkv::Status _st = (expr);                 \
    if (!_st.ok()) return _st;                     \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo())`: unwraps a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(SLIMKV_CONCAT(_res_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
