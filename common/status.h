// Status and Result<T>: how errors cross module boundaries in Switchboard.
//
// Owns: the error value type every module returns instead of throwing. A
// Status is ok or carries a code and a one-line message meant for an operator
// ("config.yaml:12:5: key 'strategy': unknown strategy 'one_for_none'").
// Does not: log, format for a particular program, or carry stack traces.
// Exceptions from third-party libraries are caught in the adapter that calls
// the library and turned into a Status there.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace sb {

class [[nodiscard]] Status {
 public:
  enum class Code { kOk, kInvalidConfig, kIoError, kNotFound, kRefused, kInternal };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidConfig(std::string msg) { return {Code::kInvalidConfig, std::move(msg)}; }
  static Status IoError(std::string msg) { return {Code::kIoError, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status Refused(std::string msg) { return {Code::kRefused, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Result<T>: a T or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design

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

 private:
  std::variant<T, Status> v_;
};

}  // namespace sb
