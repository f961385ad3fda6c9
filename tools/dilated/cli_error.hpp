// How the CLI fails: bad input (exit 2, DESIGN 4.1) or a failure while working (exit 1).
// Both carry one line for stderr that names the argument, its value and the expectation.
#pragma once

#include <stdexcept>
#include <string>

#include "dilated/status.hpp"

namespace dilated::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;   // a check failed, the device or the system failed
inline constexpr int kExitBadInput = 2;  // unknown flags, malformed files, invalid problems

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RuntimeFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws the error a non-ok status stands for: invalid, unsupported or unavailable problems
// are the caller's input; runtime errors are ours.
inline void throw_if_failed(const Status& s, const std::string& context = "") {
  if (s.ok()) return;
  const std::string message = context.empty() ? s.message() : context + ": " + s.message();
  if (s.code() == StatusCode::runtime_error) throw RuntimeFailure(message);
  throw UsageError(message);
}

}  // namespace dilated::cli
