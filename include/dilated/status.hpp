// Errors come back as values: a code and a message naming the argument, its value and what
// was expected. No exception crosses the public API.
#pragma once

#include <string>
#include <utility>

namespace dilated {

enum class StatusCode : int {
  ok = 0,
  invalid_argument = 1,  // the problem is malformed (DESIGN 7)
  unsupported = 2,       // valid, but the chosen backend cannot run it
  unavailable = 3,       // the backend cannot run on this machine at all
  runtime_error = 4,     // the device or the system failed while running
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status Invalid(std::string m) { return {StatusCode::invalid_argument, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::unsupported, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::unavailable, std::move(m)}; }
  static Status Runtime(std::string m) { return {StatusCode::runtime_error, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

}  // namespace dilated
