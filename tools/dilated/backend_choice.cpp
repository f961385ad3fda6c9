#include "backend_choice.hpp"

#include <cstdio>
#include <sstream>

#include "args.hpp"
#include "cli_error.hpp"

namespace dilated::cli {

std::string cannot_run(const Backend& backend, const ProblemSpec& spec, bool backward) {
  if (std::string reason = backend.unavailable_reason(); !reason.empty()) return reason;
  // The backend sees the problem as it will run it: on its device (the pointers stand in).
  Params p = spec_params(spec);
  p.device = backend.device();
  static float stand_in;
  Tensor t;
  t.data = &stand_in;
  p.q = p.k = p.v = p.out = p.dout = p.dq = p.dk = p.dv = t;
  p.lse = &stand_in;
  if (std::string reason = backend.unsupported_reason(p, Direction::forward); !reason.empty()) {
    return reason;
  }
  return backward ? backend.unsupported_reason(p, Direction::backward) : std::string();
}

std::string backend_choices(bool with_auto) {
  std::vector<std::string> names;
  if (with_auto) names.push_back("auto");
  for (const Backend* b : backends()) names.push_back(b->name());
  return join_choices(names);
}

const Backend& choose_backend(const ProblemSpec& spec, const std::string& name, bool backward) {
  if (name != "auto") {
    const Backend* backend = find_backend(name);
    if (!backend) {
      throw UsageError("--backend = " + name + ": expected " + backend_choices(true));
    }
    if (std::string reason = cannot_run(*backend, spec, backward); !reason.empty()) {
      throw UsageError("--backend = " + name + ": cannot run this problem here: " + reason);
    }
    return *backend;
  }
  std::string reasons;
  for (const Backend* backend : backends()) {
    const std::string reason = cannot_run(*backend, spec, backward);
    if (reason.empty()) {
      // Say why a better backend that runs on this machine passed (block patterns on a GPU
      // machine run on the host, for instance).
      for (const Backend* before : backends()) {
        if (before == backend) break;
        if (before->unavailable_reason().empty()) {
          std::fprintf(
              stderr, "dilated: note: --backend auto chose %s: %s declines this problem (%s)\n",
              backend->name(), before->name(), cannot_run(*before, spec, backward).c_str());
        }
      }
      return *backend;
    }
    reasons += std::string(reasons.empty() ? "" : "; ") + backend->name() + ": " + reason;
  }
  throw UsageError("--backend = auto: no backend runs this problem (" + reasons + ")");
}

std::vector<const Backend*> backends_named(const std::string& text) {
  std::vector<const Backend*> chosen;
  if (text == "all") {
    for (const Backend* b : backends()) {
      if (std::string(b->name()) != kOracle) chosen.push_back(b);
    }
    return chosen;
  }
  std::stringstream list(text);
  for (std::string name; std::getline(list, name, ',');) {
    const Backend* backend = find_backend(name);
    if (!backend) {
      throw UsageError("--backend = " + text + ": '" + name + "' is not all or one of " +
                       backend_choices(false));
    }
    chosen.push_back(backend);
  }
  if (chosen.empty() || text.back() == ',') {
    throw UsageError("--backend = " + text + ": expected all or a list of " +
                     backend_choices(false));
  }
  return chosen;
}

}  // namespace dilated::cli
