// Which backends a command runs, through the registry only: the CLI knows no backend by name
// except the oracle ("reference"), which check and bench use to verify the others.
#pragma once

#include <string>
#include <vector>

#include "dilated/dilated.hpp"
#include "problem.hpp"

namespace dilated::cli {

inline constexpr const char* kOracle = "reference";

// Empty when `backend` is available here and supports the problem (forward, and backward
// when asked); otherwise why not, in the backend's words.
std::string cannot_run(const Backend& backend, const ProblemSpec& spec, bool backward);

// `dilated run`: the named backend, or for "auto" the first in registry order that runs the
// problem. Throws UsageError naming --backend with every candidate's reason.
const Backend& choose_backend(const ProblemSpec& spec, const std::string& name, bool backward);

// check and bench: "all" is every registered backend except the oracle; otherwise a
// comma-separated list of registry names. Throws UsageError naming --backend.
std::vector<const Backend*> backends_named(const std::string& text);

// "reference, cpu or cuda" as the registry holds them, with auto first when asked.
std::string backend_choices(bool with_auto);

}  // namespace dilated::cli
